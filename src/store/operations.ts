import { sql, type Kysely, type Transaction } from 'kysely';
import { revisionId } from '../manifest/apply-plan.js';
import { specHash, validateSpec } from '../manifest/spec.js';
import type { DeploymentStatus } from '../types.js';
import type { Database } from './schema.js';
import { insertEvent } from './store.js';

/** An operator's request that cannot be done as asked; the CLI prints it as one line. */
export class OperationError extends Error {}

/** How long a rollback waits for an apply of the same service. */
const ROLLBACK_LOCK_TIMEOUT_MS = 15_000;

/** How many times a cancel re-reads and retries when the row moved under it. */
export const CANCEL_TRIES = 10;

/** How a {@link cancelRow} ended. */
export type CancelResult =
  | { cancelled: true; from: DeploymentStatus; version: number }
  | { cancelled: false; status: DeploymentStatus | 'deleted' }
  | { cancelled: false; status: 'conflict' };

/**
 * Cancels row `id` if its status is one of `from`: a compare-and-set on its
 * version and status, with its event, re-read and retried when the
 * controller changed the row in between (a phase advance), so the cancel
 * either wins or reports why not: the row ended first (`status`), or it kept
 * changing (`conflict`). Runs inside the caller's transaction.
 */
export async function cancelRow(
  trx: Transaction<Database>,
  id: string,
  options: { from: readonly DeploymentStatus[]; reason: (row: { status: DeploymentStatus; phase: string | null }) => string; eventReason: string; eventType?: 'Normal' | 'Warning'; actor: string },
): Promise<CancelResult> {
  for (let attempt = 0; attempt < CANCEL_TRIES; attempt++) {
    const row = await trx.selectFrom('deployments').select(['status', 'version', 'phase']).where('id', '=', id).executeTakeFirst();
    if (!row) return { cancelled: false, status: 'deleted' };
    if (!options.from.includes(row.status)) return { cancelled: false, status: row.status };
    const reason = options.reason(row);
    const updated = await trx
      .updateTable('deployments')
      .set({
        status: 'cancelled',
        status_reason: reason,
        finished_at: sql<Date>`now()`,
        output: sql<string>`output || ${`[${new Date().toISOString()}] ${reason}\n`}`,
      })
      .where('id', '=', id)
      .where('version', '=', row.version)
      .where('status', '=', row.status)
      .returning('version')
      .executeTakeFirst();
    if (!updated) continue;
    await insertEvent(trx, { deploymentId: id, type: options.eventType ?? 'Normal', reason: options.eventReason, message: reason, actor: options.actor });
    return { cancelled: true, from: row.status, version: Number(updated.version) };
  }
  return { cancelled: false, status: 'conflict' };
}

/**
 * Cancels a `pending` or `deploying` deployment (see {@link cancelRow}). Its
 * containers go on the controller's next sweep.
 */
export async function cancelDeployment(db: Kysely<Database>, id: string, actor: string): Promise<{ from: string; version: number }> {
  const result = await db.transaction().execute((trx) =>
    cancelRow(trx, id, {
      from: ['pending', 'deploying'],
      reason: (row) => `cancelled by ${actor}` + (row.phase ? ` in phase ${row.phase}` : ''),
      eventReason: 'Cancelled',
      eventType: 'Warning',
      actor,
    }),
  );
  if (result.cancelled) return { from: result.from, version: result.version };
  if (result.status === 'deleted') throw new OperationError(`no deployment ${id}`);
  if (result.status === 'conflict') throw new OperationError(`could not cancel ${id}: it kept changing under ${CANCEL_TRIES} attempts; try again`);
  throw new OperationError(`deployment ${id} is ${result.status}: only pending or deploying deployments can be cancelled`);
}

/**
 * Takes the per-service advisory locks for `keys` (`project/service`) in one
 * statement and a fixed order (by lock value), so writers of overlapping
 * services (apply, delete, rollback) cannot deadlock; gives up after
 * `timeoutMs` with Postgres' lock_timeout error.
 */
export async function lockServices(trx: Transaction<Database>, keys: readonly string[], timeoutMs: number): Promise<void> {
  if (keys.length === 0) return;
  await sql`SELECT set_config('lock_timeout', ${`${Math.max(1, Math.round(timeoutMs))}ms`}, true)`.execute(trx);
  await sql`
    SELECT pg_advisory_xact_lock(h)
    FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(${[...keys]}::text[]) AS k ORDER BY 1) AS locks`.execute(trx);
}

/**
 * Manual rollback: a new revision of `project/service` with the spec of
 * revision `toRevision` (default: the revision that was active before the
 * current one), as `pending`, plus an `in_progress` rollbacks row from the
 * current active revision to the new one. One transaction.
 */
export async function rollbackService(
  db: Kysely<Database>,
  project: string,
  service: string,
  actor: string,
  toRevision?: number,
): Promise<{ id: string; revision: number; fromRevision: number }> {
  return db.transaction().execute(async (trx) => {
    await lockServices(trx, [`${project}/${service}`], ROLLBACK_LOCK_TIMEOUT_MS);
    const rows = await trx
      .selectFrom('deployments')
      .select(['id', 'revision', 'status', 'spec'])
      .where('project', '=', project)
      .where('service', '=', service)
      .orderBy('revision', 'desc')
      .execute();
    if (rows.length === 0) throw new OperationError(`no deployments of ${project}/${service}`);
    const active = rows.find((r) => r.status === 'active');
    let source;
    if (toRevision !== undefined) {
      source = rows.find((r) => r.revision === toRevision);
      if (!source) throw new OperationError(`${project}/${service} has no revision ${toRevision}`);
    } else {
      source = rows.find((r) => r.status === 'superseded' && (!active || r.revision < active.revision));
      if (!source) throw new OperationError(`${project}/${service} has no previous active revision to roll back to; use --to-revision`);
    }
    if (active && source.id === active.id) throw new OperationError(`revision ${source.revision} of ${project}/${service} is already active`);
    let spec;
    try {
      spec = validateSpec(source.spec);
    } catch (err) {
      throw new OperationError(`revision ${source.revision} of ${project}/${service} has an invalid spec: ${(err as Error).message}`);
    }
    const revision = rows[0]!.revision + 1;
    const id = revisionId(project, service, revision);
    const reason = `manual rollback to revision ${source.revision} by ${actor}`;
    await trx
      .insertInto('deployments')
      .values({
        id,
        project,
        service,
        revision,
        spec: JSON.stringify(spec),
        spec_hash: specHash(spec),
        status: 'pending',
        executor: 'controller',
        output: `[${new Date().toISOString()}] ${reason}\n`,
      })
      .execute();
    await trx
      .insertInto('rollbacks')
      .values({ project, service, from_deployment_id: active?.id ?? rows[0]!.id, to_deployment_id: id, status: 'in_progress', reason })
      .execute();
    await insertEvent(trx, { deploymentId: id, type: 'Normal', reason: 'RollbackRequested', message: reason, actor });
    return { id, revision, fromRevision: source.revision };
  });
}
