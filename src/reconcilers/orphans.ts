import { formatDuration } from '../duration.js';
import { LABELS, type Deployment } from '../types.js';
import {
  ownership,
  protectedByRollback,
  type Note,
  type OrphanCause,
  type Policy,
  type RemoveContainerAction,
  type RemoveVolumeAction,
  type Snapshot,
  type StopContainerAction,
} from './snapshot.js';

/** What the orphan planner found. */
export interface OrphanPlan {
  removals: RemoveContainerAction[];
  stops: StopContainerAction[];
  volumeRemovals: RemoveVolumeAction[];
  notes: Note[];
  /** Containers of ours or legacy ones (foreign left out). */
  managed: number;
}

/** The verdict on one deployment id, shared by its containers and volumes. */
type Verdict =
  | { action: 'keep' }
  | { action: 'keep_noted'; reason: string }
  | { action: 'retain'; reason: string }
  | { action: 'remove'; cause: OrphanCause; reason: string };

/**
 * Ids of failed deployments kept for debugging: the newest `retainFailed`
 * failed revisions of each service whose `failedRetention` has not expired.
 */
function retainedFailed(snapshot: Snapshot, policy: Policy): Map<string, number> {
  const byService = new Map<string, Deployment[]>();
  for (const d of snapshot.deployments.values()) {
    if (d.status !== 'failed') continue;
    const key = `${d.project}/${d.service}`;
    byService.set(key, [...(byService.get(key) ?? []), d]);
  }
  const kept = new Map<string, number>();
  if (policy.retainFailed <= 0) return kept;
  for (const list of byService.values()) {
    list.sort((a, b) => b.revision - a.revision);
    for (const d of list.slice(0, policy.retainFailed)) {
      const expiresAt = (d.finishedAt ?? d.updatedAt).getTime() + policy.failedRetentionMs;
      if (expiresAt > snapshot.now.getTime()) kept.set(d.id, expiresAt);
    }
  }
  return kept;
}

/**
 * Decides what happens to everything labelled with `deploymentId`.
 * `createdAt` is the labelled object's creation time (for the grace period).
 */
function judge(
  deploymentId: string,
  createdAt: Date | null,
  snapshot: Snapshot,
  policy: Policy,
  rollbackIds: ReadonlySet<string>,
  retained: ReadonlyMap<string, number>,
): Verdict {
  if (rollbackIds.has(deploymentId)) return { action: 'keep_noted', reason: 'referenced by a rollback in progress' };
  const deployment = snapshot.deployments.get(deploymentId);
  if (!deployment) {
    const age = createdAt ? snapshot.now.getTime() - createdAt.getTime() : Number.POSITIVE_INFINITY;
    if (age > policy.orphanGraceMs) {
      return { action: 'remove', cause: 'unknown', reason: `deployment ${deploymentId} is unknown` + (createdAt ? ` (created ${formatDuration(age)} ago)` : '') };
    }
    return {
      action: 'keep_noted',
      reason: `deployment unknown, within orphanGrace (${formatDuration(policy.orphanGraceMs - age)} left)`,
    };
  }
  switch (deployment.status) {
    case 'pending':
    case 'deploying':
    case 'active':
      return { action: 'keep' };
    case 'failed': {
      const expiresAt = retained.get(deploymentId);
      if (expiresAt !== undefined) {
        return {
          action: 'retain',
          reason: `failed revision ${deployment.revision} retained for debugging (${formatDuration(expiresAt - snapshot.now.getTime())} left)`,
        };
      }
      return { action: 'remove', cause: 'failed', reason: `deployment ${deployment.project}/${deployment.service} r${deployment.revision} is failed` };
    }
    case 'cancelled':
    case 'superseded':
      return {
        action: 'remove',
        cause: deployment.status,
        reason: `deployment ${deployment.project}/${deployment.service} r${deployment.revision} is ${deployment.status}`,
      };
  }
}

/**
 * Plans the removal of orphans (DESIGN.md 3.3): labelled containers whose
 * deployment is unknown (past `orphanGrace`), failed, cancelled or superseded,
 * with their deployment-scoped volumes. Containers of another controller are
 * never touched; failed deployments within retention are stopped, not removed;
 * nothing an in-progress rollback references is touched. Shared volumes stay.
 */
export function planOrphans(snapshot: Snapshot, policy: Policy): OrphanPlan {
  const rollbackIds = protectedByRollback(snapshot.rollbacks);
  const retained = retainedFailed(snapshot, policy);
  const plan: OrphanPlan = { removals: [], stops: [], volumeRemovals: [], notes: [], managed: 0 };

  for (const container of snapshot.containers) {
    const deploymentId = container.labels[LABELS.deploymentId];
    if (!deploymentId) continue;
    if (ownership(container.labels, policy.controllerName) === 'foreign') continue;
    plan.managed++;
    const verdict = judge(deploymentId, container.createdAt, snapshot, policy, rollbackIds, retained);
    const subject = `container ${container.name}`;
    if (verdict.action === 'remove') {
      plan.removals.push({
        kind: 'remove_container',
        deploymentId,
        containerId: container.id,
        containerName: container.name,
        cause: verdict.cause,
        reason: verdict.reason,
      });
    } else if (verdict.action === 'retain') {
      if (container.state === 'running' || container.state === 'restarting' || container.state === 'paused') {
        plan.stops.push({ kind: 'stop_container', deploymentId, containerId: container.id, containerName: container.name, reason: verdict.reason });
      } else {
        plan.notes.push({ deploymentId, subject, reason: verdict.reason });
      }
    } else if (verdict.action === 'keep_noted') {
      plan.notes.push({ deploymentId, subject, reason: verdict.reason });
    }
  }

  for (const volume of snapshot.volumes) {
    const deploymentId = volume.labels[LABELS.deploymentId];
    if (!deploymentId) continue;
    if (volume.labels[LABELS.shared] === 'true') continue;
    if (ownership(volume.labels, policy.controllerName) === 'foreign') continue;
    const verdict = judge(deploymentId, volume.createdAt, snapshot, policy, rollbackIds, retained);
    if (verdict.action === 'remove') {
      plan.volumeRemovals.push({ kind: 'remove_volume', deploymentId, volumeName: volume.name, cause: verdict.cause, reason: verdict.reason });
    }
  }

  // Status-based removals before unknown ones, oldest first: the budget takes the surest first.
  const rank = (a: RemoveContainerAction) => (a.cause === 'unknown' ? 1 : 0);
  const created = new Map(snapshot.containers.map((c) => [c.id, c.createdAt.getTime()]));
  plan.removals.sort((a, b) => rank(a) - rank(b) || (created.get(a.containerId) ?? 0) - (created.get(b.containerId) ?? 0));
  return plan;
}
