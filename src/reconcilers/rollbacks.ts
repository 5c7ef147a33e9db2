import { LABELS } from '../types.js';
import type { FinishRollbackAction, Snapshot } from './snapshot.js';

/**
 * Settles rollbacks in progress: `completed` once the revision rolled back to
 * is active with all its replicas running and none unhealthy; `failed` once
 * it can no longer get there (failed, cancelled, superseded or gone). While a
 * rollback is in progress, nothing it references is removed (see orphans).
 */
export function planRollbacks(snapshot: Snapshot): FinishRollbackAction[] {
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
    const containers = snapshot.containers.filter((c) => c.labels[LABELS.deploymentId] === target.id);
    const running = containers.filter((c) => c.state === 'running');
    const replicas = target.replicas ?? 1;
    if (running.length < replicas) continue;
    if (running.some((c) => c.health === 'unhealthy' || c.health === 'starting')) continue;
    finish('completed', `${target.project}/${target.service} r${target.revision} serving with ${running.length} healthy container(s)`);
  }
  return actions;
}
