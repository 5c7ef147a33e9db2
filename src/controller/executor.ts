import { specOf } from '../reconcilers/rollout.js';
import type { RolloutStore } from '../store/rollouts.js';
import { LABELS } from '../types.js';
import { createReplicas, type ContainerOptions } from './containers.js';
import type { Action, ActionKind } from '../reconcilers/snapshot.js';
import { ownership } from '../reconcilers/snapshot.js';
import { RuntimeError, type Runtime } from '../runtime/runtime.js';
import type { EventInput, Fence, Store } from '../store/store.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { deploymentFacts, type Notify } from './notifications.js';

/** How one action ended. */
export const ACTION_RESULTS = ['applied', 'gone', 'skipped', 'conflict', 'error', 'aborted'] as const;
export type ActionResult = (typeof ACTION_RESULTS)[number];

export interface ActionOutcome {
  action: Action;
  result: ActionResult;
  detail?: string;
}

/** What the executor needs; passed in, never imported. */
export interface ExecutorDeps {
  store: Store;
  runtime: Runtime;
  logger: Logger;
  metrics: Metrics;
  /** Who acts, for event rows (the controller instance). */
  actor: string;
  controllerName: string;
  /** The leader's fence, or undefined when writes need none (`--once` holds the lease itself). */
  fence: () => Fence | undefined;
  /** Checked before every destructive step: a deposed leader stops at once. */
  mayAct: () => boolean;
  /** Webhook notifications (zombie). */
  notify?: Notify;
  /** For self-heal: where specs are read, and how containers are made. Without it, recreate actions are skipped. */
  heal?: { rollouts: RolloutStore; containers: ContainerOptions };
}

/** Stops the rest of the sweep's work. */
class Abort extends Error {}

const SUCCESS_LOG: Record<ActionKind, string> = {
  remove_container: 'removed orphan container',
  stop_container: 'stopped retained container',
  remove_volume: 'removed orphan volume',
  mark_failed: 'marked zombie failed',
  recreate_replica: 'recreated replica',
  finish_rollback: 'settled rollback',
};

/**
 * Applies a plan action by action. Each applied action gets one
 * `deployment_events` row, one log line and one count. Before a deletion the
 * world is read again: the container must still carry our label for the
 * same deployment, and the row must still be absent (unknown) or still in
 * the status that condemned it. An engine or database error stops the rest
 * of the sweep's work: it is never read as "nothing there".
 */
export async function executePlan(actions: readonly Action[], deps: ExecutorDeps, signal?: AbortSignal): Promise<ActionOutcome[]> {
  const outcomes: ActionOutcome[] = [];
  let aborted: string | undefined;
  for (const action of actions) {
    if (!aborted && signal?.aborted) aborted = 'stopping';
    if (!aborted && !deps.mayAct()) aborted = 'leadership lost';
    if (aborted) {
      outcomes.push({ action, result: 'aborted', detail: aborted });
      deps.metrics.actionsTotal.inc({ action: action.kind, result: 'aborted' });
      continue;
    }
    let outcome: ActionOutcome;
    try {
      outcome = await apply(action, deps);
    } catch (err) {
      outcome = { action, result: 'error', detail: (err as Error).message };
      deps.logger.error({ err, action: action.kind, deploymentId: action.deploymentId }, `action ${action.kind} failed; stopping this sweep's remaining actions`);
      aborted = err instanceof RuntimeError ? 'container runtime error' : 'database error';
      if (err instanceof Abort) aborted = err.message;
    }
    outcomes.push(outcome);
    deps.metrics.actionsTotal.inc({ action: action.kind, result: outcome.result });
    if (outcome.result !== 'error') {
      const fields = { action: action.kind, deploymentId: action.deploymentId, result: outcome.result, reason: action.reason, detail: outcome.detail, ...subject(action) };
      if (outcome.result === 'applied' || outcome.result === 'gone') deps.logger.info(fields, SUCCESS_LOG[action.kind]);
      else deps.logger.warn(fields, `${action.kind} skipped`);
    }
  }
  return outcomes;
}

function subject(action: Action): Record<string, string> {
  switch (action.kind) {
    case 'remove_container':
    case 'stop_container':
      return { containerId: action.containerId, container: action.containerName };
    case 'remove_volume':
      return { volume: action.volumeName };
    case 'mark_failed':
      return {};
    case 'recreate_replica':
      return { replica: String(action.replica), ...(action.replaceContainerName ? { container: action.replaceContainerName } : {}) };
    case 'finish_rollback':
      return { rollbackId: action.rollbackId, status: action.status };
  }
}

async function record(deps: ExecutorDeps, event: Omit<EventInput, 'actor'>): Promise<void> {
  const written = await deps.store.recordEvent({ ...event, actor: deps.actor }, deps.fence());
  if (!written) throw new Abort('leadership lost (event refused by fence)');
}

/** Re-reads the row: is the deletion still right? Returns why not, or undefined. */
async function stillCondemned(action: Extract<Action, { cause: string }>, deps: ExecutorDeps): Promise<string | undefined> {
  if (action.kind === 'mark_failed') return undefined;
  const row = await deps.store.getDeployment(action.deploymentId);
  if (action.cause === 'unknown') return row ? `deployment row ${action.deploymentId} now exists` : undefined;
  if (!row) return undefined;
  return row.status === action.cause ? undefined : `deployment is now ${row.status}`;
}

/** True when the row is still at the version and status the action was planned on. */
async function unchanged(action: Extract<Action, { kind: 'mark_failed' }>, deps: ExecutorDeps): Promise<boolean> {
  const row = await deps.store.getDeployment(action.deploymentId);
  return !!row && row.version === action.expectVersion && row.status === action.expectStatus;
}

/** Self-heal one replica: re-read the row, replace a dead container, create and start a new one. */
async function recreate(action: Extract<Action, { kind: 'recreate_replica' }>, deps: ExecutorDeps): Promise<ActionOutcome> {
  if (!deps.heal) return { action, result: 'skipped', detail: 'self-heal not enabled' };
  const row = await deps.heal.rollouts.load(action.deploymentId);
  if (!row || row.status !== 'active' || row.phase !== null) return { action, result: 'skipped', detail: `deployment is now ${row?.status ?? 'gone'}` };
  const spec = specOf(row);
  if (typeof spec === 'string') return { action, result: 'skipped', detail: spec };
  if (action.replaceContainerId) {
    const old = await deps.runtime.inspectContainer(action.replaceContainerId);
    if (old) {
      if (old.labels[LABELS.deploymentId] !== action.deploymentId || ownership(old.labels, deps.controllerName) === 'foreign') {
        return { action, result: 'skipped', detail: 'container labels no longer match' };
      }
      if (old.state === 'running' || old.state === 'restarting') return { action, result: 'skipped', detail: `container is ${old.state} again` };
      await deps.runtime.removeContainer(old.id);
    }
  }
  const { ids } = await createReplicas(deps.runtime, row, spec, [action.replica], deps.heal.containers);
  for (const id of ids) await deps.runtime.startContainer(id);
  await record(deps, { deploymentId: action.deploymentId, type: 'Warning', reason: 'SelfHealed', message: `recreated replica ${action.replica}: ${action.reason}` });
  return { action, result: 'applied' };
}

async function apply(action: Action, deps: ExecutorDeps): Promise<ActionOutcome> {
  switch (action.kind) {
    case 'finish_rollback': {
      const completed = action.status === 'completed';
      const ok = await deps.store.finishRollback(
        action.rollbackId,
        action.status,
        action.reason,
        {
          deploymentId: action.deploymentId,
          type: completed ? 'Normal' : 'Warning',
          reason: completed ? 'RollbackCompleted' : 'RollbackFailed',
          message: `rollback ${action.rollbackId} ${action.status}: ${action.reason}`,
          actor: deps.actor,
        },
        deps.fence(),
      );
      return ok ? { action, result: 'applied' } : { action, result: 'conflict', detail: 'rollback already settled' };
    }
    case 'recreate_replica':
      return recreate(action, deps);
    case 'mark_failed': {
      const fence = deps.fence();
      const ok = await deps.store.transition(
        {
          id: action.deploymentId,
          expectVersion: action.expectVersion,
          expectStatus: action.expectStatus,
          status: 'failed',
          reason: action.reason,
          outputLine: `[deployer-controller] ${action.reason}`,
          event: { deploymentId: action.deploymentId, type: 'Warning', reason: 'ZombieFailed', message: action.reason, actor: deps.actor },
        },
        fence,
      );
      if (ok) {
        const row = await deps.store.getDeployment(action.deploymentId);
        if (row) deps.notify?.('zombie', deploymentFacts(row), `zombie marked failed: ${action.reason}`);
        return { action, result: 'applied' };
      }
      // Refused with the row as read: the fence, not the row, said no. A deposed leader stops here,
      // before it removes anything it could no longer record.
      if (fence && (await unchanged(action, deps))) throw new Abort('leadership lost (status change refused by fence)');
      return { action, result: 'conflict', detail: 'row changed since it was read' };
    }
    case 'remove_container':
    case 'stop_container': {
      const fresh = await deps.runtime.inspectContainer(action.containerId);
      if (fresh) {
        const labelled = fresh.labels[LABELS.deploymentId];
        if (labelled !== action.deploymentId || ownership(fresh.labels, deps.controllerName) === 'foreign') {
          return { action, result: 'skipped', detail: 'container labels no longer match' };
        }
      }
      if (action.kind === 'stop_container') {
        if (!fresh) return { action, result: 'gone' };
        await deps.runtime.stopContainer(action.containerId);
        await record(deps, { deploymentId: action.deploymentId, type: 'Normal', reason: 'RetainedContainerStopped', message: `stopped container ${action.containerName}: ${action.reason}` });
        return { action, result: 'applied' };
      }
      const veto = await stillCondemned(action, deps);
      if (veto) return { action, result: 'skipped', detail: veto };
      const outcome = fresh ? await deps.runtime.removeContainer(action.containerId) : 'gone';
      const suffix = outcome === 'gone' ? ' (already gone)' : '';
      await record(deps, { deploymentId: action.deploymentId, type: 'Normal', reason: 'OrphanRemoved', message: `removed container ${action.containerName}: ${action.reason}${suffix}` });
      return { action, result: outcome === 'gone' ? 'gone' : 'applied' };
    }
    case 'remove_volume': {
      const veto = await stillCondemned(action, deps);
      if (veto) return { action, result: 'skipped', detail: veto };
      const outcome = await deps.runtime.removeVolume(action.volumeName);
      if (outcome === 'in_use') return { action, result: 'skipped', detail: 'volume still in use' };
      await record(deps, { deploymentId: action.deploymentId, type: 'Normal', reason: 'OrphanVolumeRemoved', message: `removed volume ${action.volumeName}: ${action.reason}` });
      return { action, result: outcome === 'gone' ? 'gone' : 'applied' };
    }
  }
}
