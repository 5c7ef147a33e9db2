import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import {
  NOTIFICATION_EVENTS,
  Notifier,
  deploymentFacts,
  notificationsSchema,
  signPayload,
  verifySignature,
  type NotificationDeployment,
  type NotifierOptions,
} from '../../src/controller/notifications.js';
import { InputError } from '../../src/yaml-source.js';
import { LogCapture, metricValue, type LogLine } from '../support/seed.js';

/** One call to the fake fetch. */
interface Call {
  url: string;
  headers: Record<string, string>;
  body: string;
  signal: AbortSignal;
  /** Fake-clock time of the call (ms). */
  at: number;
}

type Answer = (call: Call, index: number) => Promise<Response> | Response;

/** A fetch that records every call and answers as `answer` says (200 by default). */
function fakeFetch(answer: Answer = () => new Response(null, { status: 200 })): { fetchImpl: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fetchImpl = (async (input: string | URL | Request, init?: RequestInit) => {
    const call: Call = {
      url: String(input),
      headers: { ...(init?.headers as Record<string, string>) },
      body: String(init?.body),
      signal: init!.signal!,
      at: Date.now(),
    };
    calls.push(call);
    return answer(call, calls.length);
  }) as typeof fetch;
  return { fetchImpl, calls };
}

/** An answer that never comes, until the request is aborted. */
function hang(call: Call): Promise<Response> {
  return new Promise((_resolve, reject) => {
    call.signal.addEventListener('abort', () => reject(call.signal.reason as Error), { once: true });
  });
}

const SECRET = 'test-secret';
const DEPLOYMENT: NotificationDeployment = {
  id: 'dep-42',
  project: 'shop',
  service: 'web',
  revision: 7,
  status: 'failed',
  phase: 'health_check',
  status_reason: 'health check failed 3 times',
};

function webhooks(...hooks: Record<string, unknown>[]) {
  return notificationsSchema.parse({ webhooks: hooks }).webhooks;
}

interface Harness {
  notifier: Notifier;
  metrics: Metrics;
  logs: LogLine[];
  calls: Call[];
}

const notifiers: Notifier[] = [];

function harness(
  hooks: Record<string, unknown>[] = [{ url: 'http://127.0.0.1:9/hook', secret: SECRET }],
  answer?: Answer,
  options: Partial<NotifierOptions> = {},
): Harness {
  const log = new LogCapture();
  const logger = createLogger('debug', log);
  const metrics = new Metrics({ processMetrics: false });
  const { fetchImpl, calls } = fakeFetch(answer);
  const notifier = new Notifier(webhooks(...hooks), {
    logger,
    metrics,
    fetchImpl,
    random: () => 0,
    stopTimeoutMs: 10,
    ...options,
  });
  notifiers.push(notifier);
  return { notifier, metrics, logs: log.lines, calls };
}

const count = (metrics: Metrics, event: string, result: string) => metricValue(metrics, 'deployer_notifications_total', { event, result });
const queueDepth = (metrics: Metrics) => metricValue(metrics, 'deployer_notifications_queue_depth');

/** Runs due timers and pending promise callbacks without moving the fake clock on. */
const flush = () => vi.advanceTimersByTimeAsync(0);

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(notifiers.splice(0).map((n) => n.stop()));
});

describe('notificationsSchema', () => {
  it('accepts the DESIGN example and fills the defaults', () => {
    const config = notificationsSchema.parse({
      webhooks: [
        { url: 'http://127.0.0.1:9000/deployer', secret: 'change-me', events: ['active', 'failed'], format: 'slack' },
        { url: 'https://hooks.example.com/x', secretFile: '/etc/deployer/hook.secret', timeout: '2s' },
      ],
    });
    expect(config.webhooks[0]).toEqual({
      url: 'http://127.0.0.1:9000/deployer',
      secret: 'change-me',
      events: ['active', 'failed'],
      format: 'slack',
      timeout: 5_000,
    });
    expect(config.webhooks[1]).toMatchObject({ events: [...NOTIFICATION_EVENTS], format: 'json', timeout: 2_000 });
    expect(notificationsSchema.parse({})).toEqual({ webhooks: [] });
  });

  function issue(value: unknown): { path: PropertyKey[]; message: string; code: string } {
    const result = notificationsSchema.safeParse(value);
    expect(result.success).toBe(false);
    const first = result.error!.issues[0]!;
    return { path: first.path, message: first.message, code: first.code };
  }

  it('rejects unknown keys, at the top and in a webhook', () => {
    expect(issue({ hooks: [] })).toMatchObject({ code: 'unrecognized_keys', path: [] });
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', retries: 3 }] })).toMatchObject({
      code: 'unrecognized_keys',
      path: ['webhooks', 0],
    });
  });

  it('rejects a URL that is not http(s)', () => {
    for (const url of ['ftp://h/x', 'not a url', '/relative', 'file:///etc/passwd']) {
      expect(issue({ webhooks: [{ url, secret: 's' }] })).toMatchObject({ path: ['webhooks', 0, 'url'], message: expect.stringContaining('http or https URL') });
    }
  });

  it('requires exactly one of secret and secretFile', () => {
    expect(issue({ webhooks: [{ url: 'http://h/x' }] })).toMatchObject({ path: ['webhooks', 0, 'secret'], message: expect.stringContaining('secret or secretFile') });
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', secretFile: '/f' }] })).toMatchObject({
      path: ['webhooks', 0, 'secretFile'],
      message: expect.stringContaining('only one'),
    });
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: '' }] }).path).toEqual(['webhooks', 0, 'secret']);
  });

  it('rejects an unknown event, an empty event list, a bad format and a bad timeout', () => {
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', events: ['active', 'deployed'] }] })).toMatchObject({
      path: ['webhooks', 0, 'events', 1],
      message: expect.stringContaining('expected one of active'),
    });
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', events: [] }] }).path).toEqual(['webhooks', 0, 'events']);
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', format: 'xml' }] }).message).toBe('expected json or slack');
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', timeout: '0s' }] }).path).toEqual(['webhooks', 0, 'timeout']);
    expect(issue({ webhooks: [{ url: 'http://h/x', secret: 's', timeout: 'soon' }] }).message).toContain('expected a duration');
  });
});

describe('secretFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'deployer-notify-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is read when the notifier is built, and signs with the trimmed content', async () => {
    vi.useFakeTimers();
    const file = join(dir, 'hook.secret');
    writeFileSync(file, 'from-a-file\n');
    const h = harness([{ url: 'http://127.0.0.1:9/hook', secretFile: file }]);
    // Changing the file later changes nothing: it was read at construction.
    writeFileSync(file, 'changed\n');
    await h.notifier.start();
    h.notifier.notify('active', DEPLOYMENT, 'up');
    await flush();
    const call = h.calls[0]!;
    const now = Math.floor(Date.now() / 1000);
    expect(verifySignature(call.headers['Deployer-Signature']!, call.body, 'from-a-file', now)).toBe(true);
    expect(verifySignature(call.headers['Deployer-Signature']!, call.body, 'from-a-file\n', now)).toBe(false);
  });

  it('fails with an error naming the file when it cannot be read or is empty', () => {
    const missing = join(dir, 'missing.secret');
    expect(() => harness([{ url: 'http://h/x', secretFile: missing }])).toThrow(InputError);
    expect(() => harness([{ url: 'http://h/x', secretFile: missing }])).toThrow(`notifications.webhooks[0].secretFile ${missing}: cannot read the secret: ENOENT`);
    const empty = join(dir, 'empty.secret');
    writeFileSync(empty, '  \n');
    expect(() => harness([{ url: 'http://h/x', secret: 's' }, { url: 'http://h/y', secretFile: empty }])).toThrow(
      `notifications.webhooks[1].secretFile ${empty}: the secret file is empty`,
    );
  });
});

describe('signatures', () => {
  const body = '{"event":"active"}';
  const t = 1_700_000_000;

  it('signs "<t>.<body>" with HMAC-SHA256 as t=<t>,v1=<hex>', () => {
    const header = signPayload(body, SECRET, t);
    expect(header).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    // Known answer, from `printf '%s' '1700000000.{"event":"active"}' | openssl dgst -sha256 -hmac test-secret`.
    expect(header).toBe('t=1700000000,v1=640f8c5f42ee07829bf016fff9d14f827edcb5874e8f3e038f9df6d5e75f4438');
    expect(signPayload(Buffer.from(body), SECRET, t)).toBe(header);
    expect(signPayload(body, SECRET, t + 1)).not.toBe(header);
  });

  it('verifies a valid signature, within 5 minutes either way', () => {
    const header = signPayload(body, SECRET, t);
    expect(verifySignature(header, body, SECRET, t)).toBe(true);
    expect(verifySignature(header, body, SECRET, t + 300)).toBe(true);
    expect(verifySignature(header, Buffer.from(body), SECRET, t + 10)).toBe(true);
  });

  it('rejects a tampered body, a wrong secret and a signature older than 5 minutes', () => {
    const header = signPayload(body, SECRET, t);
    expect(verifySignature(header, '{"event":"failed"}', SECRET, t)).toBe(false);
    expect(verifySignature(header, body, 'other-secret', t)).toBe(false);
    expect(verifySignature(header, body, SECRET, t + 301)).toBe(false);
    expect(verifySignature(header, body, SECRET, t - 301)).toBe(false);
    // A timestamp moved forward without re-signing does not verify.
    expect(verifySignature(header.replace(`t=${t}`, `t=${t + 200}`), body, SECRET, t + 200)).toBe(false);
  });

  it('rejects malformed headers and accepts any matching v1 (secret rotation)', () => {
    const good = signPayload(body, SECRET, t);
    const v1 = good.split('v1=')[1]!;
    for (const header of ['', 'v1=' + v1, `t=${t}`, `t=abc,v1=${v1}`, `t=${t},v1=xyz`, `t=${t},t=${t},v1=${v1}`]) {
      expect(verifySignature(header, body, SECRET, t)).toBe(false);
    }
    const old = signPayload(body, 'old-secret', t).split('v1=')[1]!;
    expect(verifySignature(`t=${t},v1=${old},v1=${v1}`, body, SECRET, t)).toBe(true);
  });
});

describe('Notifier deliveries', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date('2025-03-01T12:00:00.000Z'));
  });

  it('POSTs the JSON body with Content-Type, Deployer-Event and a valid signature', async () => {
    const h = harness();
    await h.notifier.start();
    h.notifier.notify('failed', DEPLOYMENT, 'rollout failed');
    await flush();
    expect(h.calls).toHaveLength(1);
    const call = h.calls[0]!;
    expect(call.url).toBe('http://127.0.0.1:9/hook');
    expect(call.headers['Content-Type']).toBe('application/json');
    expect(call.headers['Deployer-Event']).toBe('failed');
    expect(call.headers['Deployer-Delivery']).toMatch(/^[0-9a-f-]{36}$/);
    expect(call.headers['Deployer-Signature']).toMatch(/^t=1740830400,v1=[0-9a-f]{64}$/);
    expect(verifySignature(call.headers['Deployer-Signature']!, call.body, SECRET, 1_740_830_400)).toBe(true);
    expect(JSON.parse(call.body)).toStrictEqual({
      event: 'failed',
      at: '2025-03-01T12:00:00.000Z',
      deployment: DEPLOYMENT,
      message: 'rollout failed',
    });
    expect(await count(h.metrics, 'failed', 'delivered')).toBe(1);
  });

  it('sends deployment null for events without one, and maps a deployment row', async () => {
    const h = harness();
    await h.notifier.start();
    h.notifier.notify('orphans_removed', null, 'removed 3 orphan containers');
    await flush();
    expect(JSON.parse(h.calls[0]!.body)).toMatchObject({ event: 'orphans_removed', deployment: null, message: 'removed 3 orphan containers' });
    expect(
      deploymentFacts({ id: 'd', project: 'p', service: 's', revision: 2, status: 'active', phase: null, statusReason: null }),
    ).toStrictEqual({ id: 'd', project: 'p', service: 's', revision: 2, status: 'active', phase: null, status_reason: null });
  });

  it('sends a Slack body: {text} with the same facts on one line, escaped', async () => {
    const h = harness([{ url: 'http://127.0.0.1:9/slack', secret: SECRET, format: 'slack' }]);
    await h.notifier.start();
    h.notifier.notify('failed', { ...DEPLOYMENT, status_reason: 'exit <1> & more' }, 'rollout failed\nsee logs');
    await flush();
    const body = JSON.parse(h.calls[0]!.body) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual(['text']);
    const text = body.text as string;
    expect(text).not.toMatch(/[\r\n]/);
    for (const fact of ['failed', 'shop/web', 'revision 7', 'dep-42', 'status failed', 'phase health_check', 'exit &lt;1&gt; &amp; more', 'rollout failed see logs', '2025-03-01T12:00:00.000Z']) {
      expect(text).toContain(fact);
    }
    expect(verifySignature(h.calls[0]!.headers['Deployer-Signature']!, h.calls[0]!.body, SECRET, 1_740_830_400)).toBe(true);
  });

  it('sends only the events a webhook subscribed to', async () => {
    const h = harness([
      { url: 'http://127.0.0.1:9/failures', secret: SECRET, events: ['failed', 'zombie'] },
      { url: 'http://127.0.0.1:9/all', secret: SECRET },
    ]);
    await h.notifier.start();
    h.notifier.notify('active', DEPLOYMENT, 'a');
    h.notifier.notify('zombie', DEPLOYMENT, 'z');
    await flush();
    const sent = h.calls.map((c) => `${new URL(c.url).pathname} ${c.headers['Deployer-Event']}`).sort();
    expect(sent).toEqual(['/all active', '/all zombie', '/failures zombie']);
  });

  it('moves URL credentials into a Basic Authorization header and keeps them out of the logs', async () => {
    const h = harness([{ url: 'http://user:p%40ss@127.0.0.1:9/hook?token=abc', secret: SECRET }], () => new Response(null, { status: 503 }), {
      retry: { tries: 1 },
    });
    await h.notifier.start();
    h.notifier.notify('active', DEPLOYMENT, 'up');
    await flush();
    expect(h.calls[0]!.url).toBe('http://127.0.0.1:9/hook?token=abc');
    expect(h.calls[0]!.headers.Authorization).toBe(`Basic ${Buffer.from('user:p@ss').toString('base64')}`);
    const dropped = h.logs.find((l) => l.msg === 'notification dropped')!;
    expect(dropped.url).toBe('http://127.0.0.1:9/hook');
    expect(JSON.stringify(h.logs)).not.toMatch(/p%40ss|p@ss|token=abc/);
  });

  it('keeps the secret path of a Slack webhook out of the logs', async () => {
    const h = harness([{ url: 'http://127.0.0.1:9/services/T000/B000/XXXXsecretXXXX', secret: SECRET, format: 'slack' }], () => new Response(null, { status: 503 }), {
      retry: { tries: 1 },
    });
    await h.notifier.start();
    h.notifier.notify('failed', DEPLOYMENT, 'down');
    await flush();
    expect(h.calls[0]!.url).toBe('http://127.0.0.1:9/services/T000/B000/XXXXsecretXXXX');
    const dropped = h.logs.find((l) => l.msg === 'notification dropped')!;
    expect(dropped.url).toBe('http://127.0.0.1:9/services/***');
    expect(JSON.stringify(h.logs)).not.toMatch(/XXXXsecretXXXX|T000|B000/);
  });

  it('notify() returns at once and never throws, even while the receiver hangs', async () => {
    const h = harness(undefined, hang);
    await h.notifier.start();
    expect(h.notifier.notify('active', DEPLOYMENT, 'one')).toBeUndefined();
    expect(h.notifier.notify('active', DEPLOYMENT, 'two')).toBeUndefined();
    await flush();
    // Both attempts are in flight and unanswered, yet the calls returned.
    expect(h.calls).toHaveLength(2);
    // A body that cannot be serialised is logged and counted, not thrown.
    const bad = { ...DEPLOYMENT, revision: 1n as unknown as number };
    expect(() => h.notifier.notify('failed', bad, 'x')).not.toThrow();
    expect(await count(h.metrics, 'failed', 'dropped')).toBe(1);
    expect(h.logs.some((l) => l.level === 'error' && l.msg === 'notification could not be queued')).toBe(true);
  });

  it('bounds the queue: when full, drops the oldest and counts it', async () => {
    const h = harness(undefined, undefined, { maxQueue: 3 });
    // Not started yet: deliveries wait in the queue.
    for (let i = 1; i <= 5; i++) h.notifier.notify('active', DEPLOYMENT, `m${i}`);
    expect(await queueDepth(h.metrics)).toBe(3);
    expect(await count(h.metrics, 'active', 'dropped')).toBe(2);
    expect(h.logs.filter((l) => l.msg === 'notification queue full: oldest deliveries dropped')).toHaveLength(1);
    await h.notifier.start();
    await flush();
    expect(h.calls.map((c) => (JSON.parse(c.body) as { message: string }).message)).toEqual(['m3', 'm4', 'm5']);
    expect(await count(h.metrics, 'active', 'delivered')).toBe(3);
    expect(await queueDepth(h.metrics)).toBe(0);
  });

  it('retries with exponential backoff and a fresh signature until delivered', async () => {
    const h = harness(undefined, (_call, n) => new Response(null, { status: n <= 2 ? 500 : 204 }));
    await h.notifier.start();
    h.notifier.notify('active', DEPLOYMENT, 'up');
    await flush();
    expect(h.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_999);
    expect(h.calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(3_999);
    expect(h.calls).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.calls).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(h.calls).toHaveLength(3);
    expect(await count(h.metrics, 'active', 'retried')).toBe(2);
    expect(await count(h.metrics, 'active', 'delivered')).toBe(1);
    expect(await count(h.metrics, 'active', 'dropped')).toBe(0);
    // Same body and delivery id every time; each attempt signed at its own time.
    expect(new Set(h.calls.map((c) => c.body)).size).toBe(1);
    expect(new Set(h.calls.map((c) => c.headers['Deployer-Delivery'])).size).toBe(1);
    const stamps = h.calls.map((c) => c.headers['Deployer-Signature']!.match(/^t=(\d+),/)![1]);
    expect(stamps).toEqual(['1740830400', '1740830402', '1740830406']);
    for (const c of h.calls) expect(verifySignature(c.headers['Deployer-Signature']!, c.body, SECRET, Math.floor(c.at / 1000))).toBe(true);
  });

  it('gives up after 6 tries spread over at least a minute, then logs and counts the drop', async () => {
    const h = harness(undefined, () => new Response('nope', { status: 500 }));
    await h.notifier.start();
    h.notifier.notify('zombie', DEPLOYMENT, 'marked failed');
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    expect(h.calls).toHaveLength(6);
    const waits = h.calls.slice(1).map((c, i) => c.at - h.calls[i]!.at);
    expect(waits).toEqual([2_000, 4_000, 8_000, 16_000, 30_000]);
    expect(h.calls.at(-1)!.at - h.calls[0]!.at).toBeGreaterThanOrEqual(60_000);
    expect(await count(h.metrics, 'zombie', 'retried')).toBe(5);
    expect(await count(h.metrics, 'zombie', 'dropped')).toBe(1);
    expect(await count(h.metrics, 'zombie', 'delivered')).toBe(0);
    const dropped = h.logs.filter((l) => l.msg === 'notification dropped');
    expect(dropped).toHaveLength(1);
    expect(dropped[0]).toMatchObject({ level: 'warn', url: 'http://127.0.0.1:9/hook', event: 'zombie', attempts: 6, lastError: 'HTTP 500', reason: 'tries exhausted' });
  });

  it('jitter only lengthens the waits', async () => {
    const h = harness(undefined, () => new Response(null, { status: 500 }), { random: () => 0.999, retry: { tries: 3 } });
    await h.notifier.start();
    h.notifier.notify('failed', DEPLOYMENT, 'x');
    await vi.advanceTimersByTimeAsync(60_000);
    const waits = h.calls.slice(1).map((c, i) => c.at - h.calls[i]!.at);
    expect(waits).toEqual([Math.round(2_000 * 1.24975), Math.round(4_000 * 1.24975)]);
  });

  it('retries a network error and an attempt that times out', async () => {
    const h = harness([{ url: 'http://127.0.0.1:9/hook', secret: SECRET, timeout: '1s' }], (call, n) =>
      n === 1 ? Promise.reject(new TypeError('fetch failed', { cause: new Error('connect ECONNREFUSED 127.0.0.1:9') })) : hang(call),
    { retry: { tries: 3, baseMs: 100 } });
    await h.notifier.start();
    h.notifier.notify('cancelled', DEPLOYMENT, 'x');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(h.calls).toHaveLength(3);
    expect(h.calls[1]!.signal.aborted).toBe(true);
    const failures = h.logs.filter((l) => l.lastError).map((l) => l.lastError);
    expect(failures).toEqual(['connect ECONNREFUSED 127.0.0.1:9', 'timed out after 1s', 'timed out after 1s']);
    expect(await count(h.metrics, 'cancelled', 'dropped')).toBe(1);
  });

  it('a hanging webhook holds only its own slots; others are delivered', async () => {
    const h = harness(
      [
        { url: 'http://127.0.0.1:9/dead', secret: SECRET },
        { url: 'http://127.0.0.1:9/alive', secret: SECRET },
      ],
      (call) => (call.url.endsWith('/dead') ? hang(call) : new Response(null, { status: 200 })),
      { concurrency: 2 },
    );
    await h.notifier.start();
    for (let i = 0; i < 5; i++) h.notifier.notify('active', DEPLOYMENT, `m${i}`);
    await flush();
    expect(h.calls.filter((c) => c.url.endsWith('/alive'))).toHaveLength(5);
    expect(h.calls.filter((c) => c.url.endsWith('/dead'))).toHaveLength(2);
    expect(await count(h.metrics, 'active', 'delivered')).toBe(5);
    expect(await queueDepth(h.metrics)).toBe(3);
  });

  it('start and stop are idempotent; stop drops what waits, aborts what hangs, and later notifies are dropped', async () => {
    const h = harness(undefined, hang, { concurrency: 1, stopTimeoutMs: 1_000 });
    await h.notifier.start();
    await h.notifier.start();
    h.notifier.notify('failed', DEPLOYMENT, 'in flight');
    h.notifier.notify('failed', DEPLOYMENT, 'waiting');
    await flush();
    expect(h.calls).toHaveLength(1);
    const first = h.notifier.stop();
    const second = h.notifier.stop();
    await vi.advanceTimersByTimeAsync(1_000);
    await Promise.all([first, second]);
    expect(h.calls[0]!.signal.aborted).toBe(true);
    expect(await count(h.metrics, 'failed', 'dropped')).toBe(2);
    expect(await queueDepth(h.metrics)).toBe(0);
    expect(h.logs.find((l) => l.msg === 'notification dropped')).toMatchObject({ reason: 'notifier stopped' });
    h.notifier.notify('failed', DEPLOYMENT, 'after stop');
    await flush();
    expect(h.calls).toHaveLength(1);
    expect(await count(h.metrics, 'failed', 'dropped')).toBe(3);
    await h.notifier.stop();
  });

  it('lets two notifiers share one metrics registry', async () => {
    const metrics = new Metrics({ processMetrics: false });
    const logger = createLogger('silent');
    const { fetchImpl, calls } = fakeFetch();
    const hooks = webhooks({ url: 'http://127.0.0.1:9/hook', secret: SECRET });
    const a = new Notifier(hooks, { logger, metrics, fetchImpl });
    const b = new Notifier(hooks, { logger, metrics, fetchImpl });
    notifiers.push(a, b);
    a.notify('active', null, 'a');
    b.notify('active', null, 'b');
    expect(await queueDepth(metrics)).toBe(2);
    await a.start();
    await b.start();
    await flush();
    expect(calls).toHaveLength(2);
    expect(await count(metrics, 'active', 'delivered')).toBe(2);
    expect(await queueDepth(metrics)).toBe(0);
  });

  it('without webhooks, notify does nothing', async () => {
    const metrics = new Metrics({ processMetrics: false });
    const { fetchImpl, calls } = fakeFetch();
    const n = new Notifier(undefined, { logger: createLogger('silent'), metrics, fetchImpl });
    notifiers.push(n);
    await n.start();
    n.notify('active', DEPLOYMENT, 'x');
    await flush();
    expect(calls).toHaveLength(0);
    expect(await count(metrics, 'active', 'dropped')).toBe(0);
  });
});
