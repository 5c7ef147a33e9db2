/**
 * apply and delete against a real PostgreSQL (DESIGN.md 3.4): rows as the
 * contract says, idempotence (a second apply writes nothing at all), the
 * next revision on a change, prune, one transaction, and concurrent applies.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ApplyConflictError, applyManifests, deleteManifests } from '../../src/manifest/apply.js';
import type { ServiceManifest } from '../../src/manifest/manifest.js';
import { loadManifests } from '../../src/manifest/sources.js';
import { specHash } from '../../src/manifest/spec.js';
import { createDb } from '../../src/store/db.js';
import type { Database } from '../../src/store/schema.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const EXAMPLES = join(import.meta.dirname, '..', '..', 'manifests');
const ACTOR = 'deployerctl:test@host';

let database: TestDatabase;
let db: Kysely<Database>;
let dir: string;

beforeAll(async () => {
  database = await createTestDatabase('manifest_apply');
  db = database.db;
  dir = await mkdtemp(join(tmpdir(), 'manifest-apply-'));
});

afterAll(async () => {
  await database?.drop();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await sql`TRUNCATE deployments, deployment_events, rollbacks`.execute(db);
});

async function load(...paths: string[]): Promise<ServiceManifest[]> {
  const set = await loadManifests(paths);
  expect(set.problems).toEqual([]);
  return set.services;
}

/** A manifest file in the temp dir. */
async function file(name: string, ...docs: string[]): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, docs.join('---\n'));
  return path;
}

function doc(project: string, name: string, spec: string): string {
  return `apiVersion: deployer/v1\nkind: Service\nmetadata: { project: ${project}, name: ${name} }\nspec: ${spec}\n`;
}

async function rows() {
  return db.selectFrom('deployments').selectAll().orderBy('project').orderBy('service').orderBy('revision').execute();
}

async function events() {
  return db.selectFrom('deployment_events').selectAll().orderBy('id').execute();
}

/** Everything that an apply could change, to compare before and after. */
async function snapshot() {
  const all = await rows();
  return {
    rows: all.map((r) => ({ id: r.id, status: r.status, version: r.version, updated_at: r.updated_at.toISOString(), output: r.output })),
    events: (await events()).length,
  };
}

describe('apply', () => {
  it('inserts revision 1 of every service as pending, with the validated spec and its hash', async () => {
    const manifests = await load(EXAMPLES);
    const outcome = await applyManifests(db, manifests, { actor: ACTOR });
    expect(outcome.plan.created.map((c) => c.id).sort()).toEqual(['blog.app.r1', 'blog.db.r1', 'shop.cache.r1', 'shop.web.r1', 'shop.worker.r1']);
    const stored = await rows();
    expect(stored.map((r) => [r.id, r.project, r.service, r.revision, r.status, r.executor, r.phase, r.owner, r.version])).toEqual([
      ['blog.app.r1', 'blog', 'app', 1, 'pending', 'controller', null, null, 1],
      ['blog.db.r1', 'blog', 'db', 1, 'pending', 'controller', null, null, 1],
      ['shop.cache.r1', 'shop', 'cache', 1, 'pending', 'controller', null, null, 1],
      ['shop.web.r1', 'shop', 'web', 1, 'pending', 'controller', null, null, 1],
      ['shop.worker.r1', 'shop', 'worker', 1, 'pending', 'controller', null, null, 1],
    ]);
    for (const r of stored) {
      const m = manifests.find((x) => x.project === r.project && x.name === r.service)!;
      expect(r.spec).toEqual(m.spec);
      expect(r.spec_hash).toBe(specHash(m.spec));
      expect(r.output).toMatch(/^\[\d{4}-\d\d-\d\dT[^\]]+\] revision 1 created by deployerctl:test@host from .*\.yaml:\d+:1\n$/);
    }
    const web = stored.find((r) => r.id === 'shop.web.r1')!;
    expect(web.spec).toMatchObject({ image: 'registry.example.com/shop/web:1.4.2', replicas: 2, rollout: { progressDeadline: '10m', minReadySeconds: 5 } });
    const audit = await events();
    expect(audit.map((e) => [e.deployment_id, e.type, e.reason, e.actor])).toHaveLength(5);
    expect(audit.every((e) => e.reason === 'Applied' && e.type === 'Normal' && e.actor === ACTOR)).toBe(true);
  });

  it('writes nothing at all when applied again unchanged', async () => {
    const manifests = await load(EXAMPLES);
    await applyManifests(db, manifests, { actor: ACTOR });
    const before = await snapshot();
    const again = await applyManifests(db, await load(EXAMPLES), { actor: ACTOR, prune: true });
    expect(again.plan.created).toEqual([]);
    expect(again.plan.pruned).toEqual([]);
    expect(again.plan.unchanged).toHaveLength(5);
    expect(await snapshot()).toEqual(before);
  });

  it('treats a spec written with its defaults spelled out, or in another key order, as unchanged', async () => {
    await applyManifests(db, await load(await file('a.yaml', doc('shop', 'web', '{ image: "web:1", env: { B: "2", A: 1 } }'))), { actor: ACTOR });
    const before = await snapshot();
    const spelled = await file('b.yaml', doc('shop', 'web', '{ env: { A: "1", B: 2 }, replicas: 1, rollout: { minReadySeconds: 0, progressDeadline: 10m }, image: "web:1" }'));
    const outcome = await applyManifests(db, await load(spelled), { actor: ACTOR });
    expect(outcome.plan.unchanged).toHaveLength(1);
    expect(await snapshot()).toEqual(before);
  });

  it('inserts the next revision on a change, and only for the service that changed', async () => {
    await applyManifests(db, await load(join(EXAMPLES, 'shop.yaml')), { actor: ACTOR });
    // The first revisions went live meanwhile.
    await db.updateTable('deployments').set({ status: 'active' }).execute();
    const changed = (await load(join(EXAMPLES, 'shop.yaml'))).map((m) => (m.name === 'web' ? { ...m, spec: { ...m.spec, replicas: 3 }, specHash: specHash({ ...m.spec, replicas: 3 }) } : m));
    const outcome = await applyManifests(db, changed, { actor: ACTOR });
    expect(outcome.plan.created.map((c) => c.id)).toEqual(['shop.web.r2']);
    expect(outcome.plan.unchanged.map((u) => u.current.id).sort()).toEqual(['shop.cache.r1', 'shop.worker.r1']);
    const stored = await rows();
    expect(stored.map((r) => [r.id, r.status])).toEqual([
      ['shop.cache.r1', 'active'],
      ['shop.web.r1', 'active'],
      ['shop.web.r2', 'pending'],
      ['shop.worker.r1', 'active'],
    ]);
    expect(stored.find((r) => r.id === 'shop.web.r2')!.spec).toMatchObject({ replicas: 3 });
  });

  it('cancels an unfinished rollout it replaces, leaving the active revision serving', async () => {
    const v1 = await file('v1.yaml', doc('shop', 'web', '{ image: "web:1" }'));
    const v2 = await file('v2.yaml', doc('shop', 'web', '{ image: "web:2" }'));
    const v3 = await file('v3.yaml', doc('shop', 'web', '{ image: "web:3" }'));
    await applyManifests(db, await load(v1), { actor: ACTOR });
    await db.updateTable('deployments').set({ status: 'active' }).where('id', '=', 'shop.web.r1').execute();
    await applyManifests(db, await load(v2), { actor: ACTOR });
    await db.updateTable('deployments').set({ status: 'deploying', phase: 'starting' }).where('id', '=', 'shop.web.r2').execute();
    const outcome = await applyManifests(db, await load(v3), { actor: ACTOR });
    expect(outcome.plan.created[0]!.replaces.map((r) => r.id)).toEqual(['shop.web.r2']);
    const stored = await rows();
    expect(stored.map((r) => [r.id, r.status])).toEqual([
      ['shop.web.r1', 'active'],
      ['shop.web.r2', 'cancelled'],
      ['shop.web.r3', 'pending'],
    ]);
    const r2 = stored[1]!;
    expect(r2.status_reason).toBe(`cancelled by ${ACTOR}: replaced by revision 3 (shop.web.r3) before it finished (was deploying)`);
    expect(r2.finished_at).toBeInstanceOf(Date);
    expect(r2.output).toContain('replaced by revision 3');
    const replaced = (await events()).filter((e) => e.deployment_id === 'shop.web.r2' && e.reason === 'Replaced');
    expect(replaced).toHaveLength(1);
  });

  it('compares with the newest live revision: a failed newer one does not count', async () => {
    const v1 = await file('f1.yaml', doc('shop', 'web', '{ image: "web:1" }'));
    const v2 = await file('f2.yaml', doc('shop', 'web', '{ image: "web:2" }'));
    await applyManifests(db, await load(v1), { actor: ACTOR });
    await db.updateTable('deployments').set({ status: 'active' }).execute();
    await applyManifests(db, await load(v2), { actor: ACTOR });
    await db.updateTable('deployments').set({ status: 'failed' }).where('id', '=', 'shop.web.r2').execute();
    // Back to the spec that is serving: nothing to do.
    const same = await applyManifests(db, await load(v1), { actor: ACTOR });
    expect(same.plan.unchanged.map((u) => u.current.id)).toEqual(['shop.web.r1']);
    // The failed spec again: a new attempt, revision 3.
    const retry = await applyManifests(db, await load(v2), { actor: ACTOR });
    expect(retry.plan.created.map((c) => c.id)).toEqual(['shop.web.r3']);
  });

  it('with --prune cancels the services of the same projects that the files no longer name, and nothing else', async () => {
    await applyManifests(db, await load(EXAMPLES), { actor: ACTOR });
    await db.updateTable('deployments').set({ status: 'active' }).execute();
    const before = await rows();
    const only = await file('shop-web.yaml', doc('shop', 'web', '{ image: "registry.example.com/shop/web:1.4.2" }'));
    const withoutPrune = await applyManifests(db, await load(only), { actor: ACTOR });
    expect(withoutPrune.plan.pruned).toEqual([]);
    const outcome = await applyManifests(db, await load(only), { actor: ACTOR, prune: true });
    expect(outcome.plan.pruned.map((p) => `${p.project}/${p.service}`)).toEqual(['shop/cache', 'shop/worker']);
    const after = await rows();
    const status = Object.fromEntries(after.map((r) => [r.id, r.status]));
    expect(status).toMatchObject({ 'blog.app.r1': 'active', 'blog.db.r1': 'active', 'shop.cache.r1': 'cancelled', 'shop.worker.r1': 'cancelled' });
    for (const id of ['shop.cache.r1', 'shop.worker.r1']) {
      const was = before.find((r) => r.id === id)!;
      const now = after.find((r) => r.id === id)!;
      expect(now.version).toBe(was.version + 1);
      expect(now.status_reason).toBe(`cancelled by ${ACTOR}: apply --prune, ${id.split('.').slice(0, 2).join('/')} is no longer in the manifests`);
    }
    const pruned = (await events()).filter((e) => e.reason === 'Pruned');
    expect(pruned.map((e) => e.deployment_id).sort()).toEqual(['shop.cache.r1', 'shop.worker.r1']);
    // blog was not in the files: untouched.
    for (const id of ['blog.app.r1', 'blog.db.r1']) expect(after.find((r) => r.id === id)!.version).toBe(before.find((r) => r.id === id)!.version);
  });

  it('plans a dry run from the same reads and writes nothing', async () => {
    await applyManifests(db, await load(join(EXAMPLES, 'blog.yaml')), { actor: ACTOR });
    const before = await snapshot();
    const outcome = await applyManifests(db, await load(EXAMPLES), { actor: ACTOR, prune: true, dryRun: true });
    expect(outcome.dryRun).toBe(true);
    expect(outcome.plan.created.map((c) => c.id).sort()).toEqual(['shop.cache.r1', 'shop.web.r1', 'shop.worker.r1']);
    expect(outcome.plan.unchanged).toHaveLength(2);
    expect(await snapshot()).toEqual(before);
  });

  it('is one transaction: a failing insert leaves nothing of the others behind', async () => {
    // A platform row that already uses an id apply will want (legal: the platform picks its ids).
    await db
      .insertInto('deployments')
      .values({ id: 'shop.worker.r1', project: 'legacy', service: 'worker', revision: 1, spec: JSON.stringify({ image: 'x' }), spec_hash: 'h', status: 'active' })
      .execute();
    const before = await snapshot();
    const error = await applyManifests(db, await load(EXAMPLES), { actor: ACTOR }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplyConflictError);
    expect((error as Error).message).toMatch(/a revision was created by another writer at the same time \(Key \(id\)=\(shop\.worker\.r1\) already exists\.\); nothing was written/);
    expect(await snapshot()).toEqual(before);
  });

  it('serialises two concurrent applies of the same services: one creates, the other finds them unchanged', async () => {
    const other = createDb({ connectionString: database.url });
    try {
      const manifests = await load(EXAMPLES);
      const [a, b] = await Promise.all([applyManifests(db, manifests, { actor: ACTOR }), applyManifests(other, manifests, { actor: ACTOR })]);
      expect([a.plan.created.length, b.plan.created.length].sort()).toEqual([0, 5]);
      expect([a.plan.unchanged.length, b.plan.unchanged.length].sort()).toEqual([0, 5]);
      expect((await rows()).map((r) => r.id)).toHaveLength(5);
    } finally {
      await other.destroy();
    }
  });

  it('gives a clear error when another writer holds a service for too long', async () => {
    const holder = new pg.Client({ connectionString: database.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      // The same key as deployerctl rollback takes for shop/web.
      await holder.query(`SELECT pg_advisory_xact_lock(hashtext('shop/web'))`);
      const error = await applyManifests(db, await load(join(EXAMPLES, 'shop.yaml')), { actor: ACTOR, lockTimeoutMs: 300 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ApplyConflictError);
      expect((error as Error).message).toBe('another apply or rollback of the same services held them for over 300ms; nothing was written, try again');
      expect(await rows()).toEqual([]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await holder.end();
    }
  });
});

describe('delete', () => {
  it('cancels every live revision of the named services, with an event each', async () => {
    await applyManifests(db, await load(EXAMPLES), { actor: ACTOR });
    await db.updateTable('deployments').set({ status: 'active' }).execute();
    await applyManifests(db, await load(await file('web2.yaml', doc('shop', 'web', '{ image: "web:2" }'))), { actor: ACTOR });
    const outcome = await deleteManifests(db, await load(await file('del.yaml', doc('shop', 'web', '{ image: "any" }'), doc('shop', 'nope', '{ image: "any" }'))), { actor: ACTOR });
    expect(outcome.plan.deleted.map((d) => d.cancel.map((r) => r.id))).toEqual([['shop.web.r2', 'shop.web.r1']]);
    expect(outcome.plan.notFound.map((m) => m.name)).toEqual(['nope']);
    const status = Object.fromEntries((await rows()).map((r) => [r.id, r.status]));
    expect(status).toMatchObject({ 'shop.web.r1': 'cancelled', 'shop.web.r2': 'cancelled', 'shop.worker.r1': 'active', 'shop.cache.r1': 'active' });
    const deleted = (await events()).filter((e) => e.reason === 'Deleted');
    expect(deleted.map((e) => e.deployment_id).sort()).toEqual(['shop.web.r1', 'shop.web.r2']);
    // Deleting again finds nothing to cancel and writes nothing.
    const before = await snapshot();
    const again = await deleteManifests(db, await load(join(dir, 'del.yaml')), { actor: ACTOR });
    expect(again.plan.deleted).toEqual([]);
    expect(await snapshot()).toEqual(before);
  });
});
