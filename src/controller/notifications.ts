import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { formatDuration, parseDuration } from '../duration.js';
import type { Deployment, DeploymentStatus, Phase } from '../types.js';
import { rowFacts } from '../store/store.js';
import { InputError } from '../yaml-source.js';
import type { Runnable } from './controller.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/**
 * Signed webhooks on deployment transitions (DESIGN.md 3.8).
 *
 * - **event**: one of {@link NOTIFICATION_EVENTS}, sent as `Deployer-Event`.
 * - **delivery**: one event for one webhook; it gets up to `tries` attempts.
 * - **attempt**: one POST of a delivery, signed afresh (`Deployer-Signature`).
 */

/** The events a webhook may subscribe to. */
export const NOTIFICATION_EVENTS = [
  'active',
  'failed',
  'rolled_back',
  'zombie',
  'cancelled',
  'orphans_removed',
  'guard_tripped',
] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];

/** Body formats: the JSON document of the contract, or a Slack incoming-webhook `{text}`. */
export const WEBHOOK_FORMATS = ['json', 'slack'] as const;
export type WebhookFormat = (typeof WEBHOOK_FORMATS)[number];

/** Header names of a delivery. */
export const HEADERS = {
  event: 'Deployer-Event',
  signature: 'Deployer-Signature',
  /** The same id on every attempt of one delivery, so a receiver can drop duplicates. */
  delivery: 'Deployer-Delivery',
} as const;

/** How old (or how far in the future) a signature a receiver accepts may be, in seconds. */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

const MAX_TIMEOUT_MS = parseDuration('10m');

const httpUrl = z.string({ error: 'expected an http or https URL' }).refine((text) => {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}, 'expected an http or https URL, e.g. https://hooks.example.com/deployer');

const timeout = z
  .string({ error: 'expected a duration such as 5s' })
  .transform((text, ctx) => {
    try {
      return parseDuration(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  })
  .refine((ms) => ms > 0, 'expected a duration > 0')
  .refine((ms) => ms <= MAX_TIMEOUT_MS, 'expected a duration of at most 10m');

const webhookSchema = z
  .object({
    /** Where to POST; `user:password@` in it becomes a Basic `Authorization` header. */
    url: httpUrl,
    /** HMAC-SHA256 key of `Deployer-Signature`. Exactly one of `secret` and `secretFile`. */
    secret: z.string({ error: 'expected a string' }).min(1, 'expected a non-empty secret').optional(),
    /** A file holding the secret (surrounding whitespace ignored), read when the notifier is built. */
    secretFile: z.string({ error: 'expected a file path' }).min(1, 'expected a file path').optional(),
    /** The events sent to this webhook; all of them when absent. */
    events: z
      .array(z.enum(NOTIFICATION_EVENTS, { error: `expected one of ${NOTIFICATION_EVENTS.join(', ')}` }), {
        error: 'expected a list of events',
      })
      .min(1, 'expected at least one event (leave the key out for all)')
      .default(() => [...NOTIFICATION_EVENTS]),
    format: z.enum(WEBHOOK_FORMATS, { error: 'expected json or slack' }).default('json'),
    /** Timeout of one attempt (connect, send and response). */
    timeout: timeout.default(parseDuration('5s')),
  })
  .strict()
  .superRefine((hook, ctx) => {
    if (hook.secret !== undefined && hook.secretFile !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['secretFile'], message: 'expected only one of secret and secretFile' });
    } else if (hook.secret === undefined && hook.secretFile === undefined) {
      ctx.addIssue({ code: 'custom', path: ['secret'], message: 'expected secret or secretFile (the webhook signing key)' });
    }
  });

/**
 * The config file's `notifications` value (DESIGN.md 3.8; file only, no
 * environment form). Unknown keys are errors; `timeout` is held in milliseconds.
 */
export const notificationsSchema = z
  .object({
    webhooks: z.array(webhookSchema, { error: 'expected a list of webhooks' }).default([]),
  })
  .strict();

export type NotificationsConfig = z.output<typeof notificationsSchema>;
export type WebhookConfig = NotificationsConfig['webhooks'][number];

/** The deployment facts a notification carries (the `deployment` of the JSON body). */
export interface NotificationDeployment {
  id: string;
  project: string;
  service: string;
  revision: number;
  status: DeploymentStatus;
  phase: Phase | null;
  status_reason: string | null;
}

/** What the loop calls to announce an event; never blocks, never throws. */
export type Notify = (event: NotificationEvent, deployment: NotificationDeployment | null, message: string) => void;

/** The facts of a deployment row, in the shape of the body. */
export function deploymentFacts(
  d: Pick<Deployment, 'id' | 'project' | 'service' | 'revision' | 'status' | 'phase' | 'statusReason'>,
): NotificationDeployment {
  return rowFacts(d);
}

/** The hex HMAC-SHA256 of `"<t>.<body>"`. */
function hmacHex(secret: string, t: number, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');
}

/** The `Deployer-Signature` value for `body` signed at unix time `t` (seconds). */
export function signPayload(body: string | Uint8Array, secret: string, t: number): string {
  return `t=${t},v1=${hmacHex(secret, t, body)}`;
}

/**
 * What a receiver does with `Deployer-Signature`: true when one of its `v1`
 * values is the HMAC of `"<t>.<raw body>"` with `secret` and `t` is within
 * `toleranceSeconds` of `nowSeconds` (older ones are replays; so are ones
 * that far in the future). Compares in constant time. `body` must be the raw
 * bytes received, not a re-serialised parse.
 */
export function verifySignature(
  header: string,
  body: string | Uint8Array,
  secret: string,
  nowSeconds: number,
  toleranceSeconds = SIGNATURE_TOLERANCE_SECONDS,
): boolean {
  let t: number | undefined;
  const candidates: Buffer[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 't') {
      // Two timestamps would make it ambiguous which one was signed.
      if (t !== undefined || !/^\d{1,15}$/.test(value)) return false;
      t = Number(value);
    } else if (key === 'v1' && /^[0-9a-fA-F]{64}$/.test(value)) {
      candidates.push(Buffer.from(value, 'hex'));
    }
  }
  if (t === undefined || candidates.length === 0) return false;
  if (!(Math.abs(nowSeconds - t) <= toleranceSeconds)) return false;
  const expected = Buffer.from(hmacHex(secret, t, body), 'hex');
  let ok = false;
  // Check every candidate (no early exit), each in constant time.
  for (const candidate of candidates) ok = timingSafeEqual(candidate, expected) || ok;
  return ok;
}

/** Slack's mrkdwn needs only these three escaped. */
function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/** The raw body of a delivery; the same bytes are sent (and signed) on every attempt. */
function renderBody(
  format: WebhookFormat,
  event: NotificationEvent,
  at: Date,
  deployment: NotificationDeployment | null,
  message: string,
): string {
  if (format === 'json') return JSON.stringify({ event, at: at.toISOString(), deployment, message });
  const parts = [`[deployer] ${event}`];
  if (deployment) {
    parts.push(
      `${deployment.project}/${deployment.service} revision ${deployment.revision} (${deployment.id})`,
      `status ${deployment.status}`,
    );
    if (deployment.phase) parts.push(`phase ${deployment.phase}`);
    if (deployment.status_reason) parts.push(`reason: ${deployment.status_reason}`);
  }
  if (message) parts.push(message);
  parts.push(`at ${at.toISOString()}`);
  return JSON.stringify({ text: slackEscape(oneLine(parts.join(' · '))) });
}

/** Results of `deployer_notifications_total`. */
export const NOTIFICATION_RESULTS = ['delivered', 'retried', 'dropped'] as const;

/** Retry policy of a delivery. */
export interface RetryOptions {
  /** Attempts per delivery, the first included (default 6). */
  tries?: number;
  /** Wait after the first failed attempt; doubled after each further one (default 2000). */
  baseMs?: number;
  /** Cap of the doubled wait, before jitter (default 30000). */
  maxMs?: number;
}

/** Dependencies and limits of a {@link Notifier}. */
export interface NotifierOptions {
  logger: Logger;
  metrics: Metrics;
  /** Deliveries waiting at most (default 1000); when full the oldest is dropped. */
  maxQueue?: number;
  retry?: RetryOptions;
  /** Attempts in flight at once per webhook (default 2): a hung receiver holds only its own. */
  concurrency?: number;
  /** How long `stop()` waits for attempts in flight before aborting them (default 3000 ms). */
  stopTimeoutMs?: number;
  fetchImpl?: typeof fetch;
  /** Source of the backoff jitter, in [0, 1) (default `Math.random`). */
  random?: () => number;
}

/** The default retry policy: 6 tries, waits of 2, 4, 8, 16 and 30 s (each plus up to 25 %), about a minute. */
export const DEFAULT_RETRY = { tries: 6, baseMs: 2_000, maxMs: 30_000 } as const satisfies Required<RetryOptions>;
/** Jitter adds up to this fraction to each wait; only upwards, so the schedule never gets shorter than documented. */
const JITTER = 0.25;
/** At most one "queue full" warning per this many ms; the counter has the exact numbers. */
const EVICTION_LOG_INTERVAL_MS = 10_000;

/** A configured webhook, ready to send to. */
interface Target {
  /** The URL fetched: without credentials (fetch refuses them). */
  url: string;
  /** The URL for logs: no credentials, no query. */
  logUrl: string;
  authorization: string | undefined;
  secret: string;
  events: ReadonlySet<NotificationEvent>;
  format: WebhookFormat;
  timeoutMs: number;
  inFlight: number;
}

interface Delivery {
  /** Enqueue order: the smallest is the oldest. */
  seq: number;
  id: string;
  target: Target;
  event: NotificationEvent;
  body: string;
  attempts: number;
  /** When the next attempt is due (ms since epoch). */
  dueAt: number;
  lastError: string | undefined;
}

type Outcome = { ok: true; status: number } | { ok: false; error: string };

function positiveInt(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`${name}: expected a whole number >= ${min}, got ${value}`);
  return value;
}

/**
 * A webhook's URL as logs show it: never credentials or the query, and for
 * Slack only the first path segment, since the rest of an incoming-webhook
 * path (`/services/T…/B…/secret`) is itself the secret.
 */
function logUrlOf(url: URL, format: WebhookFormat): string {
  if (format !== 'slack') return `${url.origin}${url.pathname}`;
  const [first, ...rest] = url.pathname.split('/').filter(Boolean);
  return `${url.origin}/${first ?? ''}${rest.length ? '/***' : ''}`;
}

function buildTarget(hook: WebhookConfig, index: number): Target {
  let secret = hook.secret;
  if (secret === undefined && hook.secretFile !== undefined) {
    const where = `notifications.webhooks[${index}].secretFile ${hook.secretFile}`;
    try {
      secret = readFileSync(hook.secretFile, 'utf8').trim();
    } catch (err) {
      throw new InputError(`${where}: cannot read the secret: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!secret) throw new InputError(`${where}: the secret file is empty`);
  }
  if (!secret) throw new InputError(`notifications.webhooks[${index}]: expected secret or secretFile`);
  const url = new URL(hook.url);
  let authorization: string | undefined;
  if (url.username || url.password) {
    const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
    authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return {
    url: url.href,
    logUrl: logUrlOf(url, hook.format),
    authorization,
    secret,
    events: new Set(hook.events),
    format: hook.format,
    timeoutMs: hook.timeout,
    inFlight: 0,
  };
}

/** One short phrase for why an attempt failed. */
function describeFailure(err: unknown, signal: AbortSignal, timeoutMs: number): string {
  if (signal.aborted) {
    return signal.reason === TIMED_OUT ? `timed out after ${formatDuration(timeoutMs)}` : 'aborted: notifier stopping';
  }
  if (err instanceof Error) {
    // undici reports "fetch failed" with the socket error as its cause.
    const cause = (err as Error & { cause?: unknown }).cause;
    if (cause instanceof Error) {
      const code = (cause as NodeJS.ErrnoException).code;
      return cause.message || code || err.message;
    }
    return err.message;
  }
  return String(err);
}

const TIMED_OUT = Symbol('timed out');
const STOPPING = Symbol('stopping');

/**
 * Sends notifications to the configured webhooks (DESIGN.md 3.8) without ever
 * holding up the caller. {@link notify} only enqueues: one delivery per
 * subscribed webhook into a bounded in-memory queue (when full, the oldest
 * waiting delivery is dropped). A worker POSTs them, at most `concurrency` at
 * once per webhook, so a slow or dead receiver delays only its own deliveries.
 * A failed attempt (non-2xx, including redirects; timeout; network error) is
 * retried after a jittered exponential wait that holds no slot; after `tries`
 * attempts the delivery is dropped, logged (warn) and counted.
 *
 * Deliveries are not ordered across retries: receivers should order by `at`
 * and may drop duplicates by `Deployer-Delivery`.
 *
 * `stop()` abandons the waiting and backing-off deliveries (counted as
 * `dropped`, one warning with their number), waits up to `stopTimeoutMs` for
 * attempts in flight, then aborts those (a failure then is dropped, not
 * retried). Start it before, and stop it after, the components that notify.
 * Calls to `notify` before `start()` are queued; after `stop()` they are
 * counted as dropped.
 */
export class Notifier implements Runnable {
  private readonly targets: Target[];
  private readonly logger: Logger;
  private readonly counters: { total: Metrics['notificationsTotal']; queueDepth: Metrics['notificationsQueueDepth'] };
  private readonly maxQueue: number;
  private readonly tries: number;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly concurrency: number;
  private readonly stopTimeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly random: () => number;

  /** Waiting deliveries, oldest (smallest `seq`) first. */
  private readonly queue: Delivery[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private readonly controllers = new Set<AbortController>();
  private state: 'idle' | 'running' | 'stopped' = 'idle';
  private stopping: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerDueAt = Infinity;
  private seq = 0;
  private reportedDepth = 0;
  private evictedSinceLog = 0;
  private lastEvictionLog = -Infinity;

  /**
   * @param webhooks the config's `notifications.webhooks` (none: every call is a no-op).
   * @throws InputError naming the file when a `secretFile` cannot be read or is empty.
   */
  constructor(webhooks: readonly WebhookConfig[] | undefined, options: NotifierOptions) {
    this.targets = (webhooks ?? []).map(buildTarget);
    this.logger = options.logger.child({ component: 'notifications' });
    this.counters = { total: options.metrics.notificationsTotal, queueDepth: options.metrics.notificationsQueueDepth };
    this.maxQueue = positiveInt('maxQueue', options.maxQueue ?? 1_000, 1);
    this.tries = positiveInt('retry.tries', options.retry?.tries ?? DEFAULT_RETRY.tries, 1);
    this.baseMs = positiveInt('retry.baseMs', options.retry?.baseMs ?? DEFAULT_RETRY.baseMs, 1);
    this.maxMs = positiveInt('retry.maxMs', options.retry?.maxMs ?? DEFAULT_RETRY.maxMs, this.baseMs);
    this.concurrency = positiveInt('concurrency', options.concurrency ?? 2, 1);
    this.stopTimeoutMs = positiveInt('stopTimeoutMs', options.stopTimeoutMs ?? 3_000, 0);
    this.fetchImpl = options.fetchImpl ?? fetch;
    this.random = options.random ?? Math.random;
  }

  /**
   * Enqueues `event` for every webhook subscribed to it and returns at once.
   * Never throws and never waits: a failure here is logged and counted.
   */
  notify(event: NotificationEvent, deployment: NotificationDeployment | null, message: string): void {
    try {
      const targets = this.targets.filter((t) => t.events.has(event));
      if (targets.length === 0) return;
      if (this.state === 'stopped') {
        this.counters.total.inc({ event, result: 'dropped' }, targets.length);
        this.logger.warn({ event, deploymentId: deployment?.id }, 'notification dropped: notifier stopped');
        return;
      }
      const at = new Date();
      const bodies = new Map<WebhookFormat, string>();
      for (const target of targets) {
        let body = bodies.get(target.format);
        if (body === undefined) {
          body = renderBody(target.format, event, at, deployment, message);
          bodies.set(target.format, body);
        }
        this.insert({
          seq: this.seq++,
          id: randomUUID(),
          target,
          event,
          body,
          attempts: 0,
          dueAt: at.getTime(),
          lastError: undefined,
        });
      }
      this.pump();
    } catch (err) {
      try {
        this.counters.total.inc({ event, result: 'dropped' });
        this.logger.error({ err, event }, 'notification could not be queued');
      } catch {
        // Nothing left to report with; the caller must not notice.
      }
    }
  }

  start(): Promise<void> {
    if (this.state !== 'running' && !this.stopping) {
      this.state = 'running';
      this.pump();
    }
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown().finally(() => {
      this.stopping = undefined;
    });
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.state = 'stopped';
    this.disarm();
    const abandoned = this.queue.splice(0);
    this.reportDepth();
    for (const delivery of abandoned) this.counters.total.inc({ event: delivery.event, result: 'dropped' });
    if (abandoned.length > 0) {
      this.logger.warn({ dropped: abandoned.length }, 'notifier stopped with deliveries still queued; they are dropped');
    }
    if (this.inflight.size === 0) return;
    let deadline: NodeJS.Timeout | undefined;
    const settled = Promise.allSettled([...this.inflight]);
    await Promise.race([settled, new Promise<void>((resolve) => (deadline = setTimeout(resolve, this.stopTimeoutMs)))]);
    clearTimeout(deadline);
    for (const controller of this.controllers) controller.abort(STOPPING);
    await Promise.allSettled([...this.inflight]);
  }

  /** Adds a waiting delivery in `seq` order; when the queue is over its bound, drops the oldest. */
  private insert(delivery: Delivery): void {
    let i = this.queue.length;
    while (i > 0 && this.queue[i - 1]!.seq > delivery.seq) i--;
    this.queue.splice(i, 0, delivery);
    while (this.queue.length > this.maxQueue) this.evict(this.queue.shift()!);
    this.reportDepth();
  }

  private evict(delivery: Delivery): void {
    this.counters.total.inc({ event: delivery.event, result: 'dropped' });
    this.evictedSinceLog++;
    const now = Date.now();
    if (now - this.lastEvictionLog >= EVICTION_LOG_INTERVAL_MS) {
      this.logger.warn(
        { url: delivery.target.logUrl, event: delivery.event, attempts: delivery.attempts, dropped: this.evictedSinceLog, maxQueue: this.maxQueue },
        'notification queue full: oldest deliveries dropped',
      );
      this.lastEvictionLog = now;
      this.evictedSinceLog = 0;
    }
  }

  private reportDepth(): void {
    // inc/dec rather than set: several notifiers may share one registry.
    this.counters.queueDepth.inc(this.queue.length - this.reportedDepth);
    this.reportedDepth = this.queue.length;
  }

  /** Starts every due delivery whose webhook has a free slot, then sleeps until the next one is due. */
  private pump(): void {
    if (this.state !== 'running') return;
    const now = Date.now();
    let next = Infinity;
    for (let i = 0; i < this.queue.length; ) {
      const delivery = this.queue[i]!;
      if (delivery.dueAt > now) {
        next = Math.min(next, delivery.dueAt);
        i++;
      } else if (delivery.target.inFlight >= this.concurrency) {
        // Picked up again when an attempt of this webhook finishes.
        i++;
      } else {
        this.queue.splice(i, 1);
        this.send(delivery);
      }
    }
    this.reportDepth();
    this.arm(next, now);
  }

  private arm(dueAt: number, now: number): void {
    if (dueAt === this.timerDueAt) return;
    this.disarm();
    if (dueAt === Infinity) return;
    this.timerDueAt = dueAt;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerDueAt = Infinity;
      this.pump();
    }, Math.max(1, dueAt - now));
    // Waiting retries alone must not keep a finished process (`run --once`) alive.
    this.timer.unref();
  }

  private disarm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerDueAt = Infinity;
  }

  private send(delivery: Delivery): void {
    delivery.attempts++;
    delivery.target.inFlight++;
    const attempt = this.attempt(delivery).then(
      (outcome) => this.settle(delivery, outcome),
      (err: unknown) => this.settle(delivery, { ok: false, error: String(err) }),
    );
    const tracked = attempt
      .catch((err: unknown) => this.logger.error({ err }, 'notification worker failed'))
      .finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  /** One signed POST; resolves with the outcome, never rejects. */
  private async attempt(delivery: Delivery): Promise<Outcome> {
    const { target } = delivery;
    const controller = new AbortController();
    this.controllers.add(controller);
    const timer = setTimeout(() => controller.abort(TIMED_OUT), target.timeoutMs);
    try {
      const headers: Record<string, string> = {
        'Content-Type': 'application/json',
        'User-Agent': 'deployer-controller',
        [HEADERS.event]: delivery.event,
        [HEADERS.delivery]: delivery.id,
        // A fresh timestamp on every attempt, so late retries are not refused as replays.
        [HEADERS.signature]: signPayload(delivery.body, target.secret, Math.floor(Date.now() / 1_000)),
      };
      if (target.authorization) headers.Authorization = target.authorization;
      const response = await this.fetchImpl(target.url, {
        method: 'POST',
        headers,
        body: delivery.body,
        signal: controller.signal,
        // A redirected POST would be resent as GET by fetch; treat it as a failure the operator sees.
        redirect: 'manual',
      });
      // The answer's body is not needed; release the connection.
      await response.body?.cancel().catch(() => undefined);
      if (response.status >= 200 && response.status < 300) return { ok: true, status: response.status };
      return { ok: false, error: `HTTP ${response.status}` };
    } catch (err) {
      return { ok: false, error: describeFailure(err, controller.signal, target.timeoutMs) };
    } finally {
      clearTimeout(timer);
      this.controllers.delete(controller);
    }
  }

  private settle(delivery: Delivery, outcome: Outcome): void {
    const { target, event } = delivery;
    target.inFlight--;
    const fields = { url: target.logUrl, event, delivery: delivery.id, attempts: delivery.attempts };
    if (outcome.ok) {
      this.counters.total.inc({ event, result: 'delivered' });
      this.logger.debug({ ...fields, status: outcome.status }, 'notification delivered');
    } else {
      delivery.lastError = outcome.error;
      if (this.state !== 'running' || delivery.attempts >= this.tries) {
        this.counters.total.inc({ event, result: 'dropped' });
        const why = this.state !== 'running' ? 'notifier stopped' : 'tries exhausted';
        this.logger.warn({ ...fields, lastError: outcome.error, reason: why }, 'notification dropped');
      } else {
        const retryInMs = this.backoff(delivery.attempts);
        this.counters.total.inc({ event, result: 'retried' });
        this.logger.debug({ ...fields, lastError: outcome.error, retryInMs }, 'notification attempt failed; will retry');
        delivery.dueAt = Date.now() + retryInMs;
        this.insert(delivery);
      }
    }
    this.pump();
  }

  /** The wait after failed attempt number `attempt` (1-based): doubling from `baseMs`, capped, plus jitter. */
  private backoff(attempt: number): number {
    const base = Math.min(this.maxMs, this.baseMs * 2 ** (attempt - 1));
    return Math.round(base * (1 + JITTER * this.random()));
  }
}
