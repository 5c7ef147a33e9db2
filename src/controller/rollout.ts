import { hostname } from 'node:os';
import { formatDuration } from '../duration.js';
import { planRollout, progressAt, specOf, TOTAL_STEPS, type RolloutDeployment, type RolloutStep } from '../reconcilers/rollout.js';
import { ownership } from '../reconcilers/snapshot.js';
import { ImageUnavailableError, type PullProgress, type Runtime } from '../runtime/runtime.js';
import type { RolloutPatch, RolloutStore, RollbackInput } from '../store/rollouts.js';
import { toRowJson, type EventInput, type Fence, type Store } from '../store/store.js';
import { LABELS, type ContainerDetail, type Deployment, type Phase } from '../types.js';
import { runActivationHook } from './activation-hook.js';
import { createReplicas, type ContainerOptions } from './containers.js';
import type { ReconcileContext, Reconciler, Result } from './controller.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { deploymentFacts, type Notify } from './notifications.js';

/** Work-queue key of one deployment's rollout. */
export function rolloutKey(id: string): string {
  return `deployment/${id}`;
}

export const ROLLOUT_KEY_PREFIX = 'deployment/';

/** Options of {@link RolloutReconciler}. */
export interface RolloutOptions extends ContainerOptions {
  store: RolloutStore;
  /** Where event rows not tied to a row write go. */
  events: Pick<Store, 'recordEvent'>;
  runtime: Runtime;
  metrics: Metrics;
  /** This instance (the `owner` it writes). */
  me: string;
  heartbeatTimeoutMs: number;
  maxAttempts: number;
  activationHook?: readonly string[] | undefined;
  activationHookTimeoutMs: number;
  fence: () => Fence | undefined;
  mayAct: () => boolean;
  /** Asks for a sweep soon (after a failure or retirement, so containers go at once). */
  requestSweep?: () => void;
  /** Webhook notifications (active, failed, rolled_back). */
  notify?: Notify;
  /**
   * `before:<phase>` or `after:<phase>`: exit hard (SIGKILL) at that point of
   * every rollout. For crash tests only (`DEPLOYER_FAILPOINT`).
   */
  failpoint?: string | undefined;
  clock?: () => Date;
}

/** At most this many steps per reconcile before yielding to other keys. */
const MAX_STEPS = 40;

/** Parses `name/host/pid/nonce` owner ids; on this host, a dead pid means the owner is gone. */
export function ownerAlive(owner: string | null, me: string): boolean {
  if (!owner) return false;
  if (owner === me) return true;
  const parts = owner.split('/');
  const pid = Number(parts[parts.length - 2]);
  const host = parts[parts.length - 3];
  if (host !== hostname() || !Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const PHASE_EVENT: Record<Phase, string> = {
  pulling: 'Pulling',
  creating: 'Creating',
  starting: 'Starting',
  health_check: 'HealthCheck',
  activating: 'Activating',
  retiring: 'Retiring',
};

/**
 * Drives controller-executed rollouts through their phases (DESIGN.md 3.3).
 * Each pass re-reads the row and the deployment's containers, asks the pure
 * planner for the next step, applies it, and checkpoints with a
 * compare-and-set write carrying an event row. A lost compare-and-set (a
 * cancel, another instance) just means "read again".
 */
export class RolloutReconciler implements Reconciler {
  readonly name = 'rollout';

  constructor(private o: RolloutOptions) {}

  /** Changes options (config reload); the next step uses them. */
  configure(patch: Partial<RolloutOptions>): void {
    this.o = { ...this.o, ...patch };
  }

  async reconcile(ctx: ReconcileContext, key: string): Promise<Result> {
    const id = key.slice(ROLLOUT_KEY_PREFIX.length);
    const logger = ctx.logger.child({ deploymentId: id });
    for (let i = 0; i < MAX_STEPS; i++) {
      if (ctx.signal.aborted || !this.o.mayAct()) return {};
      const d = await this.o.store.load(id);
      if (!d) return {};
      const spec = specOf(d);
      const phase = d.phase ?? 'pulling';
      const needsWorld = d.status === 'deploying' && d.owner === this.o.me;
      const containers = needsWorld ? await this.containers(id) : [];
      const imagePresent = needsWorld && phase === 'pulling' && typeof spec !== 'string' ? await this.o.runtime.imageExists(spec.image) : false;
      const siblings = d.status === 'active' || d.status === 'pending' || d.status === 'deploying' ? await this.o.store.siblings(d.project, d.service) : [];
      const step = planRollout({
        now: this.o.clock?.() ?? new Date(),
        deployment: d,
        me: this.o.me,
        ownerAlive: ownerAlive(d.owner, this.o.me),
        heartbeatTimeoutMs: this.o.heartbeatTimeoutMs,
        maxAttempts: this.o.maxAttempts,
        containers,
        imagePresent,
        siblings,
      });
      if (step.kind !== 'wait' && step.kind !== 'none') logger.debug({ step }, 'rollout step');
      const result = await this.apply(d, step, siblings, logger);
      if (result) return result;
    }
    return { requeueAfterMs: 100 };
  }

  /** The deployment's containers, inspected. */
  private async containers(id: string): Promise<ContainerDetail[]> {
    const listed = await this.o.runtime.listContainers(id);
    const details: ContainerDetail[] = [];
    for (const c of listed) {
      if (ownership(c.labels, this.o.controllerName) === 'foreign') continue;
      const detail = await this.o.runtime.inspectContainer(c.id);
      if (detail && detail.labels[LABELS.deploymentId] === id) details.push(detail);
    }
    return details;
  }

  private event(d: Deployment, reason: string, message: string, type: 'Normal' | 'Warning' = 'Normal'): EventInput {
    return { deploymentId: d.id, type, reason, message, actor: this.o.me };
  }

  private async write(d: Deployment, patch: RolloutPatch, event?: EventInput, rollback?: RollbackInput): Promise<number | undefined> {
    const version = await this.o.store.write(
      d.id,
      { version: d.version, status: d.status },
      patch,
      { ...(event ? { event } : {}), ...(rollback ? { rollback } : {}) },
      this.o.fence(),
    );
    return version;
  }

  private failpoint(point: string): void {
    if (this.o.failpoint === point) process.kill(process.pid, 'SIGKILL');
  }

  /** How often a waiting rollout renews its heartbeat: well within heartbeatTimeout. */
  private heartbeatEveryMs(): number {
    return Math.max(250, Math.min(this.o.heartbeatTimeoutMs / 4, 15_000));
  }

  private count(action: string, result = 'applied'): void {
    this.o.metrics.actionsTotal.inc({ action, result });
  }

  /** Applies one step; returns a Result to end this reconcile, or undefined to plan again. */
  private async apply(d: RolloutDeployment, step: RolloutStep, siblings: readonly Deployment[], logger: Logger): Promise<Result | undefined> {
    const line = (text: string) => `[${new Date().toISOString()}] ${text}`;
    switch (step.kind) {
      case 'none':
        return {};
      case 'claim': {
        const written = await this.write(
          d,
          { status: 'deploying', phase: 'pulling', owner: this.o.me, bumpAttempts: true, markStarted: true, heartbeat: true, progress: progressAt('pulling', 'checking image'), statusReason: null, outputLine: line(`rollout started by ${this.o.me} (attempt ${d.attempts + 1})`) },
          this.event(d, 'RolloutStarted', `rollout of revision ${d.revision} started (attempt ${d.attempts + 1})`),
        );
        if (written !== undefined) {
          this.count('rollout_claim');
          logger.info({ action: 'rollout_claim', attempt: d.attempts + 1 }, 'rollout started');
          this.failpoint('before:pulling');
        }
        return undefined;
      }
      case 'resume': {
        const written = await this.write(
          d,
          { owner: this.o.me, bumpAttempts: true, heartbeat: true, outputLine: line(`resuming in phase ${d.phase ?? 'pulling'} (attempt ${d.attempts + 1}): ${step.why}`) },
          this.event(d, 'RolloutResumed', `resuming in phase ${d.phase ?? 'pulling'} (attempt ${d.attempts + 1}): ${step.why}`, 'Warning'),
        );
        if (written !== undefined) {
          this.count('rollout_resume');
          logger.warn({ action: 'rollout_resume', phase: d.phase, attempt: d.attempts + 1, why: step.why }, 'rollout resumed');
        }
        return undefined;
      }
      case 'fail':
        return this.fail(d, step.reason, siblings, logger);
      case 'supersede': {
        const written = await this.write(
          d,
          { status: 'superseded', markFinished: true, statusReason: step.reason, outputLine: line(`superseded before it served: ${step.reason}`) },
          this.event(d, 'Superseded', `superseded before it served: ${step.reason}`),
        );
        if (written === undefined) return undefined;
        this.count('supersede');
        logger.info({ action: 'supersede', reason: step.reason }, 'rollout superseded by a newer active revision');
        this.o.requestSweep?.();
        return {};
      }
      case 'advance': {
        this.failpoint(`after:${d.phase ?? 'pulling'}`);
        const written = await this.write(
          d,
          { phase: step.to, progress: progressAt(step.to, `phase ${step.to}`), heartbeat: true, outputLine: line(`phase ${step.to}`) },
          this.event(d, PHASE_EVENT[step.to], `phase ${step.to} (step ${progressAt(step.to, '').step}/${TOTAL_STEPS})`),
        );
        if (written !== undefined) {
          this.count('rollout_phase');
          logger.info({ action: 'rollout_phase', phase: step.to }, `phase ${step.to}`);
          this.failpoint(`before:${step.to}`);
        }
        return undefined;
      }
      case 'pull':
        return this.pull(d, step.image, siblings, logger);
      case 'create': {
        const spec = specOf(d);
        if (typeof spec === 'string') return undefined;
        try {
          const { created } = await createReplicas(this.o.runtime, d, spec, step.replicas, this.o);
          logger.info({ action: 'create_containers', replicas: step.replicas, created }, 'containers created');
          this.count('create_container');
        } catch (err) {
          if (err instanceof ImageUnavailableError) return this.fail(d, err.message, siblings, logger);
          throw err;
        }
        return undefined;
      }
      case 'start':
        for (const id of step.containerIds) await this.o.runtime.startContainer(id);
        this.count('start_container');
        return undefined;
      case 'wait': {
        // The heartbeat shows the rollout is alive while it waits; the message shows why. Written only
        // when the message changes or the heartbeat grows old: every write NOTIFYs, and the notice
        // wakes this rollout again at once, so writing on every wait would spin instead of waiting.
        const progress = progressAt(d.phase ?? 'pulling', step.message);
        const now = (this.o.clock?.() ?? new Date()).getTime();
        const beatAge = d.heartbeatAt ? now - d.heartbeatAt.getTime() : Number.POSITIVE_INFINITY;
        if (d.progress?.message !== progress.message || d.progress.step !== progress.step || beatAge >= this.heartbeatEveryMs()) {
          await this.write(d, { heartbeat: true, progress });
        }
        return { requeueAfterMs: step.ms };
      }
      case 'activate': {
        if (this.o.activationHook?.length) {
          const hook = await runActivationHook(this.o.activationHook, toRowJson(d), this.o.activationHookTimeoutMs);
          if (!hook.ok) return this.fail(d, hook.reason ?? 'activation hook failed', siblings, logger);
        }
        this.failpoint('after:activating');
        const written = await this.write(
          d,
          { status: 'active', phase: 'retiring', progress: progressAt('retiring', 'retiring previous revision'), heartbeat: true, outputLine: line(`revision ${d.revision} is active`) },
          this.event(d, 'Activated', `revision ${d.revision} is active`),
        );
        if (written !== undefined) {
          this.count('rollout_activate');
          logger.info({ action: 'rollout_activate', revision: d.revision }, 'revision active');
          this.o.notify?.('active', deploymentFacts({ ...d, status: 'active', phase: 'retiring' }), `${d.project}/${d.service} revision ${d.revision} is active`);
          this.failpoint('before:retiring');
        }
        return undefined;
      }
      case 'retire': {
        for (const old of step.supersede) {
          const written = await this.o.store.write(
            old.id,
            { version: old.version, status: 'active' },
            { status: 'superseded', markFinished: true, statusReason: `superseded by revision ${d.revision}`, outputLine: line(`superseded by revision ${d.revision} (${d.id})`) },
            { event: this.event(old, 'Superseded', `superseded by revision ${d.revision} (${d.id})`) },
            this.o.fence(),
          );
          if (written !== undefined) {
            this.count('supersede');
            logger.info({ action: 'supersede', superseded: old.id }, 'previous revision superseded');
          }
        }
        // Their containers go through the one removal path, the sweep's (label re-checked,
        // row re-read, one event each), asked for now rather than at the next resync.
        this.o.requestSweep?.();
        return undefined;
      }
      case 'complete': {
        this.failpoint('after:retiring');
        const written = await this.write(
          d,
          { phase: null, progress: { step: TOTAL_STEPS, total: TOTAL_STEPS, percent: 100, message: 'rollout complete' }, heartbeat: true, outputLine: line('rollout complete') },
          this.event(d, 'RolloutComplete', `revision ${d.revision} rolled out`),
        );
        if (written !== undefined) {
          this.count('rollout_complete');
          logger.info({ action: 'rollout_complete', revision: d.revision }, 'rollout complete');
          return {};
        }
        return undefined;
      }
    }
  }

  private async pull(d: RolloutDeployment, image: string, siblings: readonly Deployment[], logger: Logger): Promise<Result | undefined> {
    let version = d.version;
    let lastWrite = 0;
    let last: PullProgress | undefined;
    let pending: Promise<unknown> = Promise.resolve();
    const report = (p: PullProgress) => {
      const mb = (n: number) => (n / 1_048_576).toFixed(1);
      const message = `pulling ${image}: ${p.layersDone}/${p.layersTotal} layers, ${mb(p.bytesDone)}/${mb(p.bytesTotal)} MB`;
      pending = pending.then(async () => {
        const next = await this.o.store.write(d.id, { version, status: d.status }, { heartbeat: true, progress: progressAt('pulling', message) }, {}, this.o.fence());
        if (next !== undefined) version = next;
      });
    };
    try {
      await this.o.runtime.pullImage(image, (p) => {
        last = p;
        const now = Date.now();
        if (now - lastWrite < 1_000) return;
        lastWrite = now;
        report(p);
      });
      // The final figures, which the once-a-second throttle may have held back.
      if (last) report(last);
      await pending;
      logger.info({ action: 'pull_image', image }, 'image pulled');
      this.count('pull_image');
      return undefined;
    } catch (err) {
      await pending.catch(() => undefined);
      if (err instanceof ImageUnavailableError) {
        this.count('pull_image', 'error');
        return this.fail({ ...d, version }, err.message, siblings, logger);
      }
      throw err;
    }
  }

  /**
   * Fails the rollout. The previous active revision was never retired, so it
   * keeps serving; a `rollbacks` row records that (completed by the sweep once
   * it is confirmed healthy).
   */
  private async fail(d: Deployment, reason: string, siblings: readonly Deployment[], logger: Logger): Promise<Result | undefined> {
    const previous = [...siblings].filter((s) => s.id !== d.id && s.status === 'active').sort((a, b) => b.revision - a.revision)[0];
    const rollback: RollbackInput | undefined =
      previous && d.status === 'deploying'
        ? { project: d.project, service: d.service, fromDeploymentId: d.id, toDeploymentId: previous.id, reason: `revision ${d.revision} failed: ${reason}` }
        : undefined;
    const elapsed = d.startedAt ? ` after ${formatDuration(Date.now() - d.startedAt.getTime())}` : '';
    const written = await this.write(
      d,
      { status: 'failed', markFinished: true, statusReason: reason, outputLine: `[${new Date().toISOString()}] failed${elapsed}: ${reason}` },
      this.event(d, 'RolloutFailed', reason, 'Warning'),
      rollback,
    );
    if (written === undefined) return undefined;
    this.count('rollout_fail');
    logger.warn({ action: 'rollout_fail', reason, rollbackTo: previous?.id }, `rollout failed: ${reason}`);
    const facts = deploymentFacts({ ...d, status: 'failed', statusReason: reason });
    this.o.notify?.('failed', facts, `${d.project}/${d.service} revision ${d.revision} failed: ${reason}`);
    if (rollback && previous) {
      this.o.notify?.('rolled_back', facts, `${d.project}/${d.service} rolled back to revision ${previous.revision}: ${reason}`);
    }
    this.o.requestSweep?.();
    return {};
  }
}
