import { randomUUID } from 'node:crypto';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** What a reconcile asks of the loop: run it again after this long. */
export interface Result {
  requeueAfterMs?: number;
}

/** Handed to each reconcile: its logger (with `reconcileId` bound) and its deadline. */
export interface ReconcileContext {
  logger: Logger;
  signal: AbortSignal;
}

/**
 * The one reconcile contract (controller-runtime's): given a key only, read
 * desired and actual state afresh and act. Level-based: a key enqueued twice
 * is reconciled once.
 */
export interface Reconciler {
  readonly name: string;
  reconcile(ctx: ReconcileContext, key: string): Promise<Result>;
}

/** An error retrying cannot fix: logged and counted, never requeued. */
export class TerminalError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

/** A long-lived part with a lifecycle. `start` and `stop` are safe to call twice or concurrently. */
export interface Runnable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Options of {@link Controller}. */
export interface ControllerOptions {
  logger: Logger;
  metrics: Metrics;
  /** Picks the reconciler for a key. */
  route: (key: string) => Reconciler;
  /** Keys enqueued at start and again every `resyncMs` (the periodic full resync). */
  resyncKeys: readonly string[];
  resyncMs: number;
  /** Bound on one reconcile; its signal aborts then. */
  reconcileTimeoutMs: number;
  /** First retry delay after an error; doubles up to `resyncMs`, with jitter. */
  backoffBaseMs?: number;
  /**
   * Reconciles run at once, on different keys (default 1). One key is never
   * reconciled twice at the same time: re-enqueued while in flight, it runs
   * again after.
   */
  concurrency?: number;
  /** Called after every reconcile, whatever the result (liveness, readiness). */
  onReconciled?: (key: string, error: unknown) => void;
}

/** Longest delay a Node timer holds; a longer one fires after 1 ms instead (TimeoutOverflowWarning). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function timerDelay(ms: number): number {
  return Math.min(Math.max(ms, 1), MAX_TIMER_MS);
}

/**
 * The loop that owns the machinery: a deduplicating work queue, one reconcile
 * at a time, requeue with jittered backoff, per-reconcile timeout, the
 * catch-all, metrics and the single error log. Reconcilers just return or throw.
 */
export class Controller implements Runnable {
  private readonly queue = new Set<string>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly failures = new Map<string, number>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private waiters: (() => void)[] = [];
  private running: Promise<void> | undefined;
  private stopping = false;
  /** Keys being reconciled, with their abort handle and start time. */
  private readonly inflight = new Map<string, { abort: AbortController; since: number }>();

  constructor(private options: ControllerOptions) {}

  /** When the oldest reconcile in flight began (ms since epoch), or null when idle: for liveness. */
  get busySince(): number | null {
    let oldest: number | null = null;
    for (const { since } of this.inflight.values()) if (oldest === null || since < oldest) oldest = since;
    return oldest;
  }

  private wakeAll(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  /** Asks for `key` to be reconciled, now or after `delayMs`. */
  enqueue(key: string, delayMs = 0): void {
    if (this.stopping) return;
    if (delayMs > 0) {
      if (this.timers.has(key)) return;
      const timer = setTimeout(() => {
        this.timers.delete(key);
        this.enqueue(key);
      }, timerDelay(delayMs));
      timer.unref();
      this.timers.set(key, timer);
      return;
    }
    this.queue.add(key);
    this.options.metrics.workqueueDepth.set(this.queue.size);
    this.wakeAll();
  }

  /** Changes the resync period (config reload); takes effect from now. */
  setResync(ms: number): void {
    this.options = { ...this.options, resyncMs: ms };
    if (this.resyncTimer) {
      clearInterval(this.resyncTimer);
      this.resyncTimer = setInterval(() => this.resync(), timerDelay(ms));
    }
  }

  /** Enqueues the full-resync keys. */
  private resync(): void {
    for (const key of this.options.resyncKeys) this.enqueue(key);
  }

  start(): Promise<void> {
    if (this.running) return Promise.resolve();
    this.stopping = false;
    this.resync();
    this.resyncTimer = setInterval(() => this.resync(), timerDelay(this.options.resyncMs));
    const workers = Math.max(1, Math.floor(this.options.concurrency ?? 1));
    this.running = Promise.all(Array.from({ length: workers }, () => this.work())).then(() => undefined);
    return Promise.resolve();
  }

  /** Stops taking work, aborts the reconcile in flight and waits for it to return. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.resyncTimer);
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.queue.clear();
    for (const { abort } of this.inflight.values()) abort.abort(new Error('controller stopping'));
    this.wakeAll();
    await this.running;
    this.running = undefined;
  }

  /** The first queued key that is not in flight. */
  private next(): string | undefined {
    for (const key of this.queue) if (!this.inflight.has(key)) return key;
    return undefined;
  }

  private async work(): Promise<void> {
    while (!this.stopping) {
      const key = this.next();
      if (key === undefined) {
        await new Promise<void>((resolve) => this.waiters.push(resolve));
        continue;
      }
      this.queue.delete(key);
      this.options.metrics.workqueueDepth.set(this.queue.size);
      await this.reconcileOne(key);
    }
  }

  private async reconcileOne(key: string): Promise<void> {
    const reconciler = this.options.route(key);
    const logger = this.options.logger.child({ reconcileId: randomUUID(), reconciler: reconciler.name, key });
    const abort = new AbortController();
    this.inflight.set(key, { abort, since: Date.now() });
    const timeout = setTimeout(
      () => abort.abort(new Error(`reconcile timed out after ${this.options.reconcileTimeoutMs}ms`)),
      timerDelay(this.options.reconcileTimeoutMs),
    );
    const end = this.options.metrics.reconcileDuration.startTimer({ reconciler: reconciler.name });
    let error: unknown;
    // The promise constructor turns a synchronous throw into a rejection.
    const reconciling = new Promise<Result>((resolve) => resolve(reconciler.reconcile({ logger, signal: abort.signal }, key)));
    try {
      const result = await Promise.race([
        reconciling,
        new Promise<never>((_, reject) => abort.signal.addEventListener('abort', () => reject(abort.signal.reason as Error), { once: true })),
      ]);
      this.failures.delete(key);
      this.options.metrics.reconcileTotal.inc({ reconciler: reconciler.name, result: result.requeueAfterMs ? 'requeue' : 'success' });
      if (result.requeueAfterMs) this.enqueue(key, result.requeueAfterMs);
    } catch (err) {
      error = err;
      if (this.stopping) {
        logger.info({ err }, 'reconcile interrupted by stop');
      } else if (err instanceof TerminalError) {
        this.options.metrics.reconcileTotal.inc({ reconciler: reconciler.name, result: 'error' });
        logger.error({ err }, 'reconcile failed (terminal, not retried)');
      } else {
        const failures = (this.failures.get(key) ?? 0) + 1;
        this.failures.set(key, failures);
        const delay = this.backoff(failures);
        this.options.metrics.reconcileTotal.inc({ reconciler: reconciler.name, result: 'error' });
        logger.error({ err, failures, retryInMs: delay }, 'reconcile failed; retrying');
        this.enqueue(key, delay);
      }
    } finally {
      clearTimeout(timeout);
      // A timeout or stop settles the race at once, but a reconcile that ignores its
      // signal is still running: wait for it, so that reconciles never overlap and
      // stop() returns only when nothing runs (busySince stays set for liveness).
      await reconciling.catch(() => undefined);
      end();
      this.inflight.delete(key);
      // The same key may have been enqueued meanwhile: let a waiting worker take it.
      if (this.queue.has(key)) this.wakeAll();
    }
    this.options.onReconciled?.(key, error);
  }

  /** Exponential backoff from `backoffBaseMs`, capped at the resync period, with ±20% jitter. */
  private backoff(failures: number): number {
    const base = this.options.backoffBaseMs ?? 1_000;
    const raw = Math.min(this.options.resyncMs, base * 2 ** (failures - 1));
    return Math.round(raw * (0.8 + Math.random() * 0.4));
  }
}
