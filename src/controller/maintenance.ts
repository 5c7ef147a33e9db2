import cron, { type ScheduledTask } from 'node-cron';
import type { Kysely } from 'kysely';
import { pruneEvents } from '../store/maintenance.js';
import type { Database } from '../store/schema.js';
import type { Fence } from '../store/store.js';
import type { Runnable } from './controller.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** Options of {@link Maintenance}. */
export interface MaintenanceOptions {
  db: Kysely<Database>;
  /** node-cron expression (config `maintenanceSchedule`). */
  schedule: string;
  eventRetentionMs: number;
  logger: Logger;
  metrics: Metrics;
  /** The leader's fence; maintenance runs only on the leader. */
  fence: () => Fence | undefined;
}

/**
 * The slower housekeeping the seeds ran from cron, on `maintenanceSchedule`:
 * pruning `deployment_events` older than `eventRetention`. (Expiring retained
 * failed deployments and removing their volumes happen in every sweep, so a
 * missed cron tick never delays them.) Runs beside the reconcile loop, which
 * never waits for it; overlapping runs are skipped.
 */
export class Maintenance implements Runnable {
  private task: ScheduledTask | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly options: MaintenanceOptions) {}

  /** One housekeeping pass; returns the number of events pruned (0 when not leader). */
  async runOnce(): Promise<number> {
    const fence = this.options.fence();
    if (!fence) return 0;
    const pruned = await pruneEvents(this.options.db, this.options.eventRetentionMs, fence);
    this.options.metrics.actionsTotal.inc({ action: 'prune_events', result: 'applied' }, pruned);
    this.options.logger.info({ action: 'prune_events', pruned }, 'maintenance finished');
    return pruned;
  }

  start(): Promise<void> {
    if (this.task) return Promise.resolve();
    this.task = cron.schedule(
      this.options.schedule,
      async () => {
        this.running = this.runOnce().catch((err: unknown) => {
          this.options.metrics.actionsTotal.inc({ action: 'prune_events', result: 'error' });
          this.options.logger.error({ err }, 'maintenance failed');
        });
        await this.running;
      },
      { name: 'deployer-maintenance', noOverlap: true },
    );
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    const task = this.task;
    this.task = undefined;
    if (!task) return;
    await task.destroy();
    await this.running;
  }
}
