import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Config } from '../config.js';
import { DockerRuntime } from '../runtime/docker.js';
import type { EventSubscription, Runtime } from '../runtime/runtime.js';
import { migrateUp } from '../store/migrate.js';
import { DeploymentListener } from '../store/listen.js';
import type { OpenDatabase } from '../store/open.js';
import { PgRolloutStore } from '../store/rollouts.js';
import { CONTROLLER_EXECUTOR, type Deployment } from '../types.js';
import type { ContainerOptions } from './containers.js';
import { Controller, type Reconciler, type Runnable } from './controller.js';
import { HttpServer } from './http.js';
import { LeaderElector } from './leader.js';
import type { Logger } from './logger.js';
import { Maintenance } from './maintenance.js';
import { Metrics } from './metrics.js';
import { deploymentFacts, Notifier, type Notify } from './notifications.js';
import { ROLLOUT_KEY_PREFIX, RolloutReconciler, rolloutKey } from './rollout.js';
import { policyFromConfig, Sweeper, type SweepReport } from './sweep.js';

/** Name of the leader lease row. */
export const LEADER_LEASE = 'deployer-controller';
/** The work-queue key of a full sweep. */
export const SWEEP_KEY = 'sweep';

export interface DaemonOptions {
  config: Config;
  logger: Logger;
  database: OpenDatabase;
  /** Defaults to Docker at `config.dockerHost`. */
  runtime?: Runtime;
  metrics?: Metrics;
  dryRun?: boolean;
  force?: boolean;
  /** Serve HTTP (off for `--once`). */
  http?: boolean;
  /** Crash-test failpoint (`DEPLOYER_FAILPOINT`): `before:<phase>` or `after:<phase>`. */
  failpoint?: string | undefined;
}

/** Container events after which a sweep should look for missing replicas. */
const CONTAINER_GONE = new Set(['die', 'destroy', 'kill', 'oom', 'stop']);

/** Does this deployment need the rollout reconciler's attention? */
export function needsRollout(d: Deployment): boolean {
  if (d.executor !== CONTROLLER_EXECUTOR) return false;
  return d.status === 'pending' || d.status === 'deploying' || (d.status === 'active' && d.phase === 'retiring');
}

/** This instance's identity in leases, `owner` and event rows. */
export function instanceId(config: Config): string {
  return `${config.name}/${hostname()}/${process.pid}/${randomBytes(3).toString('hex')}`;
}

/**
 * The daemon: leader election, the sweep loop and the HTTP endpoints, started
 * in that order and stopped in reverse. Runs against an already migrated
 * database (see {@link prepareDatabase}).
 */
export class Daemon implements Runnable {
  readonly metrics: Metrics;
  readonly runtime: Runtime;
  readonly sweeper: Sweeper;
  readonly elector: LeaderElector | undefined;
  readonly controller: Controller;
  readonly rollouts: RolloutReconciler;
  readonly http: HttpServer | undefined;
  private readonly listener: DeploymentListener | undefined;
  private maintenance: Maintenance | undefined;
  private events: EventSubscription | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private notifier: Notifier;
  private config: Config;
  private readonly reconcileTimeoutMs: number;
  readonly instance: string;
  private lastSweepAt: number | null = null;
  private startPromise: Promise<void> | undefined;
  private stopPromise: Promise<void> | undefined;
  private firstSweep: Promise<void>;
  private resolveFirstSweep!: () => void;
  /** Set once the caller has told systemd READY=1 (see `announcedReady`). */
  private readyAnnounced = false;

  constructor(private readonly options: DaemonOptions) {
    const { config, logger, database } = options;
    this.config = config;
    this.instance = instanceId(config);
    this.metrics = options.metrics ?? new Metrics();
    this.runtime =
      options.runtime ??
      new DockerRuntime({
        ...(config.dockerHost ? { dockerHost: config.dockerHost } : {}),
        timeoutMs: config.runtimeTimeout,
        observe: (op, seconds) => this.metrics.runtimeRequestDuration.observe({ op }, seconds),
      });
    this.firstSweep = new Promise((resolve) => (this.resolveFirstSweep = resolve));
    this.notifier = new Notifier(options.dryRun ? undefined : config.notifications?.webhooks, { logger, metrics: this.metrics });
    const notify: Notify = (event, deployment, message) => this.notifier.notify(event, deployment, message);
    this.elector = options.dryRun
      ? undefined
      : new LeaderElector({
          db: database.db,
          lease: LEADER_LEASE,
          holder: this.instance,
          ttlMs: config.leaseDuration,
          logger,
          metrics: this.metrics,
          onElected: () => this.controller.enqueue(SWEEP_KEY),
        });
    const containers: ContainerOptions = { controllerName: config.name, networkMode: config.containerNetwork };
    const rolloutStore = new PgRolloutStore(database.db);
    this.sweeper = new Sweeper({
      heal: { rollouts: rolloutStore, containers },
      notify,
      store: database.store,
      runtime: this.runtime,
      logger,
      metrics: this.metrics,
      actor: this.instance,
      controllerName: config.name,
      policy: policyFromConfig(config, options.force),
      fence: () => this.elector?.writeFence(),
      mayAct: () => this.elector?.isLeader() ?? false,
    });
    const sweepReconciler: Reconciler = {
      name: 'sweep',
      reconcile: async (ctx) => {
        if (this.elector && !this.elector.isLeader()) {
          // A standby is ready once it can reach both engines. It reports the
          // rows by status (one query) and no drift: it does not sweep.
          const [counts] = await Promise.all([database.store.countByStatus(), this.runtime.ping()]);
          this.metrics.setDrift({});
          this.metrics.setDeploymentCounts(counts);
          this.resolveFirstSweep();
          ctx.logger.debug('not leader; sweep skipped');
          return {};
        }
        // Watchdog test: once readiness was announced, a sweep that never yields
        // again. (Blocking any earlier could swallow READY=1 itself: a sweep
        // queued during the first one starts before the caller's notify runs.)
        if (options.failpoint === 'block:sweep' && this.readyAnnounced) for (;;);
        const report = await this.sweeper.sweep({ dryRun: !!options.dryRun, signal: ctx.signal, logger: ctx.logger });
        this.lastSweepAt = Date.now();
        this.resolveFirstSweep();
        if (!options.dryRun) {
          for (const d of report.snapshot.deployments.values()) if (needsRollout(d)) this.controller.enqueue(rolloutKey(d.id));
        }
        return {};
      },
    };
    this.rollouts = new RolloutReconciler({
      ...containers,
      store: rolloutStore,
      events: database.store,
      runtime: this.runtime,
      metrics: this.metrics,
      me: this.instance,
      heartbeatTimeoutMs: config.heartbeatTimeout,
      maxAttempts: config.maxAttempts,
      activationHook: config.activationHook,
      activationHookTimeoutMs: config.activationHookTimeout,
      fence: () => this.elector?.writeFence(),
      mayAct: () => this.elector?.isLeader() ?? false,
      requestSweep: () => this.controller.enqueue(SWEEP_KEY),
      notify,
      failpoint: options.failpoint,
    });
    if (!options.dryRun) {
      this.listener = new DeploymentListener({
        connectionString: database.url,
        onNotice: (notice) => {
          if (!this.elector?.isLeader()) return;
          if (notice.status === 'pending' || notice.status === 'deploying' || notice.status === 'active') this.controller.enqueue(rolloutKey(notice.id));
          else this.controller.enqueue(SWEEP_KEY);
          if (notice.status === 'cancelled') void this.announceCancel(notice.id);
        },
        onConnected: () => this.controller.enqueue(SWEEP_KEY),
        onError: (err, retryInMs) => logger.warn({ err, retryInMs }, 'LISTEN connection lost; reconnecting'),
      });
      this.maintenance = this.makeMaintenance(config);
    }
    const reconcileTimeoutMs = Math.max(60_000, config.resync * 4);
    this.reconcileTimeoutMs = reconcileTimeoutMs;
    this.controller = new Controller({
      logger,
      metrics: this.metrics,
      route: (key) => (key.startsWith(ROLLOUT_KEY_PREFIX) ? this.rollouts : sweepReconciler),
      resyncKeys: [SWEEP_KEY],
      resyncMs: config.resync,
      reconcileTimeoutMs,
      concurrency: config.maxConcurrentReconciles,
    });
    const startedAt = Date.now();
    this.http = options.http
      ? new HttpServer(config.metricsAddress, this.metrics, {
          pingDatabase: () => database.store.ping(),
          pingRuntime: () => this.runtime.ping(),
          leader: () => ({ status: this.elector?.isLeader() ? 'leader' : 'follower', holder: this.instance }),
          lastSweepAgeSeconds: () => (this.lastSweepAt === null ? (Date.now() - startedAt) / 1000 : (Date.now() - this.lastSweepAt) / 1000),
          loopAlive: () => this.loopAlive(),
          staleAfterSeconds: () => (this.config.resync * 3) / 1000,
        })
      : undefined;
  }

  private makeMaintenance(config: Config): Maintenance {
    return new Maintenance({
      db: this.options.database.db,
      schedule: config.maintenanceSchedule,
      eventRetentionMs: config.eventRetention,
      logger: this.options.logger,
      metrics: this.metrics,
      // Undefined on a follower, so that it skips the pass (Maintenance's own rule) rather than run it fenced out.
      fence: () => (this.elector?.isLeader() ? this.elector.writeFence() : undefined),
    });
  }

  /** A cancel made elsewhere (CLI, psql, the platform), seen through NOTIFY: tell the webhooks. */
  private async announceCancel(id: string): Promise<void> {
    try {
      const row = await this.options.database.store.getDeployment(id);
      if (row?.status === 'cancelled') this.notifier.notify('cancelled', deploymentFacts(row), `${row.project}/${row.service} revision ${row.revision} cancelled${row.statusReason ? `: ${row.statusReason}` : ''}`);
    } catch (err) {
      this.options.logger.warn({ err, deploymentId: id }, 'could not read the cancelled deployment for its notification');
    }
  }

  /** Pings Postgres and the runtime and records `deployer_up`. */
  private async probe(): Promise<void> {
    const check = async (dependency: string, ping: () => Promise<number>) => {
      try {
        await ping();
        this.metrics.up.set({ dependency }, 1);
      } catch {
        this.metrics.up.set({ dependency }, 0);
      }
    };
    await Promise.all([check('database', () => this.options.database.store.ping()), check(this.runtime.name, () => this.runtime.ping())]);
  }

  /** False when a reconcile has been running past its own timeout (the loop is stuck). */
  loopAlive(): boolean {
    const since = this.controller.busySince;
    return since === null || Date.now() - since < this.reconcileTimeoutMs + 30_000;
  }

  /**
   * Applies a reloaded config (SIGHUP) to what can change while running:
   * the planners' policy, rollout options, the resync period, the log level,
   * maintenance. Returns the changed keys that need a restart to apply.
   */
  async reload(next: Config): Promise<string[]> {
    const before = this.config;
    // Built first: a webhook secret file that cannot be read refuses the whole reload.
    const fresh =
      JSON.stringify(before.notifications) !== JSON.stringify(next.notifications) && !this.options.dryRun
        ? new Notifier(next.notifications?.webhooks, { logger: this.options.logger, metrics: this.metrics })
        : undefined;
    this.config = next;
    this.sweeper.setPolicy(policyFromConfig(next, this.options.force));
    this.rollouts.configure({
      heartbeatTimeoutMs: next.heartbeatTimeout,
      maxAttempts: next.maxAttempts,
      activationHook: next.activationHook,
      activationHookTimeoutMs: next.activationHookTimeout,
      networkMode: next.containerNetwork,
    });
    this.controller.setResync(next.resync);
    this.options.logger.level = next.logLevel;
    if (this.maintenance && (before.maintenanceSchedule !== next.maintenanceSchedule || before.eventRetention !== next.eventRetention)) {
      await this.maintenance.stop();
      this.maintenance = this.makeMaintenance(next);
      if (this.startPromise) await this.maintenance.start();
    }
    if (fresh) {
      const old = this.notifier;
      this.notifier = fresh;
      if (this.startPromise) await fresh.start();
      await old.stop();
    }
    const restartOnly = ['name', 'databaseUrl', 'dockerHost', 'stateDir', 'metricsAddress', 'leaseDuration', 'runtimeTimeout'] as const;
    return restartOnly.filter((key) => before[key] !== next[key]);
  }

  /** Resolves after the first completed sweep (for readiness). */
  firstSweepDone(): Promise<void> {
    return this.firstSweep;
  }

  /** Called once READY=1 has been sent, so that later sweeps know the service manager saw it. */
  announcedReady(): void {
    this.readyAnnounced = true;
  }

  start(): Promise<void> {
    this.startPromise ??= (async () => {
      await this.notifier.start();
      await this.http?.start();
      await this.elector?.start();
      await this.controller.start();
      await this.listener?.start();
      await this.maintenance?.start();
      // Every instance, leader or not, keeps deployer_up current (sweeps only run on the leader).
      const probe = () => void this.probe();
      probe();
      this.probeTimer = setInterval(probe, Math.min(this.config.resync, 15_000));
      this.probeTimer.unref();
      if (!this.options.dryRun) {
        this.events = this.runtime.watchEvents?.(
          (event) => {
            if (!this.elector?.isLeader()) return;
            // Health changes move a rollout on; deaths and removals call for self-heal.
            this.controller.enqueue(rolloutKey(event.deploymentId));
            if (CONTAINER_GONE.has(event.action)) this.controller.enqueue(SWEEP_KEY);
          },
          (err, retryInMs) => this.options.logger.warn({ err, retryInMs }, 'docker event stream lost; reconnecting'),
        );
      }
      this.options.logger.info(
        { instance: this.instance, database: this.options.database.description, metricsAddress: this.http ? this.options.config.metricsAddress : undefined, dryRun: !!this.options.dryRun },
        'deployer-controller started',
      );
    })();
    return this.startPromise;
  }

  stop(): Promise<void> {
    this.stopPromise ??= (async () => {
      await this.startPromise?.catch(() => undefined);
      clearInterval(this.probeTimer);
      this.events?.close();
      await this.maintenance?.stop();
      await this.listener?.stop();
      await this.controller.stop();
      await this.elector?.stop();
      await this.http?.stop();
      await this.notifier.stop();
      this.options.logger.info('deployer-controller stopped');
    })();
    return this.stopPromise;
  }

  /**
   * One sweep outside the loop (`run --once`): takes the lease for it unless
   * dry-running, and fails when another instance leads.
   */
  async sweepOnce(): Promise<SweepReport> {
    if (this.elector && !(await this.elector.tryAcquire())) {
      throw new Error('another deployer-controller instance holds the leader lease; not sweeping');
    }
    try {
      return await this.sweeper.sweep({ dryRun: !!this.options.dryRun });
    } finally {
      await this.elector?.stop();
    }
  }
}

/**
 * Waits for the database to answer, then applies the shipped migrations.
 * Retries with backoff until `signal` aborts: a database that is down at
 * start delays the daemon instead of killing it.
 */
export async function prepareDatabase(database: OpenDatabase, logger: Logger, signal?: AbortSignal, retry = true): Promise<void> {
  let delay = 500;
  for (;;) {
    try {
      const results = await migrateUp(database.db);
      for (const r of results) logger.info({ migration: r.migrationName, status: r.status }, 'migration applied');
      return;
    } catch (err) {
      if (!retry || signal?.aborted || !isConnectionError(err)) throw err;
      logger.warn({ err, retryInMs: delay }, 'database not ready; retrying');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  }
}

/** Errors that mean "the database is not reachable (yet)", as opposed to a broken migration. */
function isConnectionError(err: unknown): boolean {
  for (let e: unknown = err; e; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (/^E[A-Z]+$/.test(code) || code.startsWith('08') || code === '57P03')) return true;
    if (e instanceof Error && /Connection terminated|timeout exceeded when trying to connect/i.test(e.message)) return true;
  }
  return false;
}
