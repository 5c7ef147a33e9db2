import { LABELS } from '../types.js';
import { ownership, type FinishRollbackAction, type Snapshot } from './snapshot.js';

/**
 * Settles rollbacks in progress: `completed` once the revision rolled back to
 * is active with all its replicas running and none unhealthy; `failed` once
 * it can no longer get there (failed, cancelled, superseded or gone). While a
 * rollback is in progress, nothing it references is removed (see orphans).
 */
export function planRollbacks(snapshot: Snapshot, controllerName: string): FinishRollbackAction[] {
  const actions: FinishRollbackAction[] = [];
  for (const r of snapshot.rollbacks) {
    if (r.status !== 'in_progress') continue;
    const target = snapshot.deployments.get(r.toDeploymentId);
    const finish = (status: 'completed' | 'failed', reason: string) =>
      actions.push({ kind: 'finish_rollback', deploymentId: r.toDeploymentId, rollbackId: r.id, status, reason });
    if (!target || target.status === 'failed' || target.status === 'cancelled' || target.status === 'superseded') {
      finish('failed', `revision rolled back to (${r.toDeploymentId}) is ${target?.status ?? 'gone'}`);
      continue;
    }
    if (target.status !== 'active' || target.phase !== null) continue;
    const running = snapshot.containers.filter(
      (c) => c.labels[LABELS.deploymentId] === target.id && c.state === 'running' && ownership(c.labels, controllerName) !== 'foreign',
    );
    if (running.some((c) => c.health === 'unhealthy' || c.health === 'starting')) continue;
    // Distinct replicas: a duplicate of one does not stand in for another that is down.
    // (A container with no replica label, made by an older platform, counts for itself.)
    const serving = new Set(running.map((c) => c.labels[LABELS.replica] ?? c.id)).size;
    if (serving < (target.replicas ?? 1)) continue;
    finish('completed', `${target.project}/${target.service} r${target.revision} serving with ${serving} healthy container(s)`);
  }
  return actions;
}
