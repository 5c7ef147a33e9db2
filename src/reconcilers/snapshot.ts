import { LABELS, type Deployment, type ObservedContainer, type ObservedVolume, type Rollback } from '../types.js';

/** Desired + observed + now: everything a planner may look at, read afresh per sweep. */
export interface Snapshot {
  now: Date;
  /** Deployment rows relevant to this sweep, by id. */
  deployments: ReadonlyMap<string, Deployment>;
  /** Labelled containers, running or not (ours, legacy and foreign). */
  containers: readonly ObservedContainer[];
  /** Labelled named volumes. */
  volumes: readonly ObservedVolume[];
  /** Rollbacks in progress: nothing they reference is removed. */
  rollbacks: readonly Rollback[];
}

/** The rules' knobs, from the config (durations in milliseconds). */
export interface Policy {
  controllerName: string;
  orphanGraceMs: number;
  retainFailed: number;
  failedRetentionMs: number;
  stuckTimeoutMs: number;
  heartbeatTimeoutMs: number;
  maxAttempts: number;
  maxDeletionsPerSweep: number;
  /** Refuse a plan removing more than this fraction of the managed containers... */
  guardFraction: number;
  /** ...when at least this many containers are managed. */
  guardMinContainers: number;
  /** Skip the mass-deletion guard. */
  force: boolean;
}

/** Why an orphan goes. */
export const ORPHAN_CAUSES = ['unknown', 'failed', 'cancelled', 'superseded'] as const;
export type OrphanCause = (typeof ORPHAN_CAUSES)[number];

/** Why a zombie is failed. */
export const ZOMBIE_CAUSES = ['stuck', 'no_heartbeat', 'attempts_exhausted'] as const;
export type ZombieCause = (typeof ZOMBIE_CAUSES)[number];

export interface RemoveContainerAction {
  kind: 'remove_container';
  deploymentId: string;
  containerId: string;
  containerName: string;
  cause: OrphanCause;
  reason: string;
}

export interface StopContainerAction {
  kind: 'stop_container';
  deploymentId: string;
  containerId: string;
  containerName: string;
  reason: string;
}

export interface RemoveVolumeAction {
  kind: 'remove_volume';
  deploymentId: string;
  volumeName: string;
  cause: OrphanCause;
  reason: string;
}

export interface MarkFailedAction {
  kind: 'mark_failed';
  deploymentId: string;
  expectVersion: number;
  expectStatus: 'pending' | 'deploying';
  cause: ZombieCause;
  reason: string;
}

/** Self-heal: give a replica of an active deployment a live container again. */
export interface RecreateReplicaAction {
  kind: 'recreate_replica';
  deploymentId: string;
  replica: number;
  /** The exited or dead container to replace first, if any. */
  replaceContainerId?: string;
  replaceContainerName?: string;
  reason: string;
}

/** Settle a rollback in progress. */
export interface FinishRollbackAction {
  kind: 'finish_rollback';
  /** The deployment rolled back to. */
  deploymentId: string;
  rollbackId: string;
  status: 'completed' | 'failed';
  reason: string;
}

/** One step of a plan. Plans are data: printed by `plan`, applied by the executor. */
export type Action =
  | RemoveContainerAction
  | StopContainerAction
  | RemoveVolumeAction
  | MarkFailedAction
  | RecreateReplicaAction
  | FinishRollbackAction;
export type ActionKind = Action['kind'];

/** Actions that delete something. */
export type DeleteAction = RemoveContainerAction | RemoveVolumeAction;

export function isDelete(action: Action): action is DeleteAction {
  return action.kind === 'remove_container' || action.kind === 'remove_volume';
}

/** A container or volume that looks removable but is kept, and why. */
export interface Note {
  deploymentId: string;
  subject: string;
  reason: string;
}

/** How a labelled object relates to this controller. */
export type Ownership = 'ours' | 'legacy' | 'foreign';

/**
 * `ours` when `deployer.managed-by` names this controller, `legacy` when the
 * label is absent (an older platform made it: ours to clean), `foreign` otherwise.
 */
export function ownership(labels: Readonly<Record<string, string>>, controllerName: string): Ownership {
  const managedBy = labels[LABELS.managedBy];
  if (managedBy === undefined) return 'legacy';
  return managedBy === controllerName ? 'ours' : 'foreign';
}

/** Ids of every deployment an in-progress rollback references. */
export function protectedByRollback(rollbacks: readonly Rollback[]): Set<string> {
  const ids = new Set<string>();
  for (const r of rollbacks) {
    if (r.status !== 'in_progress') continue;
    ids.add(r.fromDeploymentId);
    ids.add(r.toDeploymentId);
  }
  return ids;
}
