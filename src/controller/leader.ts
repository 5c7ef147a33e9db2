import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.js';
import { acquireLease, releaseLease, type HeldLease } from '../store/leases.js';
import type { Fence } from '../store/store.js';
import type { Runnable } from './controller.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';

/** Options of {@link LeaderElector}. */
export interface LeaderOptions {
  db: Kysely<Database>;
  lease: string;
  holder: string;
  ttlMs: number;
  logger: Logger;
  metrics: Metrics;
  /** Called when leadership is gained (to sweep at once). */
  onElected?: () => void;
}

/**
 * Leader election over a lease row with a fencing epoch (DESIGN.md principle 6).
 * Renews every third of the lease; counts itself leader only until a margin
 * before the deadline the database gave, so a paused process that wakes up
 * late stops acting before anyone else can take over.
 */
export class LeaderElector implements Runnable {
  private held: HeldLease | undefined;
  private lastEpoch = 0;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private renewing: Promise<void> | undefined;

  constructor(private readonly options: LeaderOptions) {}

  /** The fence for writes, while leadership holds. */
  /**
   * The fence for writes, while leadership holds. The fence of {@link writeFence}
   * is what writes carry: it never comes back undefined, so a write that starts
   * just after leadership lapsed is still conditional (and refused).
   */
  fence(): Fence | undefined {
    if (!this.isLeader()) return undefined;
    return { lease: this.options.lease, holder: this.options.holder, epoch: this.held!.epoch };
  }

  /** The last epoch held (or 0, which no lease has): writes under it succeed only while it is current. */
  writeFence(): Fence {
    return { lease: this.options.lease, holder: this.options.holder, epoch: this.lastEpoch };
  }

  isLeader(): boolean {
    const margin = this.options.ttlMs / 5;
    return !!this.held && Date.now() < this.held.expiresAt.getTime() - margin;
  }

  /** One attempt to take or renew the lease. Database errors count as "not leader". */
  async tryAcquire(): Promise<boolean> {
    const was = this.isLeader();
    try {
      this.held = await acquireLease(this.options.db, this.options.lease, this.options.holder, this.options.ttlMs);
      if (this.held) this.lastEpoch = this.held.epoch;
    } catch (err) {
      if (this.held && !this.isLeader()) this.held = undefined;
      this.options.logger.warn({ err }, 'lease renewal failed');
    }
    const now = this.isLeader();
    this.options.metrics.leader.set(now ? 1 : 0);
    if (now && !was) {
      this.options.logger.info({ epoch: this.held?.epoch, holder: this.options.holder }, 'became leader');
      this.options.onElected?.();
    } else if (!now && was) {
      this.options.logger.warn({ holder: this.options.holder }, 'lost leadership');
    }
    return now;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const tick = () => {
      this.renewing = this.tryAcquire().then(() => undefined);
    };
    tick();
    this.timer = setInterval(tick, Math.max(100, Math.floor(this.options.ttlMs / 3)));
    await this.renewing;
  }

  /**
   * Stops renewing and gives the lease up. Also releases a lease taken with
   * {@link tryAcquire} alone (`run --once`), which was never started.
   */
  async stop(): Promise<void> {
    this.started = false;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.renewing;
    if (this.held) {
      await releaseLease(this.options.db, this.options.lease, this.options.holder).catch(() => undefined);
      this.held = undefined;
      this.options.metrics.leader.set(0);
    }
  }
}
