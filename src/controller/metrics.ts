import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { DRIFT_KINDS, type Drift } from '../reconcilers/plan.js';
import { DEPLOYMENT_STATUSES, type DeploymentStatus } from '../types.js';
import { NOTIFICATION_EVENTS, NOTIFICATION_RESULTS } from './notifications.js';

/**
 * The daemon's metrics (DESIGN.md 3.6), on a registry of their own so that
 * tests can build several. No deployment ids as label values.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly reconcileTotal = new Counter({
    name: 'deployer_reconcile_total',
    help: 'Reconciles run, by reconciler and result (success, error, requeue, skipped).',
    labelNames: ['reconciler', 'result'] as const,
    registers: [this.registry],
  });
  readonly reconcileDuration = new Histogram({
    name: 'deployer_reconcile_duration_seconds',
    help: 'Duration of one reconcile.',
    labelNames: ['reconciler'] as const,
    buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly sweepDuration = new Histogram({
    name: 'deployer_sweep_duration_seconds',
    help: 'Duration of one full sweep (snapshot, plan, apply).',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly lastSweep = new Gauge({
    name: 'deployer_last_sweep_timestamp_seconds',
    help: 'Unix time of the last sweep that completed.',
    registers: [this.registry],
  });
  readonly drift = new Gauge({
    name: 'deployer_drift',
    help: 'Drift found by the last sweep, by kind (0 on a follower, which does not sweep).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly actionsTotal = new Counter({
    name: 'deployer_actions_total',
    help: 'Actions applied, by action and result (applied, gone, skipped, conflict, error, deferred, blocked).',
    labelNames: ['action', 'result'] as const,
    registers: [this.registry],
  });
  readonly deployments = new Gauge({
    name: 'deployer_deployments',
    help: 'Deployment rows by status.',
    labelNames: ['status'] as const,
    registers: [this.registry],
  });
  readonly workqueueDepth = new Gauge({
    name: 'deployer_workqueue_depth',
    help: 'Keys waiting in the work queue.',
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'deployer_leader',
    help: '1 when this instance holds the leader lease.',
    registers: [this.registry],
  });
  readonly runtimeRequestDuration = new Histogram({
    name: 'deployer_runtime_request_duration_seconds',
    help: 'Duration of container runtime calls, by operation.',
    labelNames: ['op'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly up = new Gauge({
    name: 'deployer_up',
    help: '1 when the dependency answered at the last check.',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });
  readonly guardTrips = new Counter({
    name: 'deployer_deletion_guard_trips_total',
    help: 'Sweeps whose deletions the mass-deletion guard refused.',
    registers: [this.registry],
  });

  readonly notificationsTotal = new Counter({
    name: 'deployer_notifications_total',
    help: 'Webhook deliveries by event and result: delivered (2xx), retried (an attempt failed, another is scheduled), dropped (given up: tries exhausted, evicted from a full queue, or abandoned at stop).',
    labelNames: ['event', 'result'] as const,
    registers: [this.registry],
  });
  readonly notificationsQueueDepth = new Gauge({
    name: 'deployer_notifications_queue_depth',
    help: 'Webhook deliveries waiting to be sent or retried (not counting those in flight).',
    registers: [this.registry],
  });

  constructor(options: { processMetrics?: boolean } = {}) {
    // Zero series from the start, so rate() and increase() see the first drop.
    for (const event of NOTIFICATION_EVENTS) {
      for (const result of NOTIFICATION_RESULTS) this.notificationsTotal.inc({ event, result }, 0);
    }
    if (options.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry });
      // Gauges named like counters: `promtool check metrics` rejects them, and they add little.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        this.registry.removeSingleMetric(name);
      }
    }
    this.setDrift({});
    this.leader.set(0);
  }

  /**
   * `deployer_drift` from a sweep's count; kinds not given read 0 (`{}` at
   * start, and on a follower, whose last sweep as leader is no longer news).
   */
  setDrift(drift: Partial<Drift>): void {
    for (const kind of DRIFT_KINDS) this.drift.set({ kind }, drift[kind] ?? 0);
  }

  /** `deployer_deployments` from a count by status; statuses with no rows read 0. */
  setDeploymentCounts(counts: Partial<Record<DeploymentStatus, number>>): void {
    for (const status of DEPLOYMENT_STATUSES) this.deployments.set({ status }, counts[status] ?? 0);
  }
}
