import { CONTROLLER_EXECUTOR, LABELS, type ObservedContainer } from '../types.js';
import { replicaOf } from './rollout.js';
import { ownership, type Policy, type RecreateReplicaAction, type Snapshot } from './snapshot.js';

/** States in which a container counts as serving (Docker restarts a `restarting` one itself). */
const ALIVE = new Set(['running', 'restarting', 'paused']);

/**
 * Self-heal (DESIGN.md 3.3): every replica of an `active` deployment the
 * controller rolled out (rollout complete) must have a live container. A
 * replica with none gets one created; a replica whose container exited or died
 * (and Docker is not restarting it) gets it replaced.
 */
export function planSelfHeal(snapshot: Snapshot, policy: Policy): RecreateReplicaAction[] {
  const byDeployment = new Map<string, ObservedContainer[]>();
  for (const c of snapshot.containers) {
    const id = c.labels[LABELS.deploymentId];
    if (!id || ownership(c.labels, policy.controllerName) === 'foreign') continue;
    byDeployment.set(id, [...(byDeployment.get(id) ?? []), c]);
  }
  const actions: RecreateReplicaAction[] = [];
  for (const d of snapshot.deployments.values()) {
    if (d.status !== 'active' || d.executor !== CONTROLLER_EXECUTOR || d.phase !== null || d.replicas === undefined) continue;
    const containers = byDeployment.get(d.id) ?? [];
    for (let replica = 0; replica < d.replicas; replica++) {
      const mine = containers.filter((c) => replicaOf(c) === replica);
      if (mine.some((c) => ALIVE.has(c.state))) continue;
      const dead = mine[0];
      actions.push({
        kind: 'recreate_replica',
        deploymentId: d.id,
        replica,
        ...(dead ? { replaceContainerId: dead.id, replaceContainerName: dead.name } : {}),
        reason: dead
          ? `replica ${replica} of ${d.project}/${d.service} r${d.revision}: container ${dead.name} is ${dead.state}`
          : `replica ${replica} of ${d.project}/${d.service} r${d.revision} has no container`,
      });
    }
  }
  return actions;
}
