import { sql, type Kysely } from 'kysely';
import type { Database } from '../../store/schema.js';
import { DEPLOYMENT_WITH_SPEC_COLUMNS, toDeploymentWithSpec } from '../../store/store.js';
import type { DeploymentStatus, DeploymentWithSpec } from '../../types.js';

/** A deployment row as `get`, `describe` and `watch` show it (`output` only when asked for). */
export type DeploymentView = DeploymentWithSpec;

/** An event row as `describe` shows it. */
export interface EventView {
  at: Date;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  actor: string;
}

/** Filters of `get deployments`. */
export interface DeploymentFilter {
  project?: string;
  service?: string;
  statuses?: readonly DeploymentStatus[];
}

/** The database's clock: ages and stuck times are judged by it, like the controller's rules. */
export async function databaseNow(db: Kysely<Database>): Promise<Date> {
  const result = await sql<{ now: Date }>`SELECT now() AS now`.execute(db);
  return new Date(result.rows[0]!.now);
}

/** Deployments matching `filter`, by project, service and revision. */
export async function listDeployments(db: Kysely<Database>, filter: DeploymentFilter = {}): Promise<DeploymentView[]> {
  let query = db.selectFrom('deployments').select(DEPLOYMENT_WITH_SPEC_COLUMNS);
  if (filter.project !== undefined) query = query.where('project', '=', filter.project);
  if (filter.service !== undefined) query = query.where('service', '=', filter.service);
  if (filter.statuses && filter.statuses.length > 0) query = query.where('status', 'in', [...filter.statuses]);
  const rows = await query.orderBy('project').orderBy('service').orderBy('revision').execute();
  return rows.map((r) => toDeploymentWithSpec(r));
}

/** One deployment, read afresh, or undefined. */
export async function getDeployment(db: Kysely<Database>, id: string): Promise<DeploymentView | undefined> {
  const row = await db.selectFrom('deployments').select(DEPLOYMENT_WITH_SPEC_COLUMNS).where('id', '=', id).executeTakeFirst();
  return row ? toDeploymentWithSpec(row) : undefined;
}

/** The rollout log of a deployment (`output`), or undefined when there is no such row. */
export async function getOutput(db: Kysely<Database>, id: string): Promise<string | undefined> {
  const row = await db.selectFrom('deployments').select('output').where('id', '=', id).executeTakeFirst();
  return row?.output;
}

/** The newest `limit` events of a deployment, oldest first, and how many there are in all. */
export async function listEvents(db: Kysely<Database>, id: string, limit: number): Promise<{ events: EventView[]; total: number }> {
  const [rows, count] = await Promise.all([
    db
      .selectFrom('deployment_events')
      .select(['at', 'type', 'reason', 'message', 'actor', 'id'])
      .where('deployment_id', '=', id)
      .orderBy('at', 'desc')
      .orderBy('id', 'desc')
      .limit(limit)
      .execute(),
    db
      .selectFrom('deployment_events')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('deployment_id', '=', id)
      .executeTakeFirstOrThrow(),
  ]);
  return {
    events: rows.reverse().map((r) => ({ at: r.at, type: r.type, reason: r.reason, message: r.message, actor: r.actor })),
    total: Number(count.n),
  };
}
