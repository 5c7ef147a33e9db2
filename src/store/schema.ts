import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { DeploymentStatus, Phase, Progress, RollbackStatus } from '../types.js';

type Timestamp = ColumnType<Date, Date | string, Date | string>;
type DefaultTimestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T> = ColumnType<T, string, string>;

/** `deployments`: one row per revision of a service (DESIGN.md 3.2). */
export interface DeploymentsTable {
  id: string;
  project: string;
  service: string;
  revision: number;
  spec: Json<Record<string, unknown>>;
  spec_hash: string;
  status: ColumnType<DeploymentStatus, DeploymentStatus | undefined, DeploymentStatus>;
  phase: Phase | null;
  progress: ColumnType<Progress | null, string | null | undefined, string | null>;
  executor: ColumnType<string, string | undefined, string>;
  owner: string | null;
  attempts: Generated<number>;
  heartbeat_at: Timestamp | null;
  started_at: Timestamp | null;
  finished_at: Timestamp | null;
  status_reason: string | null;
  output: ColumnType<string, string | undefined, string>;
  version: Generated<number>;
  created_at: DefaultTimestamp;
  updated_at: DefaultTimestamp;
}

/** `deployment_events`: the audit trail, like Kubernetes Events. */
export interface DeploymentEventsTable {
  id: Generated<string>;
  deployment_id: string;
  at: DefaultTimestamp;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  actor: string;
}

export interface RollbacksTable {
  id: Generated<string>;
  project: string;
  service: string;
  from_deployment_id: string;
  to_deployment_id: string;
  status: RollbackStatus;
  reason: string | null;
  started_at: DefaultTimestamp;
  finished_at: Timestamp | null;
}

/** `leases`: leader election with a fencing epoch. */
export interface LeasesTable {
  name: string;
  holder: string;
  epoch: number;
  renewed_at: Timestamp;
  expires_at: Timestamp;
}

export interface Database {
  deployments: DeploymentsTable;
  deployment_events: DeploymentEventsTable;
  rollbacks: RollbacksTable;
  leases: LeasesTable;
}

export type DeploymentRow = Selectable<DeploymentsTable>;
export type NewDeployment = Insertable<DeploymentsTable>;
export type DeploymentUpdate = Updateable<DeploymentsTable>;
export type EventRow = Selectable<DeploymentEventsTable>;
export type NewEvent = Insertable<DeploymentEventsTable>;
