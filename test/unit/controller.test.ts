import { afterEach, describe, expect, it, vi } from 'vitest';
import { Controller, TerminalError, type ControllerOptions, type ReconcileContext, type Reconciler, type Result } from '../../src/controller/controller.js';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';

/** A log line as pino writes it. */
interface LogLine {
  level: string;
  msg: string;
  reconcileId?: string;
  reconciler?: string;
  key?: string;
  err?: { type: string; message: string; stack: string };
  failures?: number;
  retryInMs?: number;
}

/** A promise with its resolve at hand: lets a fake reconcile wait until the test says so. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Lets every pending promise callback and immediate run (no clock involved). */
async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/**
 * A fake reconciler: records each call and what was running at the time,
 * and behaves as `behave` says for each call.
 */
class FakeReconciler implements Reconciler {
  readonly calls: string[] = [];
  readonly signals: AbortSignal[] = [];
  running = 0;
  maxRunning = 0;
  finished = 0;

  constructor(
    readonly name: string,
    private readonly behave: (key: string, call: number, ctx: ReconcileContext) => Promise<Result> | Result = () => ({}),
  ) {}

  async reconcile(ctx: ReconcileContext, key: string): Promise<Result> {
    this.calls.push(key);
    this.signals.push(ctx.signal);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      return await this.behave(key, this.calls.length, ctx);
    } finally {
      this.running--;
      this.finished++;
    }
  }
}

interface Harness {
  controller: Controller;
  metrics: Metrics;
  lines: () => LogLine[];
  reconciled: { key: string; error: unknown }[];
}

const started: Controller[] = [];

afterEach(async () => {
  vi.useRealTimers();
  // A test that leaks a running controller would keep reconciling into the next one.
  await Promise.all(started.splice(0).map((c) => c.stop()));
});

function harness(reconciler: Reconciler, options: Partial<ControllerOptions> = {}): Harness {
  const output: string[] = [];
  const logger = createLogger('debug', { write: (line: string) => void output.push(line) });
  const metrics = new Metrics({ processMetrics: false });
  const reconciled: { key: string; error: unknown }[] = [];
  const controller = new Controller({
    logger,
    metrics,
    route: () => reconciler,
    resyncKeys: [],
    resyncMs: 3_600_000, // no resync during a test unless asked for
    reconcileTimeoutMs: 60_000,
    backoffBaseMs: 1,
    onReconciled: (key, error) => void reconciled.push({ key, error }),
    ...options,
  });
  started.push(controller);
  return { controller, metrics, lines: () => output.map((line) => JSON.parse(line) as LogLine), reconciled };
}

/** `deployer_reconcile_total{reconciler, result}`. */
async function reconcileTotal(metrics: Metrics, reconciler: string, result: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric('deployer_reconcile_total');
  if (!metric) throw new Error('deployer_reconcile_total is not registered');
  const { values } = await metric.get();
  return values.find((v) => v.labels.reconciler === reconciler && v.labels.result === result)?.value ?? 0;
}

/** Real timers: retries `check` until it passes (generous, so a loaded machine does not flake). */
function eventually(check: () => void): Promise<void> {
  return vi.waitFor(check, { timeout: 10_000, interval: 5 });
}

/** With fake timers: moves the clock on in small steps until `done()` holds (or gives up). */
async function advanceUntil(done: () => boolean, stepMs = 50, maxSteps = 1_000): Promise<void> {
  for (let i = 0; i < maxSteps && !done(); i++) await vi.advanceTimersByTimeAsync(stepMs);
  expect(done()).toBe(true);
}

/** A short real pause, for checking that something does NOT happen. */
function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function gauge(metrics: Metrics, name: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`${name} is not registered`);
  return (await metric.get()).values[0]?.value ?? Number.NaN;
}

describe('Controller: work queue', () => {
  it('reconciles each enqueued key once, however often it was enqueued while waiting', async () => {
    const first = gate();
    const fake = new FakeReconciler('fake', async (key) => {
      if (key === 'a') await first.promise;
      return {};
    });
    const h = harness(fake, { resyncKeys: ['a'] });
    await h.controller.start();
    await eventually(() => expect(fake.calls).toEqual(['a']));

    for (const key of ['b', 'c', 'b', 'b', 'c', 'd']) h.controller.enqueue(key);
    expect(await gauge(h.metrics, 'deployer_workqueue_depth')).toBe(3);

    first.open();
    await eventually(() => expect(h.reconciled).toHaveLength(4));
    await settle();
    expect(fake.calls).toEqual(['a', 'b', 'c', 'd']);
    expect(await gauge(h.metrics, 'deployer_workqueue_depth')).toBe(0);
  });

  it('reconciles a key again when it is enqueued while its own reconcile runs', async () => {
    const first = gate();
    const fake = new FakeReconciler('fake', async (_key, call) => {
      if (call === 1) await first.promise;
      return {};
    });
    const h = harness(fake, { resyncKeys: ['a'] });
    await h.controller.start();
    await eventually(() => expect(fake.calls).toHaveLength(1));
    h.controller.enqueue('a');
    h.controller.enqueue('a');
    first.open();
    await eventually(() => expect(h.reconciled).toHaveLength(2));
    await settle();
    expect(fake.calls).toEqual(['a', 'a']);
  });

  it('never runs two reconciles at once', async () => {
    const fake = new FakeReconciler('fake', async () => {
      await settle(2);
      return {};
    });
    const h = harness(fake);
    await h.controller.start();
    const keys = Array.from({ length: 20 }, (_, i) => `k${i}`);
    for (const key of keys) h.controller.enqueue(key);
    // More keys arrive while reconciles are running.
    await eventually(() => expect(fake.calls.length).toBeGreaterThan(2));
    for (const key of ['late1', 'late2', 'late3']) h.controller.enqueue(key);
    await eventually(() => expect(h.reconciled).toHaveLength(23));
    expect(fake.maxRunning).toBe(1);
    expect([...fake.calls].sort()).toEqual([...keys, 'late1', 'late2', 'late3'].sort());
  });

  it('routes each key to its reconciler and counts per reconciler', async () => {
    const sweeps = new FakeReconciler('sweep');
    const deployments = new FakeReconciler('deployment');
    const h = harness(sweeps, { route: (key) => (key.startsWith('deployment/') ? deployments : sweeps) });
    await h.controller.start();
    for (const key of ['sweep', 'deployment/a', 'deployment/b']) h.controller.enqueue(key);
    await eventually(() => expect(h.reconciled).toHaveLength(3));
    expect(sweeps.calls).toEqual(['sweep']);
    expect(deployments.calls).toEqual(['deployment/a', 'deployment/b']);
    expect(await reconcileTotal(h.metrics, 'sweep', 'success')).toBe(1);
    expect(await reconcileTotal(h.metrics, 'deployment', 'success')).toBe(2);
  });

  it('enqueues the resync keys at start and again every resyncMs', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const fake = new FakeReconciler('fake');
    const h = harness(fake, { resyncKeys: ['sweep'], resyncMs: 1_000 });
    await h.controller.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.calls).toEqual(['sweep']);
    await vi.advanceTimersByTimeAsync(999);
    expect(fake.calls).toEqual(['sweep']);
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.calls).toEqual(['sweep', 'sweep']);
    await vi.advanceTimersByTimeAsync(3_000);
    expect(fake.calls).toHaveLength(5);
  });

  it('runs a requeueAfterMs result again after that delay, counted as requeue', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const fake = new FakeReconciler('fake', (_key, call) => (call === 1 ? { requeueAfterMs: 500 } : {}));
    const h = harness(fake);
    await h.controller.start();
    h.controller.enqueue('a');
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.calls).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(499);
    expect(fake.calls).toEqual(['a']);
    await vi.advanceTimersByTimeAsync(1);
    expect(fake.calls).toEqual(['a', 'a']);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.calls).toEqual(['a', 'a']);
    expect(await reconcileTotal(h.metrics, 'fake', 'requeue')).toBe(1);
    expect(await reconcileTotal(h.metrics, 'fake', 'success')).toBe(1);
  });
});

describe('Controller: errors', () => {
  it('requeues a failed reconcile with growing, capped, jittered backoff and logs one error line each time', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const fake = new FakeReconciler('fake', (_key, call) => {
      if (call <= 4) throw new Error(`docker unreachable (${call})`);
      return {};
    });
    const h = harness(fake, { backoffBaseMs: 100, resyncMs: 300 });
    await h.controller.start();
    h.controller.enqueue('a');
    // Retries come from the backoff alone (the resync keys are empty).
    await advanceUntil(() => h.reconciled.length === 5);

    expect(fake.calls).toEqual(['a', 'a', 'a', 'a', 'a']);
    expect(await reconcileTotal(h.metrics, 'fake', 'error')).toBe(4);
    expect(await reconcileTotal(h.metrics, 'fake', 'success')).toBe(1);

    const errors = h.lines().filter((l) => l.level === 'error');
    expect(errors.map((l) => l.failures)).toEqual([1, 2, 3, 4]);
    expect(errors.map((l) => l.err?.message)).toEqual(['docker unreachable (1)', 'docker unreachable (2)', 'docker unreachable (3)', 'docker unreachable (4)']);
    // 100, 200, then capped at resyncMs (300): each within ±20%.
    const raw = [100, 200, 300, 300];
    errors.forEach((line, i) => {
      expect(line.retryInMs).toBeGreaterThanOrEqual(raw[i]! * 0.8);
      expect(line.retryInMs).toBeLessThanOrEqual(raw[i]! * 1.2);
      expect(line).toMatchObject({ reconciler: 'fake', key: 'a', msg: 'reconcile failed; retrying' });
      expect(line.err?.type).toBe('Error');
      expect(line.err?.stack).toContain('docker unreachable');
    });
    expect(h.reconciled.map((r) => (r.error as Error | undefined)?.message)).toEqual([
      'docker unreachable (1)',
      'docker unreachable (2)',
      'docker unreachable (3)',
      'docker unreachable (4)',
      undefined,
    ]);
  });

  it('resets the backoff after a success', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const fake = new FakeReconciler('fake', (_key, call) => {
      if (call === 1 || call === 2 || call === 4) throw new Error(`fail ${call}`);
      return {};
    });
    const h = harness(fake, { backoffBaseMs: 100, resyncMs: 10_000 });
    await h.controller.start();
    h.controller.enqueue('a');
    await advanceUntil(() => h.reconciled.length === 3);
    h.controller.enqueue('a');
    await advanceUntil(() => h.reconciled.length === 5);
    expect(h.lines().filter((l) => l.level === 'error').map((l) => l.failures)).toEqual([1, 2, 1]);
  });

  it('does not requeue a TerminalError, but logs and counts it', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const fake = new FakeReconciler('fake', () => {
      throw new TerminalError('image shop-web:9.9 does not exist');
    });
    const h = harness(fake, { backoffBaseMs: 10, resyncMs: 60_000 });
    await h.controller.start();
    h.controller.enqueue('a');
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.calls).toEqual(['a']);
    // Far past any backoff, short of the resync.
    await vi.advanceTimersByTimeAsync(59_000);
    expect(fake.calls).toEqual(['a']);

    expect(await reconcileTotal(h.metrics, 'fake', 'error')).toBe(1);
    const errors = h.lines().filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ msg: 'reconcile failed (terminal, not retried)', reconciler: 'fake', key: 'a' });
    expect(errors[0]?.err).toMatchObject({ type: 'TerminalError', message: 'image shop-web:9.9 does not exist' });
    expect(h.reconciled[0]?.error).toBeInstanceOf(TerminalError);
  });

  it('keeps going after an error: other keys are reconciled', async () => {
    const fake = new FakeReconciler('fake', (key) => {
      if (key === 'bad') throw new TerminalError('bad key');
      return {};
    });
    const h = harness(fake);
    await h.controller.start();
    for (const key of ['bad', 'good1', 'good2']) h.controller.enqueue(key);
    await eventually(() => expect(h.reconciled).toHaveLength(3));
    expect(fake.calls).toEqual(['bad', 'good1', 'good2']);
    expect(await reconcileTotal(h.metrics, 'fake', 'success')).toBe(2);
  });

  it('binds a reconcileId, the reconciler and the key to each reconcile’s logger', async () => {
    const fake = new FakeReconciler('fake', (_key, _call, ctx) => {
      ctx.logger.info({ step: 1 }, 'working');
      return {};
    });
    const h = harness(fake);
    await h.controller.start();
    h.controller.enqueue('x');
    h.controller.enqueue('y');
    await eventually(() => expect(h.reconciled).toHaveLength(2));
    const working = h.lines().filter((l) => l.msg === 'working');
    expect(working.map((l) => [l.reconciler, l.key])).toEqual([
      ['fake', 'x'],
      ['fake', 'y'],
    ]);
    expect(working[0]?.reconcileId).toMatch(/^[0-9a-f-]{36}$/);
    expect(working[1]?.reconcileId).toMatch(/^[0-9a-f-]{36}$/);
    expect(working[0]?.reconcileId).not.toBe(working[1]?.reconcileId);
  });
});

describe('Controller: reconcile timeout', () => {
  it('aborts the signal, counts an error and retries', async () => {
    const fake = new FakeReconciler('fake', async (_key, call, ctx) => {
      if (call > 1) return {};
      // A well-behaved reconcile gives up when its signal aborts.
      await new Promise<void>((_, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true }));
      return {};
    });
    const h = harness(fake, { reconcileTimeoutMs: 20, backoffBaseMs: 1 });
    await h.controller.start();
    h.controller.enqueue('a');
    await eventually(() => expect(h.reconciled).toHaveLength(2));

    expect(fake.signals[0]?.aborted).toBe(true);
    expect((fake.signals[0]?.reason as Error).message).toBe('reconcile timed out after 20ms');
    expect(fake.signals[1]?.aborted).toBe(false);
    expect(await reconcileTotal(h.metrics, 'fake', 'error')).toBe(1);
    expect(await reconcileTotal(h.metrics, 'fake', 'success')).toBe(1);
    const errors = h.lines().filter((l) => l.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]?.err?.message).toBe('reconcile timed out after 20ms');
  });

  it('does not start the next reconcile while a timed-out one that ignores its signal still runs', async () => {
    const release = gate();
    const fake = new FakeReconciler('fake', async (key) => {
      if (key === 'stubborn') await release.promise; // ignores ctx.signal
      return {};
    });
    const h = harness(fake, { reconcileTimeoutMs: 10 });
    await h.controller.start();
    h.controller.enqueue('stubborn');
    h.controller.enqueue('next');
    await eventually(() => expect(fake.signals[0]?.aborted).toBe(true));
    await settle();
    expect(fake.calls).toEqual(['stubborn']);
    expect(h.controller.busySince).not.toBeNull();

    release.open();
    await eventually(() => expect(fake.calls).toContain('next'));
    expect(fake.maxRunning).toBe(1);
    expect(await reconcileTotal(h.metrics, 'fake', 'error')).toBe(1);
  });
});

describe('Controller: long periods', () => {
  // Node fires a timer longer than 2^31-1 ms after 1 ms instead; the loop must not.
  it('a reconcile timeout beyond what a timer holds does not abort at once', async () => {
    const release = gate();
    const fake = new FakeReconciler('fake', async () => {
      await release.promise;
      return {};
    });
    const h = harness(fake, { reconcileTimeoutMs: 40 * 24 * 3_600_000 });
    await h.controller.start();
    h.controller.enqueue('a');
    await eventually(() => expect(fake.calls).toHaveLength(1));
    await pause(30);
    expect(fake.signals[0]?.aborted).toBe(false);
    release.open();
    await eventually(() => expect(h.reconciled).toHaveLength(1));
    expect(h.reconciled[0]?.error).toBeUndefined();
  });

  it('a resync period beyond what a timer holds does not resync at once', async () => {
    const fake = new FakeReconciler('fake');
    const h = harness(fake, { resyncKeys: ['a'], resyncMs: 40 * 24 * 3_600_000 });
    await h.controller.start();
    await eventually(() => expect(h.reconciled).toHaveLength(1));
    await pause(30);
    expect(fake.calls).toEqual(['a']);
  });
});

describe('Controller: lifecycle', () => {
  it('stop() aborts the reconcile in flight and waits for it to return', async () => {
    const release = gate();
    const fake = new FakeReconciler('fake', async () => {
      await release.promise; // ignores ctx.signal: stop must still wait
      return {};
    });
    const h = harness(fake, { resyncKeys: ['a'] });
    await h.controller.start();
    await eventually(() => expect(fake.calls).toHaveLength(1));
    expect(h.controller.busySince).not.toBeNull();

    let stopped = false;
    const stopping = h.controller.stop().then(() => (stopped = true));
    await settle();
    expect(fake.signals[0]?.aborted).toBe(true);
    expect(stopped).toBe(false);
    expect(fake.finished).toBe(0);

    release.open();
    await stopping;
    expect(fake.finished).toBe(1);
    expect(h.controller.busySince).toBeNull();
    // Interrupted by stop: neither an error line nor an error count.
    expect(h.lines().filter((l) => l.level === 'error')).toEqual([]);
    expect(await reconcileTotal(h.metrics, 'fake', 'error')).toBe(0);
  });

  it('stop() is safe to call twice, concurrently and again later, and before start()', async () => {
    const idle = harness(new FakeReconciler('idle'));
    await idle.controller.stop();
    await idle.controller.stop();

    const release = gate();
    const fake = new FakeReconciler('fake', async () => {
      await release.promise;
      return {};
    });
    const h = harness(fake, { resyncKeys: ['a'] });
    await h.controller.start();
    await eventually(() => expect(fake.calls).toHaveLength(1));
    const both = Promise.all([h.controller.stop(), h.controller.stop()]);
    release.open();
    await both;
    expect(fake.finished).toBe(1);
    await h.controller.stop();
  });

  it('takes no work after stop()', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    const fake = new FakeReconciler('fake', (_key, call) => {
      if (call === 1) throw new Error('retry me');
      return { requeueAfterMs: 10 };
    });
    const h = harness(fake, { resyncKeys: ['a'], resyncMs: 100, backoffBaseMs: 10 });
    await h.controller.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.calls).toHaveLength(1); // failed: a retry is pending
    await h.controller.stop();
    h.controller.enqueue('b');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.calls).toEqual(['a']);
  });

  it('start() twice runs one loop', async () => {
    const fake = new FakeReconciler('fake', async () => {
      await settle(1);
      return {};
    });
    const h = harness(fake, { resyncKeys: ['a', 'b', 'c'] });
    await Promise.all([h.controller.start(), h.controller.start()]);
    await h.controller.start();
    await eventually(() => expect(h.reconciled).toHaveLength(3));
    await settle();
    expect(fake.calls).toEqual(['a', 'b', 'c']);
    expect(fake.maxRunning).toBe(1);
  });

  it('can start again after stop()', async () => {
    const fake = new FakeReconciler('fake');
    const h = harness(fake, { resyncKeys: ['a'] });
    await h.controller.start();
    await eventually(() => expect(h.reconciled).toHaveLength(1));
    await h.controller.stop();
    await h.controller.start();
    await eventually(() => expect(h.reconciled).toHaveLength(2));
    expect(fake.calls).toEqual(['a', 'a']);
  });
});

describe('Controller: concurrency', () => {
  it('runs different keys at once, up to `concurrency`', async () => {
    const release = gate();
    const fake = new FakeReconciler('fake', async () => {
      await release.promise;
      return {};
    });
    const h = harness(fake, { concurrency: 2 });
    await h.controller.start();
    for (const key of ['a', 'b', 'c']) h.controller.enqueue(key);
    await eventually(() => expect(fake.running).toBe(2));
    await pause(50);
    // The third waits for a free worker.
    expect(fake.running).toBe(2);
    expect(fake.calls.sort()).toEqual(['a', 'b']);
    release.open();
    await eventually(() => expect(h.reconciled).toHaveLength(3));
    expect(fake.maxRunning).toBe(2);
  });

  it('never runs one key twice at once: enqueued while in flight, it runs again after', async () => {
    const release = gate();
    const runningKeys = new Set<string>();
    let overlap = false;
    const fake = new FakeReconciler('fake', async (key, call) => {
      if (runningKeys.has(key)) overlap = true;
      runningKeys.add(key);
      try {
        if (call === 1) await release.promise;
        return {};
      } finally {
        runningKeys.delete(key);
      }
    });
    const h = harness(fake, { concurrency: 4 });
    await h.controller.start();
    h.controller.enqueue('a');
    await eventually(() => expect(fake.running).toBe(1));
    h.controller.enqueue('a');
    h.controller.enqueue('b');
    await eventually(() => expect(h.reconciled.map((r) => r.key)).toContain('b'));
    // 'a' is queued again but waits for its first reconcile.
    expect(fake.calls.filter((k) => k === 'a')).toHaveLength(1);
    release.open();
    await eventually(() => expect(fake.calls.filter((k) => k === 'a')).toHaveLength(2));
    expect(overlap).toBe(false);
  });

  it('stop() aborts and waits for every reconcile in flight', async () => {
    const fake = new FakeReconciler('fake', (_key, _call, ctx) => new Promise<Result>((resolve) => ctx.signal.addEventListener('abort', () => setTimeout(() => resolve({}), 20))));
    const h = harness(fake, { concurrency: 3 });
    await h.controller.start();
    for (const key of ['a', 'b', 'c']) h.controller.enqueue(key);
    await eventually(() => expect(fake.running).toBe(3));
    expect(h.controller.busySince).not.toBeNull();
    await h.controller.stop();
    expect(fake.running).toBe(0);
    expect(fake.signals.every((s) => s.aborted)).toBe(true);
    expect(h.controller.busySince).toBeNull();
  });
});
