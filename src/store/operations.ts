import { sql, type Kysely } from 'kysely';
import { specHash, validateSpec } from '../manifest/spec.js';
import type { Database } from './schema.js';
import { insertEvent } from './store.js';

/** An operator's request that cannot be done as asked; the CLI prints it as one line. */
export class OperationError extends Error {}

/** How many times a cancel re-reads and retries when the row moved under it. */
const CANCEL_TRIES = 10;

/**
 * Cancels a `pending` or `deploying` deployment: a compare-and-set on its
 * version and status, retried on a fresh read when the controller advanced
 * the phase in between, so the cancel either wins or fails loudly (the
 * deployment finished first). Its containers go on the controller's next sweep.
 */
export async function cancelDeployment(db: Kysely<Database>, id: string, actor: string): Promise<{ from: string; version: number }> {
  for (let attempt = 0; attempt < CANCEL_TRIES; attempt++) {
    const row = await db.selectFrom('deployments').select(['status', 'version', 'phase']).where('id', '=', id).executeTakeFirst();
    if (!row) throw new OperationError(`no deployment ${id}`);
    if (row.status !== 'pending' && row.status !== 'deploying') {
      throw new OperationError(`deployment ${id} is ${row.status}: only pending or deploying deployments can be cancelled`);
    }
    const reason = `cancelled by ${actor}` + (row.phase ? ` in phase ${row.phase}` : '');
    const version = await db.transaction().execute(async (trx) => {
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
      if (!updated) return undefined;
      await insertEvent(trx, { deploymentId: id, type: 'Warning', reason: 'Cancelled', message: reason, actor });
      return Number(updated.version);
    });
    if (version !== undefined) return { from: row.status, version };
  }
  throw new OperationError(`could not cancel ${id}: it kept changing under ${CANCEL_TRIES} attempts; try again`);
}

/** The id of a revision made by the controller's tools: unique because names are DNS labels. */
export function revisionId(project: string, service: string, revision: number): string {
  return `${project}.${service}.r${revision}`;
}

/** Serialises writers of one service's revisions within a transaction. */
export function lockService(project: string, service: string) {
  return sql`SELECT pg_advisory_xact_lock(hashtext(${`${project}/${service}`}))`;
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
    await lockService(project, service).execute(trx);
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
