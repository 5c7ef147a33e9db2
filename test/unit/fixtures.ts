/**
 * Small factories for the planners' plain-data inputs: deployments, observed
 * containers and volumes, rollbacks, snapshots and policies. Every factory
 * takes overrides, so a test states only what matters to its rule.
 */
import type { Policy, Snapshot } from '../../src/reconcilers/snapshot.js';
import { LABELS, type ContainerDetail, type Deployment, type Health, type ObservedContainer, type ObservedVolume, type Rollback } from '../../src/types.js';

export const SECOND = 1_000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;

/** The fixed "now" of every snapshot built here. */
export const NOW = new Date('2025-06-01T12:00:00.000Z');

/** The instant `ms` before {@link NOW}. */
export function ago(ms: number): Date {
  return new Date(NOW.getTime() - ms);
}

/** This controller's name in the default policy. */
export const OURS = 'deployer-controller';

/** The config defaults (DESIGN.md 3.7) as a planner policy. */
export function policy(overrides: Partial<Policy> = {}): Policy {
  return {
    controllerName: OURS,
    orphanGraceMs: 2 * MINUTE,
    retainFailed: 0,
    failedRetentionMs: 24 * HOUR,
    stuckTimeoutMs: 6 * HOUR,
    heartbeatTimeoutMs: 60 * SECOND,
    maxAttempts: 3,
    maxDeletionsPerSweep: 50,
    guardFraction: 0.5,
    guardMinContainers: 10,
    force: false,
    ...overrides,
  };
}

/** A deployment row; `active` revision 1 of shop/web created an hour ago unless overridden. */
export function deployment(id: string, overrides: Partial<Omit<Deployment, 'id'>> = {}): Deployment {
  return {
    id,
    project: 'shop',
    service: 'web',
    revision: 1,
    specHash: `hash-${id}`,
    status: 'active',
    phase: null,
    progress: null,
    executor: 'controller',
    owner: null,
    attempts: 0,
    heartbeatAt: null,
    startedAt: null,
    finishedAt: null,
    statusReason: null,
    version: 1,
    createdAt: ago(HOUR),
    updatedAt: ago(HOUR),
    ...overrides,
  };
}

export interface ContainerOptions {
  /** Container id and name; derived from the deployment id when left out. */
  id?: string;
  /** `deployer.managed-by`: our name by default, `null` for a legacy container without the label. */
  managedBy?: string | null;
  state?: string;
  createdAt?: Date;
  /** Extra labels, merged last (a label set to `undefined` is dropped). */
  labels?: Record<string, string | undefined>;
}

let serial = 0;

/**
 * A container labelled for `deploymentId` (no `deployer.deployment_id` label
 * when it is `null`), running, created an hour ago, managed by us.
 */
export function container(deploymentId: string | null, options: ContainerOptions = {}): ObservedContainer {
  const id = options.id ?? `${deploymentId ?? 'unlabelled'}-c${++serial}`;
  return {
    id,
    name: id,
    labels: labels(deploymentId, options.managedBy, options.labels),
    state: options.state ?? 'running',
    createdAt: options.createdAt ?? ago(HOUR),
  };
}

export interface VolumeOptions {
  name?: string;
  managedBy?: string | null;
  shared?: boolean;
  createdAt?: Date | null;
  labels?: Record<string, string | undefined>;
}

/** A deployment-scoped named volume labelled for `deploymentId`, created an hour ago, managed by us. */
export function volume(deploymentId: string | null, options: VolumeOptions = {}): ObservedVolume {
  const extra = { ...(options.shared ? { [LABELS.shared]: 'true' } : {}), ...options.labels };
  return {
    name: options.name ?? `${deploymentId ?? 'unlabelled'}-v${++serial}`,
    labels: labels(deploymentId, options.managedBy, extra),
    createdAt: options.createdAt === undefined ? ago(HOUR) : options.createdAt,
  };
}

export function rollback(fromDeploymentId: string, toDeploymentId: string, status: Rollback['status'] = 'in_progress'): Rollback {
  return { id: `rb-${fromDeploymentId}-${toDeploymentId}`, project: 'shop', service: 'web', fromDeploymentId, toDeploymentId, status };
}

export interface SnapshotParts {
  now?: Date;
  deployments?: readonly Deployment[];
  containers?: readonly ObservedContainer[];
  volumes?: readonly ObservedVolume[];
  rollbacks?: readonly Rollback[];
}

export function snapshot(parts: SnapshotParts = {}): Snapshot {
  return {
    now: parts.now ?? NOW,
    deployments: new Map((parts.deployments ?? []).map((d) => [d.id, d])),
    containers: parts.containers ?? [],
    volumes: parts.volumes ?? [],
    rollbacks: parts.rollbacks ?? [],
  };
}

function labels(
  deploymentId: string | null,
  managedBy: string | null | undefined,
  extra: Record<string, string | undefined> = {},
): Record<string, string> {
  const all: Record<string, string | undefined> = {
    [LABELS.project]: 'shop',
    [LABELS.service]: 'web',
    ...(deploymentId === null ? {} : { [LABELS.deploymentId]: deploymentId }),
    ...(managedBy === null ? {} : { [LABELS.managedBy]: managedBy ?? OURS }),
    ...extra,
  };
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(all)) if (value !== undefined) result[key] = value;
  return result;
}

export interface DetailOptions extends ContainerOptions {
  health?: Health;
  /** When the container last started; `null` for one that never ran. One minute ago by default. */
  startedAt?: Date | null;
  exitCode?: number | null;
  restartCount?: number;
}

/**
 * An inspected container of replica `replica` (no `deployer.replica` label when
 * it is `null`) of `deploymentId`: running for a minute, no healthcheck,
 * managed by us. Its id and name are `<deploymentId>.<replica>` unless given.
 */
export function containerDetail(deploymentId: string, replica: number | null, options: DetailOptions = {}): ContainerDetail {
  const id = options.id ?? `${deploymentId}.${replica ?? 'x'}`;
  const base = container(deploymentId, {
    ...options,
    id,
    labels: { ...(replica === null ? {} : { [LABELS.replica]: String(replica) }), ...options.labels },
  });
  return {
    ...base,
    health: options.health ?? 'none',
    startedAt: options.startedAt === undefined ? ago(MINUTE) : options.startedAt,
    exitCode: options.exitCode ?? null,
    restartCount: options.restartCount ?? 0,
  };
}
