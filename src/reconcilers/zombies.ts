import { formatDuration } from '../duration.js';
import { CONTROLLER_EXECUTOR, type Deployment } from '../types.js';
import type { MarkFailedAction, Policy, Snapshot } from './snapshot.js';

function phaseOf(d: Deployment): string {
  return d.phase ?? d.status;
}

/** Last sign of life of a rollout: its heartbeat, else its start, else its last write. */
function lastSeen(d: Deployment): Date {
  return d.heartbeatAt ?? d.startedAt ?? d.updatedAt;
}

/**
 * Plans the failing of zombies (DESIGN.md 3.3), in order of precedence:
 * - `pending`/`deploying` for longer than `stuckTimeout` (counted from
 *   `started_at`, or `created_at` when it never started);
 * - `deploying` by an outside executor with no heartbeat for `heartbeatTimeout`;
 * - `deploying` by this controller with its attempts exhausted and its owner gone.
 * Each becomes a compare-and-set to `failed` on the version read.
 */
export function planZombies(snapshot: Snapshot, policy: Policy): MarkFailedAction[] {
  const now = snapshot.now.getTime();
  const actions: MarkFailedAction[] = [];
  for (const d of snapshot.deployments.values()) {
    if (d.status !== 'pending' && d.status !== 'deploying') continue;
    const mark = (cause: MarkFailedAction['cause'], reason: string) =>
      actions.push({ kind: 'mark_failed', deploymentId: d.id, expectVersion: d.version, expectStatus: d.status as 'pending' | 'deploying', cause, reason });

    const age = now - (d.startedAt ?? d.createdAt).getTime();
    if (age > policy.stuckTimeoutMs) {
      mark('stuck', `timed out after ${formatDuration(age)} in phase ${phaseOf(d)}`);
      continue;
    }
    if (d.status !== 'deploying') continue;
    const silent = now - lastSeen(d).getTime();
    if (silent <= policy.heartbeatTimeoutMs) continue;
    if (d.executor !== CONTROLLER_EXECUTOR) {
      mark('no_heartbeat', `no heartbeat from executor ${d.executor} for ${formatDuration(silent)} in phase ${phaseOf(d)}`);
    } else if (d.attempts >= policy.maxAttempts) {
      mark('attempts_exhausted', `gave up after ${d.attempts} attempts in phase ${phaseOf(d)}`);
    }
  }
  return actions;
}
