import { sql, type Kysely, type Transaction } from 'kysely';
import { TERMINAL_STATUSES, type Deployment, type DeploymentStatus, type DeploymentWithSpec, type Rollback } from '../types.js';
import type { Database, DeploymentRow } from './schema.js';

/**
 * Fencing token of the current leader. Every write made under it succeeds only
 * while the lease row still names this holder and epoch and has not expired
 * by the database's clock.
 */
export interface Fence {
  lease: string;
  holder: string;
  epoch: number;
}

/** An audit row for `deployment_events`. */
export interface EventInput {
  deploymentId: string;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  actor: string;
}

/** A compare-and-set status change. */
export interface Transition {
  id: string;
  expectVersion: number;
  expectStatus: DeploymentStatus;
  status: DeploymentStatus;
  reason: string;
  /** A line appended to `output`. */
  outputLine?: string;
  event: EventInput;
}

/** What the sweep reads of the desired state. */
export interface DesiredState {
  deployments: Deployment[];
  rollbacks: Rollback[];
}

/**
 * The controller's view of Postgres. Reads never swallow errors: a failed
 * query rejects, and the caller stops destructive work for that sweep.
 */
export interface Store {
  /**
   * Rows the planners need: every pending/deploying/active deployment, every
   * deployment whose id is in `observedIds`, and the newest `retainFailed`
   * failed deployments of each service; plus in-progress rollbacks.
   */
  loadDesired(observedIds: readonly string[], retainFailed: number): Promise<DesiredState>;
  /** One deployment, read afresh (or undefined when there is no such row). */
  getDeployment(id: string): Promise<Deployment | undefined>;
  /** Applies a transition and its event in one transaction; false when the row moved on. */
  transition(change: Transition, fence?: Fence): Promise<boolean>;
  /** Records an event; false when the fence no longer holds. */
  recordEvent(event: EventInput, fence?: Fence): Promise<boolean>;
  /** Settles an in-progress rollback with its event; false when it was settled already or the fence no longer holds. */
  finishRollback(rollbackId: string, status: 'completed' | 'failed', reason: string, event: EventInput, fence?: Fence): Promise<boolean>;
  /** Number of deployment rows per status. */
  countByStatus(): Promise<Partial<Record<DeploymentStatus, number>>>;
  /** Round-trip latency in milliseconds. */
  ping(): Promise<number>;
}

export const DEPLOYMENT_COLUMNS = [
  'id',
  'project',
  'service',
  'revision',
  'spec_hash',
  'status',
  'phase',
  'progress',
  'executor',
  'owner',
  'attempts',
  'heartbeat_at',
  'started_at',
  'finished_at',
  'status_reason',
  'version',
  'created_at',
  'updated_at',
] as const;

type DeploymentColumns = Pick<DeploymentRow, (typeof DEPLOYMENT_COLUMNS)[number]>;

/** The columns of {@link DeploymentWithSpec}: all but the `output` log. */
export const DEPLOYMENT_WITH_SPEC_COLUMNS = [...DEPLOYMENT_COLUMNS, 'spec'] as const;

/** Maps a row read with {@link DEPLOYMENT_WITH_SPEC_COLUMNS}. */
export function toDeploymentWithSpec(row: DeploymentColumns & Pick<DeploymentRow, 'spec'>): DeploymentWithSpec {
  return { ...toDeployment(row), spec: row.spec };
}

/** Maps a row to the planners' shape. */
export function toDeployment(row: DeploymentColumns): Deployment {
  return {
    id: row.id,
    project: row.project,
    service: row.service,
    revision: row.revision,
    specHash: row.spec_hash,
    status: row.status,
    phase: row.phase,
    progress: row.progress,
    executor: row.executor,
    owner: row.owner,
    attempts: row.attempts,
    heartbeatAt: row.heartbeat_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    statusReason: row.status_reason,
    version: row.version,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** The identifying facts of a row with their column names: what webhooks carry. */
export function rowFacts(d: Pick<Deployment, 'id' | 'project' | 'service' | 'revision' | 'status' | 'phase' | 'statusReason'>) {
  return {
    id: d.id,
    project: d.project,
    service: d.service,
    revision: d.revision,
    status: d.status,
    phase: d.phase,
    status_reason: d.statusReason,
  };
}

/**
 * A row as JSON with its column names (without `output`), as the activation
 * hook receives it on stdin and `get deployments -o json` prints it.
 */
export function toRowJson(d: DeploymentWithSpec) {
  const iso = (date: Date | null) => (date ? date.toISOString() : null);
  return {
    ...rowFacts(d),
    progress: d.progress,
    executor: d.executor,
    owner: d.owner,
    attempts: d.attempts,
    spec_hash: d.specHash,
    spec: d.spec,
    version: d.version,
    created_at: iso(d.createdAt),
    updated_at: iso(d.updatedAt),
    started_at: iso(d.startedAt),
    finished_at: iso(d.finishedAt),
    heartbeat_at: iso(d.heartbeatAt),
  };
}

/** SQL condition: the fence still holds (by the database's clock). */
export function fenceHolds(fence: Fence) {
  return sql<boolean>`EXISTS (SELECT 1 FROM leases WHERE name = ${fence.lease} AND holder = ${fence.holder}
    AND epoch = ${fence.epoch} AND expires_at > now())`;
}

/** The Postgres implementation of {@link Store}. */
export class PgStore implements Store {
  constructor(private readonly db: Kysely<Database>) {}

  async loadDesired(observedIds: readonly string[], retainFailed: number): Promise<DesiredState> {
    // spec.replicas for self-heal, without reading whole specs; a malformed value reads as 1 (the spec check fails it later).
    const replicas = sql<number>`CASE WHEN spec->>'replicas' ~ '^[0-9]{1,4}$' THEN (spec->>'replicas')::int ELSE 1 END`;
    let query = this.db
      .selectFrom('deployments')
      .select(DEPLOYMENT_COLUMNS)
      .select(replicas.as('replicas'))
      .where((eb) =>
        eb.or([
          eb('status', 'in', ['pending', 'deploying', 'active']),
          ...(observedIds.length > 0 ? [eb('id', '=', sql<string>`ANY(${[...observedIds]}::text[])`)] : []),
        ]),
      );
    if (retainFailed > 0) {
      query = query.union(
        this.db
          .selectFrom((qb) =>
            qb
              .selectFrom('deployments')
              .select(DEPLOYMENT_COLUMNS)
              .select(replicas.as('replicas'))
              .select(sql<number>`row_number() OVER (PARTITION BY project, service ORDER BY revision DESC)`.as('rank'))
              .where('status', '=', 'failed')
              .as('f'),
          )
          .select([...DEPLOYMENT_COLUMNS, 'replicas'])
          .where('rank', '<=', retainFailed),
      );
    }
    const [rows, rollbacks] = await Promise.all([
      query.execute(),
      this.db.selectFrom('rollbacks').selectAll().where('status', '=', 'in_progress').execute(),
    ]);
    return {
      deployments: rows.map((r) => ({ ...toDeployment(r), replicas: r.replicas })),
      rollbacks: rollbacks.map((r) => ({
        id: String(r.id),
        project: r.project,
        service: r.service,
        fromDeploymentId: r.from_deployment_id,
        toDeploymentId: r.to_deployment_id,
        status: r.status,
      })),
    };
  }

  async getDeployment(id: string): Promise<Deployment | undefined> {
    const row = await this.db.selectFrom('deployments').select(DEPLOYMENT_COLUMNS).where('id', '=', id).executeTakeFirst();
    return row ? toDeployment(row) : undefined;
  }

  async transition(change: Transition, fence?: Fence): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      let update = trx
        .updateTable('deployments')
        .set({
          status: change.status,
          status_reason: change.reason,
          output: change.outputLine === undefined ? sql<string>`output` : sql<string>`output || ${change.outputLine + '\n'}`,
          ...(TERMINAL.has(change.status) ? { finished_at: sql<Date>`now()` } : {}),
        })
        .where('id', '=', change.id)
        .where('version', '=', change.expectVersion)
        .where('status', '=', change.expectStatus);
      if (fence) update = update.where(fenceHolds(fence));
      const result = await update.executeTakeFirst();
      if (result.numUpdatedRows !== 1n) return false;
      await insertEvent(trx, change.event);
      return true;
    });
  }

  async recordEvent(event: EventInput, fence?: Fence): Promise<boolean> {
    if (!fence) {
      await insertEvent(this.db, event);
      return true;
    }
    const result = await this.db
      .insertInto('deployment_events')
      .columns(['deployment_id', 'type', 'reason', 'message', 'actor'])
      .expression(
        this.db
          .selectNoFrom([
            sql.val(event.deploymentId).as('deployment_id'),
            sql.val(event.type).as('type'),
            sql.val(event.reason).as('reason'),
            sql.val(event.message).as('message'),
            sql.val(event.actor).as('actor'),
          ])
          .where(fenceHolds(fence)),
      )
      .executeTakeFirst();
    return result.numInsertedOrUpdatedRows === 1n;
  }

  async finishRollback(rollbackId: string, status: 'completed' | 'failed', reason: string, event: EventInput, fence?: Fence): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      let update = trx
        .updateTable('rollbacks')
        .set({ status, finished_at: sql<Date>`now()`, reason: sql<string>`coalesce(reason || '; ', '') || ${reason}` })
        .where('id', '=', rollbackId)
        .where('status', '=', 'in_progress');
      if (fence) update = update.where(fenceHolds(fence));
      const result = await update.executeTakeFirst();
      if (result.numUpdatedRows !== 1n) return false;
      await insertEvent(trx, event);
      return true;
    });
  }

  async countByStatus(): Promise<Partial<Record<DeploymentStatus, number>>> {
    const rows = await this.db
      .selectFrom('deployments')
      .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('status')
      .execute();
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }

  async ping(): Promise<number> {
    const started = performance.now();
    await sql`SELECT 1`.execute(this.db);
    return performance.now() - started;
  }
}

const TERMINAL = new Set<DeploymentStatus>(TERMINAL_STATUSES);

export async function insertEvent(db: Kysely<Database> | Transaction<Database>, event: EventInput): Promise<void> {
  await db
    .insertInto('deployment_events')
    .values({
      deployment_id: event.deploymentId,
      type: event.type,
      reason: event.reason,
      message: event.message,
      actor: event.actor,
    })
    .execute();
}
