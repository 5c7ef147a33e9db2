/**
 * Terminology
 *
 * - **deployment**: one revision of a service (`project/service`), one row of the
 *   `deployments` table. Its `id` is the value of the `deployer.deployment_id` label.
 * - **desired state**: the deployment rows in Postgres (the source of truth).
 * - **observed state**: the labelled containers and volumes the runtime reports.
 * - **snapshot**: desired + observed + `now`, read afresh for every sweep.
 * - **plan**: the list of {@link Action}s a planner derives from a snapshot; data only.
 * - **orphan**: a labelled container whose deployment is unknown, failed,
 *   cancelled or superseded.
 * - **zombie**: a `pending`/`deploying` deployment that nobody is driving any more.
 * - **managed**: a container carrying `deployer.deployment_id` and either no
 *   `deployer.managed-by` (legacy) or our own controller name.
 * - **foreign**: a labelled container whose `deployer.managed-by` names another
 *   controller; never touched.
 */

/** Every status a deployment row may have (DESIGN.md 3.3). */
export const DEPLOYMENT_STATUSES = [
  'pending',
  'deploying',
  'active',
  'failed',
  'cancelled',
  'superseded',
] as const;
export type DeploymentStatus = (typeof DEPLOYMENT_STATUSES)[number];

/** Statuses after which a deployment never changes again. */
export const TERMINAL_STATUSES = ['failed', 'cancelled', 'superseded'] as const satisfies readonly DeploymentStatus[];

/** Statuses of a rollout that has not finished yet. */
export const IN_FLIGHT_STATUSES = ['pending', 'deploying'] as const satisfies readonly DeploymentStatus[];

/** The phases of a rollout, in order; progress `total` is their count. */
export const PHASES = ['pulling', 'creating', 'starting', 'health_check', 'activating', 'retiring'] as const;
export type Phase = (typeof PHASES)[number];

export const ROLLBACK_STATUSES = ['in_progress', 'completed', 'failed'] as const;
export type RollbackStatus = (typeof ROLLBACK_STATUSES)[number];

/** The executor value meaning "this controller drives the rollout". */
export const CONTROLLER_EXECUTOR = 'controller';

/** Container and volume labels (DESIGN.md 3.1). */
export const LABELS = {
  deploymentId: 'deployer.deployment_id',
  managedBy: 'deployer.managed-by',
  project: 'deployer.project',
  service: 'deployer.service',
  revision: 'deployer.revision',
  replica: 'deployer.replica',
  shared: 'deployer.shared',
} as const;

/** Rollout progress as stored in `deployments.progress`. */
export interface Progress {
  step: number;
  total: number;
  percent: number;
  message: string;
}

/** A deployment row as the planners see it (the `output` log is left out). */
export interface Deployment {
  id: string;
  project: string;
  service: string;
  revision: number;
  specHash: string;
  status: DeploymentStatus;
  phase: Phase | null;
  progress: Progress | null;
  executor: string;
  owner: string | null;
  attempts: number;
  heartbeatAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  statusReason: string | null;
  version: number;
  createdAt: Date;
  updatedAt: Date;
  /** `spec.replicas` (default 1), when the reader loaded it (active rows, for self-heal). */
  replicas?: number;
}

/** A deployment row with its `spec` as stored (validated by whoever uses it). */
export interface DeploymentWithSpec extends Deployment {
  spec: unknown;
}

/** A rollback row (only `in_progress` ones matter to the planners). */
export interface Rollback {
  id: string;
  project: string;
  service: string;
  fromDeploymentId: string;
  toDeploymentId: string;
  status: RollbackStatus;
}

/** Docker's health status of a container (`none` without a healthcheck). */
export type Health = 'none' | 'starting' | 'healthy' | 'unhealthy';

/** A labelled container as the runtime reports it. */
export interface ObservedContainer {
  id: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  /** Docker state: created, running, paused, restarting, removing, exited, dead. */
  state: string;
  createdAt: Date;
  /** Health as far as the listing tells (from its status text). */
  health?: Health;
}

/** A container read with inspect: what the health phase needs. */
export interface ContainerDetail extends ObservedContainer {
  health: Health;
  startedAt: Date | null;
  exitCode: number | null;
  restartCount: number;
}

/** A labelled named volume as the runtime reports it. */
export interface ObservedVolume {
  name: string;
  labels: Readonly<Record<string, string>>;
  createdAt: Date | null;
}
