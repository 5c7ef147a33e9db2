import type { Config } from '../config.js';
import { planSweep, type Plan } from '../reconcilers/plan.js';
import type { Policy, Snapshot } from '../reconcilers/snapshot.js';
import { LABELS } from '../types.js';
import { executePlan, type ActionOutcome, type ExecutorDeps } from './executor.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** The planners' policy from the config (and `--force`). */
export function policyFromConfig(config: Config, force = false): Policy {
  return {
    controllerName: config.name,
    orphanGraceMs: config.orphanGrace,
    retainFailed: config.retainFailed,
    failedRetentionMs: config.failedRetention,
    stuckTimeoutMs: config.stuckTimeout,
    heartbeatTimeoutMs: config.heartbeatTimeout,
    maxAttempts: config.maxAttempts,
    maxDeletionsPerSweep: config.maxDeletionsPerSweep,
    guardFraction: config.deletionGuardFraction,
    guardMinContainers: config.deletionGuardMinContainers,
    force: force || config.allowMassDeletion,
  };
}

/** What one sweep saw and did. */
export interface SweepReport {
  /** What the sweep read (rollouts are discovered from it). */
  snapshot: Snapshot;
  plan: Plan;
  outcomes: ActionOutcome[];
  dryRun: boolean;
  durationMs: number;
}

/** Dependencies of a {@link Sweeper}. */
export interface SweeperDeps extends Omit<ExecutorDeps, 'logger'> {
  logger: Logger;
  policy: Policy;
  clock?: () => Date;
}

/**
 * One full sweep: read a fresh snapshot (Docker, then the rows it needs),
 * plan, apply. Reading fails loudly: a failed list or query rejects the whole
 * sweep, so nothing is removed on the strength of a missing answer.
 */
export class Sweeper {
  constructor(private deps: SweeperDeps) {}

  /** Replaces the policy (config reload); the next sweep uses it. */
  setPolicy(policy: Policy): void {
    this.deps = { ...this.deps, policy };
  }

  /** Reads desired and observed state afresh; `signal` ends the wait on a hung engine at once. */
  async snapshot(signal?: AbortSignal): Promise<Snapshot> {
    const { runtime, store, metrics, policy } = this.deps;
    const [containers, volumes] = await abortable(
      track(metrics, runtime.name, () => Promise.all([runtime.listContainers(), runtime.listVolumes()])),
      signal,
    );
    const observedIds = new Set<string>();
    for (const item of [...containers, ...volumes]) {
      const id = item.labels[LABELS.deploymentId];
      if (id) observedIds.add(id);
    }
    const desired = await abortable(
      track(metrics, 'database', () => store.loadDesired([...observedIds], policy.retainFailed)),
      signal,
    );
    return {
      now: this.deps.clock?.() ?? new Date(),
      deployments: new Map(desired.deployments.map((d) => [d.id, d])),
      containers,
      volumes,
      rollbacks: desired.rollbacks,
    };
  }

  /** Snapshot and plan, nothing applied (what `plan` and `--dry-run` show). */
  async plan(): Promise<Plan> {
    return planSweep(await this.snapshot(), this.deps.policy);
  }

  /** A whole sweep. With `dryRun`, the plan is logged and nothing is applied. */
  async sweep(options: { dryRun?: boolean; signal?: AbortSignal; logger?: Logger } = {}): Promise<SweepReport> {
    const started = performance.now();
    const logger = options.logger ?? this.deps.logger;
    const { metrics } = this.deps;
    const snapshot = await this.snapshot(options.signal);
    const plan = planSweep(snapshot, this.deps.policy);
    metrics.setDrift(plan.drift);
    if (plan.guard) {
      metrics.guardTrips.inc();
      this.deps.notify?.('guard_tripped', null, plan.guard.reason);
      logger.error({ guard: plan.guard.reason, blocked: plan.blocked.length, managed: plan.managed }, `deletion guard tripped: ${plan.guard.reason}`);
    }
    if (plan.deferred.length > 0) {
      logger.warn({ deferred: plan.deferred.length, budget: this.deps.policy.maxDeletionsPerSweep }, 'deletion budget reached; the rest waits for the next sweep');
    }
    for (const a of plan.deferred) metrics.actionsTotal.inc({ action: a.kind, result: 'deferred' });
    for (const a of plan.blocked) metrics.actionsTotal.inc({ action: a.kind, result: 'blocked' });

    let outcomes: ActionOutcome[] = [];
    if (options.dryRun) {
      for (const action of plan.actions) logger.info({ dryRun: true, action: action.kind, deploymentId: action.deploymentId, reason: action.reason }, `would ${action.kind}`);
    } else {
      outcomes = await executePlan(plan.actions, { ...this.deps, logger }, options.signal);
      const removed = outcomes.filter((o) => o.action.kind === 'remove_container' && (o.result === 'applied' || o.result === 'gone')).length;
      if (removed > 0) this.deps.notify?.('orphans_removed', null, `${removed} orphan container(s) removed`);
      metrics.setDeploymentCounts(await this.deps.store.countByStatus());
    }
    const durationMs = performance.now() - started;
    metrics.sweepDuration.observe(durationMs / 1000);
    metrics.lastSweep.set(Date.now() / 1000);
    logger.info(
      { durationMs: Math.round(durationMs), managed: plan.managed, actions: plan.actions.length, deferred: plan.deferred.length, blocked: plan.blocked.length, dryRun: !!options.dryRun },
      'sweep finished',
    );
    return { snapshot, plan, outcomes, dryRun: !!options.dryRun, durationMs };
  }
}

/** Rejects as soon as `signal` aborts (the call itself runs on to its own timeout, unobserved). */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}

/** Marks a dependency up or down by how the call went. */
async function track<T>(metrics: Metrics, dependency: string, fn: () => Promise<T>): Promise<T> {
  try {
    const result = await fn();
    metrics.up.set({ dependency }, 1);
    return result;
  } catch (err) {
    metrics.up.set({ dependency }, 0);
    throw err;
  }
}
