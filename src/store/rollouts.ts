import { sql, type Kysely, type Transaction } from 'kysely';
import type { RolloutDeployment } from '../reconcilers/rollout.js';
import type { Deployment, DeploymentStatus, Phase, Progress } from '../types.js';
import type { Database } from './schema.js';
import {
  DEPLOYMENT_COLUMNS,
  DEPLOYMENT_WITH_SPEC_COLUMNS,
  fenceHolds,
  insertEvent,
  toDeployment,
  toDeploymentWithSpec,
  type EventInput,
  type Fence,
} from './store.js';

/** A change to a rollout's row; timestamps are taken from the database's clock. */
export interface RolloutPatch {
  status?: DeploymentStatus;
  phase?: Phase | null;
  progress?: Progress | null;
  owner?: string | null;
  /** attempts + 1 */
  bumpAttempts?: boolean;
  /** Set `started_at` to now() unless already set. */
  markStarted?: boolean;
  /** Set `finished_at` to now(). */
  markFinished?: boolean;
  /** Set `heartbeat_at` to now(). */
  heartbeat?: boolean;
  statusReason?: string | null;
  /** A line appended to `output`. */
  outputLine?: string;
}

/** A `rollbacks` row to insert with a write. */
export interface RollbackInput {
  project: string;
  service: string;
  fromDeploymentId: string;
  toDeploymentId: string;
  reason: string;
}

/** What the rollout reconciler reads and writes. Every write is compare-and-set and fenced. */
export interface RolloutStore {
  /** One deployment with its spec, or undefined. */
  load(id: string): Promise<RolloutDeployment | undefined>;
  /** Every deployment of a service (without spec). */
  siblings(project: string, service: string): Promise<Deployment[]>;
  /**
   * Applies `patch` when the row still has `expect.version` and
   * `expect.status` (and the fence holds), with its event and rollback row in
   * the same transaction. Returns the new version, or undefined when the row
   * moved on (or the fence no longer holds): re-read and decide again.
   */
  write(
    id: string,
    expect: { version: number; status: DeploymentStatus },
    patch: RolloutPatch,
    extras?: { event?: EventInput; rollback?: RollbackInput },
    fence?: Fence,
  ): Promise<number | undefined>;
}

function apply(trx: Transaction<Database>, id: string, expect: { version: number; status: DeploymentStatus }, patch: RolloutPatch, fence?: Fence) {
  let update = trx
    .updateTable('deployments')
    .set({
      ...(patch.status !== undefined ? { status: patch.status } : {}),
      ...(patch.phase !== undefined ? { phase: patch.phase } : {}),
      ...(patch.progress !== undefined ? { progress: patch.progress === null ? null : JSON.stringify(patch.progress) } : {}),
      ...(patch.owner !== undefined ? { owner: patch.owner } : {}),
      ...(patch.bumpAttempts ? { attempts: sql<number>`attempts + 1` } : {}),
      ...(patch.markStarted ? { started_at: sql<Date>`coalesce(started_at, now())` } : {}),
      ...(patch.markFinished ? { finished_at: sql<Date>`now()` } : {}),
      ...(patch.heartbeat ? { heartbeat_at: sql<Date>`now()` } : {}),
      ...(patch.statusReason !== undefined ? { status_reason: patch.statusReason } : {}),
      ...(patch.outputLine !== undefined ? { output: sql<string>`output || ${patch.outputLine + '\n'}` } : {}),
    })
    .where('id', '=', id)
    .where('version', '=', expect.version)
    .where('status', '=', expect.status);
  if (fence) update = update.where(fenceHolds(fence));
  return update.returning('version').executeTakeFirst();
}

/** The Postgres implementation of {@link RolloutStore}. */
export class PgRolloutStore implements RolloutStore {
  constructor(private readonly db: Kysely<Database>) {}

  async load(id: string): Promise<RolloutDeployment | undefined> {
    const row = await this.db.selectFrom('deployments').select(DEPLOYMENT_WITH_SPEC_COLUMNS).where('id', '=', id).executeTakeFirst();
    return row ? toDeploymentWithSpec(row) : undefined;
  }

  async siblings(project: string, service: string): Promise<Deployment[]> {
    const rows = await this.db
      .selectFrom('deployments')
      .select(DEPLOYMENT_COLUMNS)
      .where('project', '=', project)
      .where('service', '=', service)
      .orderBy('revision')
      .execute();
    return rows.map(toDeployment);
  }

  async write(
    id: string,
    expect: { version: number; status: DeploymentStatus },
    patch: RolloutPatch,
    extras: { event?: EventInput; rollback?: RollbackInput } = {},
    fence?: Fence,
  ): Promise<number | undefined> {
    return this.db.transaction().execute(async (trx) => {
      const row = await apply(trx, id, expect, patch, fence);
      if (!row) return undefined;
      if (extras.event) await insertEvent(trx, extras.event);
      if (extras.rollback) {
        const r = extras.rollback;
        await trx
          .insertInto('rollbacks')
          .values({
            project: r.project,
            service: r.service,
            from_deployment_id: r.fromDeploymentId,
            to_deployment_id: r.toDeploymentId,
            status: 'in_progress',
            reason: r.reason,
          })
          .execute();
      }
      return Number(row.version);
    });
  }
}
