import { CONTROLLER_EXECUTOR } from '../types.js';
import { planOrphans } from './orphans.js';
import { planRollbacks } from './rollbacks.js';
import { planSelfHeal } from './selfheal.js';
import type { Action, Note, Policy, RemoveContainerAction, RemoveVolumeAction, Snapshot } from './snapshot.js';
import { planZombies } from './zombies.js';

/** The kinds of drift, the values of `deployer_drift{kind}`. */
export const DRIFT_KINDS = ['orphan', 'zombie', 'missing', 'interrupted'] as const;

/**
 * Drift counted per kind. `missing`: replicas of active deployments without a
 * live container; `interrupted`: controller rollouts whose owner stopped
 * heart-beating (to be resumed).
 */
export type Drift = Record<(typeof DRIFT_KINDS)[number], number>;

/** Controller rollouts in `deploying` whose heartbeat is older than `heartbeatTimeout`, attempts left. */
function countInterrupted(snapshot: Snapshot, policy: Policy): number {
  let n = 0;
  for (const d of snapshot.deployments.values()) {
    if (d.status !== 'deploying' || d.executor !== CONTROLLER_EXECUTOR || d.attempts >= policy.maxAttempts) continue;
    const beat = (d.heartbeatAt ?? d.startedAt ?? d.updatedAt).getTime();
    if (snapshot.now.getTime() - beat > policy.heartbeatTimeoutMs) n++;
  }
  return n;
}

/** Why the mass-deletion guard refused this sweep's deletions. */
export interface GuardTrip {
  reason: string;
}

/** A whole sweep's plan. */
export interface Plan {
  /** What the executor applies, in order: status changes, stops, container removals, volumes, self-heal, rollback settlements. */
  actions: Action[];
  /** Deletions left for a later sweep by `maxDeletionsPerSweep`. */
  deferred: Action[];
  /** Deletions refused by the mass-deletion guard. */
  blocked: Action[];
  guard: GuardTrip | null;
  notes: Note[];
  drift: Drift;
  /** Managed containers seen (ours and legacy). */
  managed: number;
}

/** True when the plan shows drift that applying would act on. */
export function hasDrift(plan: Plan): boolean {
  return plan.actions.length + plan.deferred.length + plan.blocked.length > 0;
}

/**
 * Checks the deletions against the mass-deletion guard (DESIGN.md principle 5):
 * refuse when the desired state is empty while managed containers exist, or
 * when more than `guardFraction` of the managed containers would go.
 */
function checkGuard(snapshot: Snapshot, policy: Policy, removals: number, managed: number): GuardTrip | null {
  if (policy.force || removals === 0) return null;
  if (snapshot.deployments.size === 0 && managed > 0) {
    return { reason: `desired state is empty while ${managed} managed containers exist: refusing to remove ${removals} (use --force if this is intended)` };
  }
  if (managed >= policy.guardMinContainers && removals > managed * policy.guardFraction) {
    return {
      reason: `plan would remove ${removals} of ${managed} managed containers (more than ${Math.round(policy.guardFraction * 100)}%): refusing (use --force if this is intended)`,
    };
  }
  return null;
}

/**
 * The whole plan of one sweep: zombies and orphans, then the guard, then the
 * per-sweep deletion budget. Pure: the same snapshot and policy give the same plan.
 */
export function planSweep(snapshot: Snapshot, policy: Policy): Plan {
  const zombies = planZombies(snapshot, policy);
  const orphans = planOrphans(snapshot, policy);
  const heals = planSelfHeal(snapshot, policy);
  const rollbacks = planRollbacks(snapshot, policy.controllerName);
  const guard = checkGuard(snapshot, policy, orphans.removals.length, orphans.managed);

  let removals: RemoveContainerAction[] = [];
  let volumes: RemoveVolumeAction[] = [];
  const deferred: Action[] = [];
  const blocked: Action[] = [];
  if (guard) {
    blocked.push(...orphans.removals, ...orphans.volumeRemovals);
  } else {
    removals = orphans.removals.slice(0, policy.maxDeletionsPerSweep);
    const over = orphans.removals.slice(policy.maxDeletionsPerSweep);
    // A volume waits while any container of its deployment waits for budget.
    const waiting = new Set(over.map((a) => a.deploymentId));
    volumes = orphans.volumeRemovals.filter((v) => !waiting.has(v.deploymentId));
    deferred.push(...over, ...orphans.volumeRemovals.filter((v) => waiting.has(v.deploymentId)));
  }

  return {
    actions: [...zombies, ...orphans.stops, ...removals, ...volumes, ...heals, ...rollbacks],
    deferred,
    blocked,
    guard,
    notes: orphans.notes,
    drift: {
      orphan: orphans.removals.length + orphans.stops.length,
      zombie: zombies.length,
      missing: heals.length,
      interrupted: countInterrupted(snapshot, policy),
    },
    managed: orphans.managed,
  };
}
