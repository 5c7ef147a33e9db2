import { sql, type Kysely, type Transaction } from 'kysely';
import { formatDuration } from '../duration.js';
import { CANCEL_TRIES, cancelRow, lockServices } from '../store/operations.js';
import type { Database } from '../store/schema.js';
import { CONTROLLER_EXECUTOR } from '../types.js';
import {
  LIVE_STATUSES,
  planApply,
  planDelete,
  type ApplyPlan,
  type CancelStep,
  type DeletePlan,
  type LiveRevision,
  type StoredService,
  type StoredState,
} from './apply-plan.js';
import { serviceKey, type ServiceManifest } from './manifest.js';

/**
 * Executes apply and delete plans against Postgres. One transaction for the
 * whole apply: every service concerned is locked first (the same advisory
 * lock key as `deployerctl rollback`, `hashtext('project/service')`), then
 * read, planned and written; two applies of the same services run one after
 * the other, and the second finds the first's revisions.
 */

/** Another writer got in the way; nothing was written. */
export class ApplyConflictError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ApplyConflictError';
  }
}

/** How long an apply waits for another apply (or rollback) of the same services, by default. */
const LOCK_TIMEOUT_MS = 15_000;
/** Rows per INSERT statement (8 parameters each, far below Postgres' 65,535). */
const INSERT_CHUNK = 500;

type Db = Kysely<Database> | Transaction<Database>;

/** Who did it and how: recorded in events, `output` and `status_reason`. */
export interface WriteOptions {
  /** Recorded as the events' actor, e.g. `deployerctl:alice@host`. */
  actor: string;
  dryRun?: boolean;
  /** How long to wait for another writer of the same services (default 15 s) before giving up with an {@link ApplyConflictError}. */
  lockTimeoutMs?: number;
}

/** A cancel that found the revision already ended (by the controller, or another user). */
export interface AlreadyEnded {
  id: string;
  status: string;
}

export interface ApplyOutcome {
  plan: ApplyPlan;
  /** Revisions of `plan.pruned` and `plan.created[].replaces` that had ended before the cancel reached them. */
  alreadyEnded: AlreadyEnded[];
  dryRun: boolean;
}

export interface DeleteOutcome {
  plan: DeletePlan;
  alreadyEnded: AlreadyEnded[];
  dryRun: boolean;
}

function distinctProjects(manifests: readonly ServiceManifest[]): string[] {
  return [...new Set(manifests.map((m) => m.project))].sort();
}

/**
 * The stored state of every service of `projects`: live revisions (newest
 * first) and the highest revision number. Two queries whatever the count.
 */
export async function readStoredState(db: Db, projects: readonly string[]): Promise<StoredState> {
  const state = new Map<string, StoredService>();
  if (projects.length === 0) return state;
  const list = sql<string>`ANY(${[...projects]}::text[])`;
  const [live, maxima] = await Promise.all([
    db
      .selectFrom('deployments')
      .select(['id', 'project', 'service', 'revision', 'status', 'executor', 'spec', 'spec_hash', 'version'])
      .where('project', '=', list)
      .where('status', 'in', [...LIVE_STATUSES])
      .orderBy('revision', 'desc')
      .execute(),
    db
      .selectFrom('deployments')
      .select(['project', 'service', (eb) => eb.fn.max('revision').as('max_revision')])
      .where('project', '=', list)
      .groupBy(['project', 'service'])
      .execute(),
  ]);
  for (const row of maxima) {
    state.set(serviceKey(row.project, row.service), { live: [], maxRevision: Number(row.max_revision) });
  }
  for (const row of live) {
    const key = serviceKey(row.project, row.service);
    let record = state.get(key);
    if (!record) {
      record = { live: [], maxRevision: row.revision };
      state.set(key, record);
    }
    record.live.push({
      id: row.id,
      project: row.project,
      service: row.service,
      revision: row.revision,
      status: row.status as LiveRevision['status'],
      executor: row.executor,
      specHash: row.spec_hash,
      spec: row.spec,
      version: Number(row.version),
    });
  }
  return state;
}

/** Services of `projects` that have live revisions (the candidates of a prune). */
async function liveKeys(db: Db, projects: readonly string[]): Promise<string[]> {
  if (projects.length === 0) return [];
  const rows = await db
    .selectFrom('deployments')
    .select(['project', 'service'])
    .distinct()
    .where('project', '=', sql<string>`ANY(${[...projects]}::text[])`)
    .where('status', 'in', [...LIVE_STATUSES])
    .execute();
  return rows.map((r) => serviceKey(r.project, r.service));
}

function timestamped(line: string): string {
  return `[${new Date().toISOString()}] ${line}\n`;
}

/**
 * Cancels one revision (see {@link cancelRow}). Returns the status it had
 * ended with when it was already over.
 */
async function cancelRevision(trx: Transaction<Database>, revision: LiveRevision, reason: string, eventReason: string, actor: string): Promise<AlreadyEnded | undefined> {
  const result = await cancelRow(trx, revision.id, { from: LIVE_STATUSES, reason: () => reason, eventReason, actor });
  if (result.cancelled) return undefined;
  if (result.status === 'conflict') {
    throw new ApplyConflictError(`could not cancel ${revision.id}: it kept changing under ${CANCEL_TRIES} attempts; nothing was written, try again`);
  }
  return { id: revision.id, status: result.status };
}

async function cancelAll(trx: Transaction<Database>, steps: readonly CancelStep[], reason: (step: CancelStep, r: LiveRevision) => string, eventReason: string, actor: string) {
  const ended: AlreadyEnded[] = [];
  for (const step of steps) {
    for (const revision of step.cancel) {
      const result = await cancelRevision(trx, revision, reason(step, revision), eventReason, actor);
      if (result) ended.push(result);
    }
  }
  return ended;
}

/** Postgres error code of a failed statement. */
function pgCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function translate(err: unknown, lockTimeoutMs: number): unknown {
  const code = pgCode(err);
  if (code === '55P03') {
    return new ApplyConflictError(
      `another apply or rollback of the same services held them for over ${formatDuration(lockTimeoutMs)}; nothing was written, try again`,
      { cause: err },
    );
  }
  if (code === '23505') {
    const detail = (err as { detail?: string }).detail ?? '';
    return new ApplyConflictError(`a revision was created by another writer at the same time (${detail || 'unique violation'}); nothing was written, run apply again`, { cause: err });
  }
  if (code === '40P01') return new ApplyConflictError('deadlock with another writer; nothing was written, try again', { cause: err });
  return err;
}

/** Inserts the plan's new revisions and their `Applied` events. */
async function insertRevisions(trx: Transaction<Database>, plan: ApplyPlan, actor: string): Promise<void> {
  for (let i = 0; i < plan.created.length; i += INSERT_CHUNK) {
    const chunk = plan.created.slice(i, i + INSERT_CHUNK);
    const messages = chunk.map((c) => `revision ${c.revision} created by ${actor} from ${c.manifest.origin}`);
    await trx
      .insertInto('deployments')
      .values(
        chunk.map((c, j) => ({
          id: c.id,
          project: c.manifest.project,
          service: c.manifest.name,
          revision: c.revision,
          spec: JSON.stringify(c.manifest.spec),
          spec_hash: c.manifest.specHash,
          status: 'pending' as const,
          executor: CONTROLLER_EXECUTOR,
          output: timestamped(messages[j]!),
        })),
      )
      .execute();
    await trx
      .insertInto('deployment_events')
      .values(chunk.map((c, j) => ({ deployment_id: c.id, type: 'Normal' as const, reason: 'Applied', message: messages[j]!, actor })))
      .execute();
  }
}

/**
 * Applies manifests in one transaction: unchanged services write nothing,
 * changed ones get their next revision as `pending`, and with `prune` the
 * unnamed services of the same projects are cancelled. With `dryRun` the
 * plan is computed from the same reads and nothing is written.
 */
export async function applyManifests(
  db: Kysely<Database>,
  manifests: readonly ServiceManifest[],
  options: WriteOptions & { prune?: boolean },
): Promise<ApplyOutcome> {
  const projects = distinctProjects(manifests);
  const prune = options.prune ?? false;
  if (options.dryRun) {
    return { plan: planApply(manifests, await readStoredState(db, projects), { prune }), alreadyEnded: [], dryRun: true };
  }
  try {
    return await db.transaction().execute(async (trx) => {
      const keys = new Set(manifests.map((m) => serviceKey(m.project, m.name)));
      if (prune) for (const key of await liveKeys(trx, projects)) keys.add(key);
      await lockServices(trx, [...keys], options.lockTimeoutMs ?? LOCK_TIMEOUT_MS);
      const plan = planApply(manifests, await readStoredState(trx, projects), { prune });
      if (plan.created.length === 0 && plan.pruned.length === 0) return { plan, alreadyEnded: [], dryRun: false };
      await insertRevisions(trx, plan, options.actor);
      const replaced: CancelStep[] = plan.created
        .filter((c) => c.replaces.length > 0)
        .map((c) => ({ project: c.manifest.project, service: c.manifest.name, cancel: c.replaces }));
      const newRevision = new Map(plan.created.map((c) => [serviceKey(c.manifest.project, c.manifest.name), c]));
      const alreadyEnded = [
        ...(await cancelAll(
          trx,
          replaced,
          (step, r) => {
            const next = newRevision.get(serviceKey(step.project, step.service))!;
            return `cancelled by ${options.actor}: replaced by revision ${next.revision} (${next.id}) before it finished (was ${r.status})`;
          },
          'Replaced',
          options.actor,
        )),
        ...(await cancelAll(
          trx,
          plan.pruned,
          (step) => `cancelled by ${options.actor}: apply --prune, ${serviceKey(step.project, step.service)} is no longer in the manifests`,
          'Pruned',
          options.actor,
        )),
      ];
      return { plan, alreadyEnded, dryRun: false };
    });
  } catch (err) {
    throw translate(err, options.lockTimeoutMs ?? LOCK_TIMEOUT_MS);
  }
}

/** Cancels every live revision of the services the manifests name, in one transaction. */
export async function deleteManifests(db: Kysely<Database>, manifests: readonly ServiceManifest[], options: WriteOptions): Promise<DeleteOutcome> {
  const projects = distinctProjects(manifests);
  if (options.dryRun) {
    return { plan: planDelete(manifests, await readStoredState(db, projects)), alreadyEnded: [], dryRun: true };
  }
  try {
    return await db.transaction().execute(async (trx) => {
      await lockServices(trx, manifests.map((m) => serviceKey(m.project, m.name)), options.lockTimeoutMs ?? LOCK_TIMEOUT_MS);
      const plan = planDelete(manifests, await readStoredState(trx, projects));
      const alreadyEnded = await cancelAll(
        trx,
        plan.deleted,
        (step) => `cancelled by ${options.actor}: deployerctl delete ${serviceKey(step.project, step.service)}`,
        'Deleted',
        options.actor,
      );
      return { plan, alreadyEnded, dryRun: false };
    });
  } catch (err) {
    throw translate(err, options.lockTimeoutMs ?? LOCK_TIMEOUT_MS);
  }
}
