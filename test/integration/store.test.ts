/**
 * The store against a real PostgreSQL (DESIGN.md section 5): migrations, the
 * version-bump and NOTIFY triggers, compare-and-set transitions, what the
 * sweep loads, leases with fencing epochs and the leader elector on top.
 */
import { randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaderElector } from '../../src/controller/leader.js';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import { createDb } from '../../src/store/db.js';
import { acquireLease, readLease, releaseLease } from '../../src/store/leases.js';
import { migrateDown, migrateUp, migrationStatus, NOTIFY_CHANNEL } from '../../src/store/migrate.js';
import type { Database } from '../../src/store/schema.js';
import { PgStore, type Fence, type Transition } from '../../src/store/store.js';
import type { DeploymentStatus } from '../../src/types.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const TABLES = ['deployments', 'deployment_events', 'rollbacks', 'leases'] as const;

function uid(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Seed {
  id?: string;
  project?: string;
  service?: string;
  revision?: number;
  status?: DeploymentStatus;
}

/** Inserts one deployment row with plain defaults; returns its id. */
async function insertDeployment(db: Kysely<Database>, seed: Seed = {}): Promise<string> {
  const id = seed.id ?? uid('d');
  await db
    .insertInto('deployments')
    .values({
      id,
      project: seed.project ?? uid('p'),
      service: seed.service ?? 'web',
      revision: seed.revision ?? 1,
      spec: JSON.stringify({ image: 'busybox:latest', replicas: 1 }),
      spec_hash: 'hash',
      status: seed.status ?? 'pending',
    })
    .execute();
  return id;
}

async function row(db: Kysely<Database>, id: string) {
  return db.selectFrom('deployments').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}

async function eventsOf(db: Kysely<Database>, id: string) {
  return db.selectFrom('deployment_events').selectAll().where('deployment_id', '=', id).orderBy('id').execute();
}

async function existingTables(db: Kysely<Database>): Promise<string[]> {
  const result = await sql<{ table_name: string }>`
    SELECT table_name FROM information_schema.tables
    WHERE table_schema = 'public' AND table_name = ANY(${[...TABLES]}::text[])
    ORDER BY table_name`.execute(db);
  return result.rows.map((r) => r.table_name);
}

async function existingFunctions(db: Kysely<Database>): Promise<string[]> {
  const result = await sql<{ proname: string }>`
    SELECT proname FROM pg_proc WHERE proname LIKE 'deployer\_deployments\_%' ORDER BY proname`.execute(db);
  return result.rows.map((r) => r.proname);
}

function transitionOf(id: string, expectVersion: number, overrides: Partial<Transition> = {}): Transition {
  return {
    id,
    expectVersion,
    expectStatus: 'deploying',
    status: 'failed',
    reason: 'timed out after 6h0m in phase health_check',
    outputLine: '[deployer-controller] timed out after 6h0m in phase health_check',
    event: { deploymentId: id, type: 'Warning', reason: 'ZombieFailed', message: 'timed out', actor: 'test' },
    ...overrides,
  };
}

describe('migrations', () => {
  let t: TestDatabase;

  beforeAll(async () => {
    t = await createTestDatabase('migrate', { migrate: false });
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('start with 0001-initial pending and no tables', async () => {
    const status = await migrationStatus(t.db);
    expect(status.map((m) => m.name)).toEqual(['0001-initial']);
    expect(status[0]?.executedAt).toBeUndefined();
    expect(await existingTables(t.db)).toEqual([]);
  });

  it('up creates every table and the triggers, and is idempotent', async () => {
    const results = await migrateUp(t.db);
    expect(results).toEqual([{ migrationName: '0001-initial', direction: 'Up', status: 'Success' }]);
    expect(await existingTables(t.db)).toEqual([...TABLES].sort());
    expect(await existingFunctions(t.db)).toEqual(['deployer_deployments_notify', 'deployer_deployments_touch']);
    const triggers = await sql<{ tgname: string }>`
      SELECT tgname FROM pg_trigger WHERE tgrelid = 'deployments'::regclass AND NOT tgisinternal ORDER BY tgname`.execute(t.db);
    expect(triggers.rows.map((r) => r.tgname)).toEqual(['deployments_notify', 'deployments_touch']);

    const status = await migrationStatus(t.db);
    expect(status[0]?.name).toBe('0001-initial');
    expect(status[0]?.executedAt).toBeInstanceOf(Date);

    expect(await migrateUp(t.db)).toEqual([]);
  });

  it('down drops the tables and functions and marks the migration pending again', async () => {
    const results = await migrateDown(t.db);
    expect(results).toEqual([{ migrationName: '0001-initial', direction: 'Down', status: 'Success' }]);
    expect(await existingTables(t.db)).toEqual([]);
    expect(await existingFunctions(t.db)).toEqual([]);
    const status = await migrationStatus(t.db);
    expect(status[0]?.executedAt).toBeUndefined();

    expect(await migrateDown(t.db)).toEqual([]);
  });

  it('up again after down restores a working schema', async () => {
    await migrateUp(t.db);
    expect(await existingTables(t.db)).toEqual([...TABLES].sort());
    const id = await insertDeployment(t.db);
    expect((await row(t.db, id)).version).toBe(1);
  });

  it('concurrent ups apply the migration once', async () => {
    const other = await createTestDatabase('migrate_race', { migrate: false });
    const second = createDb({ connectionString: other.url });
    try {
      const [a, b] = await Promise.all([migrateUp(other.db), migrateUp(second)]);
      expect([...a, ...b]).toEqual([{ migrationName: '0001-initial', direction: 'Up', status: 'Success' }]);
      expect(await existingTables(other.db)).toEqual([...TABLES].sort());
    } finally {
      await second.destroy();
      await other.drop();
    }
  });
});

describe('deployments triggers', () => {
  let t: TestDatabase;
  let listener: pg.Client;
  const received: Array<{ channel: string; payload: string | undefined }> = [];

  beforeAll(async () => {
    t = await createTestDatabase('triggers');
    listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    listener.on('notification', (n) => received.push({ channel: n.channel, payload: n.payload }));
    await listener.query(`LISTEN ${NOTIFY_CHANNEL}`);
  });
  afterAll(async () => {
    await listener?.end();
    await t?.drop();
  });

  /** Waits for a notification about `id` with `version`. */
  async function notification(id: string, version: number, timeoutMs = 5_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const n of received) {
        const payload = JSON.parse(n.payload ?? '{}') as Record<string, unknown>;
        if (payload.id === id && payload.version === version) {
          expect(n.channel).toBe('deployer_deployments');
          return payload;
        }
      }
      if (Date.now() > deadline) throw new Error(`no NOTIFY for ${id} version ${version}; got ${JSON.stringify(received)}`);
      await sleep(20);
    }
  }

  it('the channel is deployer_deployments', () => {
    expect(NOTIFY_CHANNEL).toBe('deployer_deployments');
  });

  it('NOTIFY on insert and on update carries id, status and version', async () => {
    const id = await insertDeployment(t.db);
    expect(await notification(id, 1)).toEqual({ id, status: 'pending', version: 1 });

    await sql`UPDATE deployments SET status = 'deploying' WHERE id = ${id}`.execute(t.db);
    expect(await notification(id, 2)).toEqual({ id, status: 'deploying', version: 2 });

    await sql`UPDATE deployments SET output = output || 'line' WHERE id = ${id}`.execute(t.db);
    expect(await notification(id, 3)).toEqual({ id, status: 'deploying', version: 3 });
  });

  it('no NOTIFY escapes a rolled-back transaction', async () => {
    const id = uid('rolled-back');
    await t.db
      .transaction()
      .execute(async (trx) => {
        await insertDeployment(trx, { id });
        throw new Error('roll back');
      })
      .catch(() => undefined);
    const marker = await insertDeployment(t.db);
    await notification(marker, 1);
    expect(received.some((n) => n.payload?.includes(id))).toBe(false);
  });

  it('any UPDATE, even raw SQL that sets version itself, bumps version by one and updated_at', async () => {
    const id = await insertDeployment(t.db);
    const before = await row(t.db, id);
    expect(before.version).toBe(1);
    await sleep(20);

    await sql`UPDATE deployments SET status_reason = 'edited by hand' WHERE id = ${id}`.execute(t.db);
    const after = await row(t.db, id);
    expect(after.version).toBe(2);
    expect(after.status_reason).toBe('edited by hand');
    expect(after.updated_at.getTime()).toBeGreaterThan(before.updated_at.getTime());
    expect(after.created_at.getTime()).toBe(before.created_at.getTime());

    // A writer cannot hold the version back (or push it forward) by setting it.
    await sql`UPDATE deployments SET version = 1, updated_at = '2000-01-01' WHERE id = ${id}`.execute(t.db);
    const forced = await row(t.db, id);
    expect(forced.version).toBe(3);
    expect(forced.updated_at.getTime()).toBeGreaterThanOrEqual(after.updated_at.getTime());

    await sql`UPDATE deployments SET version = 1000 WHERE id = ${id}`.execute(t.db);
    expect((await row(t.db, id)).version).toBe(4);

    // A no-op update is still a write.
    await sql`UPDATE deployments SET status = status WHERE id = ${id}`.execute(t.db);
    expect((await row(t.db, id)).version).toBe(5);
  });
});

describe('PgStore.transition and recordEvent', () => {
  let t: TestDatabase;

  beforeAll(async () => {
    t = await createTestDatabase('transition');
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('compare-and-set succeeds once; the stale version then loses and writes no event', async () => {
    const id = await insertDeployment(t.db, { status: 'deploying' });
    const before = await t.store.getDeployment(id);
    expect(before).toMatchObject({ id, status: 'deploying', version: 1, finishedAt: null });

    expect(await t.store.transition(transitionOf(id, before!.version))).toBe(true);
    const after = await row(t.db, id);
    expect(after.status).toBe('failed');
    expect(after.version).toBe(2);
    expect(after.status_reason).toBe('timed out after 6h0m in phase health_check');
    expect(after.output).toBe('[deployer-controller] timed out after 6h0m in phase health_check\n');
    expect(after.finished_at).toBeInstanceOf(Date);
    const events = await eventsOf(t.db, id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'Warning', reason: 'ZombieFailed', message: 'timed out', actor: 'test' });

    // The same change again, with the version it read before: refused, nothing written.
    expect(await t.store.transition(transitionOf(id, before!.version, { expectStatus: 'deploying', status: 'cancelled' }))).toBe(false);
    const unchanged = await row(t.db, id);
    expect(unchanged).toEqual(after);
    expect(await eventsOf(t.db, id)).toHaveLength(1);
  });

  it('the expected status is checked too', async () => {
    const id = await insertDeployment(t.db, { status: 'pending' });
    expect(await t.store.transition(transitionOf(id, 1, { expectStatus: 'deploying' }))).toBe(false);
    expect((await row(t.db, id)).status).toBe('pending');
    expect(await eventsOf(t.db, id)).toHaveLength(0);
  });

  it('appends to output and leaves finished_at alone for a non-terminal status', async () => {
    const id = await insertDeployment(t.db, { status: 'pending' });
    await sql`UPDATE deployments SET output = 'first\n' WHERE id = ${id}`.execute(t.db);
    const ok = await t.store.transition(
      transitionOf(id, 2, { expectStatus: 'pending', status: 'deploying', reason: 'claimed', outputLine: 'second' }),
    );
    expect(ok).toBe(true);
    const after = await row(t.db, id);
    expect(after).toMatchObject({ status: 'deploying', version: 3, output: 'first\nsecond\n', finished_at: null, status_reason: 'claimed' });

    expect(await t.store.transition(transitionOf(id, 3, { outputLine: undefined }))).toBe(true);
    expect((await row(t.db, id)).output).toBe('first\nsecond\n');
  });

  it('a transition on a missing row is false and writes no event', async () => {
    const id = uid('missing');
    expect(await t.store.transition(transitionOf(id, 1))).toBe(false);
    expect(await eventsOf(t.db, id)).toHaveLength(0);
  });

  it('a cancel made after the controller read the row makes its transition lose; the cancel stays', async () => {
    const id = await insertDeployment(t.db, { status: 'deploying' });
    const read = await t.store.getDeployment(id);
    // The user cancels (psql, the platform) between the controller's read and its write.
    await sql`UPDATE deployments SET status = 'cancelled', status_reason = 'cancelled by user' WHERE id = ${id}`.execute(t.db);

    expect(await t.store.transition(transitionOf(id, read!.version))).toBe(false);
    const after = await row(t.db, id);
    expect(after).toMatchObject({ status: 'cancelled', status_reason: 'cancelled by user', version: 2, output: '' });
    expect(await eventsOf(t.db, id)).toHaveLength(0);
  });

  it('a cancel committing while the transition waits on the row lock still wins', async () => {
    const id = await insertDeployment(t.db, { status: 'deploying' });
    const read = await t.store.getDeployment(id);
    const user = new pg.Client({ connectionString: t.url });
    await user.connect();
    try {
      await user.query('BEGIN');
      await user.query(`UPDATE deployments SET status = 'cancelled' WHERE id = $1`, [id]);
      // The controller's UPDATE now blocks on the row lock the user's transaction holds.
      const pending = t.store.transition(transitionOf(id, read!.version));
      let settled = false;
      void pending.finally(() => (settled = true));
      await sleep(200);
      expect(settled).toBe(false);
      await user.query('COMMIT');
      expect(await pending).toBe(false);
    } finally {
      await user.end();
    }
    expect((await row(t.db, id)).status).toBe('cancelled');
    expect(await eventsOf(t.db, id)).toHaveLength(0);
  });

  it('of two concurrent transitions from the same version exactly one wins', async () => {
    const id = await insertDeployment(t.db, { status: 'deploying' });
    const results = await Promise.all([
      t.store.transition(transitionOf(id, 1, { status: 'failed' })),
      t.store.transition(transitionOf(id, 1, { status: 'cancelled' })),
    ]);
    expect(results.filter(Boolean)).toHaveLength(1);
    expect((await row(t.db, id)).version).toBe(2);
    expect(await eventsOf(t.db, id)).toHaveLength(1);
  });

  it('recordEvent without a fence writes the event', async () => {
    const id = uid('event');
    expect(await t.store.recordEvent({ deploymentId: id, type: 'Normal', reason: 'OrphanRemoved', message: 'm', actor: 'a' })).toBe(true);
    expect(await eventsOf(t.db, id)).toMatchObject([{ deployment_id: id, type: 'Normal', reason: 'OrphanRemoved', message: 'm', actor: 'a' }]);
  });
});

describe('PgStore.loadDesired', () => {
  let t: TestDatabase;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    t = await createTestDatabase('desired');
    const add = async (key: string, project: string, service: string, revision: number, status: DeploymentStatus) => {
      ids[key] = await insertDeployment(t.db, { id: key, project, service, revision, status });
    };
    await add('web-pending', 'shop', 'web', 10, 'pending');
    await add('web-deploying', 'shop', 'web', 9, 'deploying');
    await add('web-active', 'shop', 'web', 8, 'active');
    await add('web-failed-7', 'shop', 'web', 7, 'failed');
    await add('web-failed-6', 'shop', 'web', 6, 'failed');
    await add('web-failed-5', 'shop', 'web', 5, 'failed');
    await add('web-superseded-4', 'shop', 'web', 4, 'superseded');
    await add('web-cancelled-3', 'shop', 'web', 3, 'cancelled');
    await add('web-failed-2', 'shop', 'web', 2, 'failed');
    await add('api-failed-2', 'shop', 'api', 2, 'failed');
    await add('api-failed-1', 'shop', 'api', 1, 'failed');
    await add('blog-active', 'blog', 'web', 1, 'active');
    // A progress value must not break the union (jsonb has no plain equality in every form).
    await sql`UPDATE deployments SET progress = ${JSON.stringify({ step: 2, total: 6, percent: 33, message: 'creating' })}::jsonb
      WHERE id = 'web-deploying'`.execute(t.db);
    await t.db
      .insertInto('rollbacks')
      .values([
        { project: 'shop', service: 'web', from_deployment_id: 'web-failed-7', to_deployment_id: 'web-active', status: 'in_progress' },
        { project: 'shop', service: 'api', from_deployment_id: 'api-failed-2', to_deployment_id: 'api-failed-1', status: 'completed' },
      ])
      .execute();
  });
  afterAll(async () => {
    await t?.drop();
  });

  const idsOf = (state: { deployments: Array<{ id: string }> }) => state.deployments.map((d) => d.id).sort();

  it('returns the non-terminal rows only, with nothing observed and retainFailed 0', async () => {
    const state = await t.store.loadDesired([], 0);
    expect(idsOf(state)).toEqual(['blog-active', 'web-active', 'web-deploying', 'web-pending']);
    const deploying = state.deployments.find((d) => d.id === 'web-deploying');
    expect(deploying).toMatchObject({ project: 'shop', service: 'web', revision: 9, status: 'deploying', version: 2 });
    expect(deploying?.progress).toEqual({ step: 2, total: 6, percent: 33, message: 'creating' });
    expect(deploying?.createdAt).toBeInstanceOf(Date);
  });

  it('adds the rows whose ids are observed, whatever their status; unknown ids add nothing', async () => {
    const state = await t.store.loadDesired(['web-superseded-4', 'web-cancelled-3', 'api-failed-1', 'web-active', 'no-such-row'], 0);
    expect(idsOf(state)).toEqual(['api-failed-1', 'blog-active', 'web-active', 'web-cancelled-3', 'web-deploying', 'web-pending', 'web-superseded-4']);
  });

  it('adds the newest retainFailed failed rows of each service', async () => {
    expect(idsOf(await t.store.loadDesired([], 1))).toEqual(['api-failed-2', 'blog-active', 'web-active', 'web-deploying', 'web-failed-7', 'web-pending']);
    expect(idsOf(await t.store.loadDesired([], 2))).toEqual([
      'api-failed-1',
      'api-failed-2',
      'blog-active',
      'web-active',
      'web-deploying',
      'web-failed-6',
      'web-failed-7',
      'web-pending',
    ]);
  });

  it('returns each row once when observed and retained at the same time', async () => {
    const state = await t.store.loadDesired(['web-failed-7', 'web-failed-2', 'web-active'], 1);
    expect(idsOf(state)).toEqual(['api-failed-2', 'blog-active', 'web-active', 'web-deploying', 'web-failed-2', 'web-failed-7', 'web-pending']);
  });

  it('returns the in-progress rollbacks only', async () => {
    const state = await t.store.loadDesired([], 0);
    expect(state.rollbacks).toEqual([
      { id: expect.any(String), project: 'shop', service: 'web', fromDeploymentId: 'web-failed-7', toDeploymentId: 'web-active', status: 'in_progress' },
    ]);
  });

  it('countByStatus counts every row', async () => {
    expect(await t.store.countByStatus()).toEqual({ pending: 1, deploying: 1, active: 2, failed: 6, superseded: 1, cancelled: 1 });
  });

  it('a failed query rejects instead of answering empty', async () => {
    const broken = createDb({ connectionString: t.url });
    await sql`SELECT 1`.execute(broken);
    await broken.destroy();
    await expect(new PgStore(broken).loadDesired([], 0)).rejects.toThrow();
  });
});

describe('leases and fencing', () => {
  let t: TestDatabase;

  beforeAll(async () => {
    t = await createTestDatabase('leases');
  });
  afterAll(async () => {
    await t?.drop();
  });

  /** Ends the live lease `name` now, by the database's clock. */
  async function expire(name: string): Promise<void> {
    await sql`UPDATE leases SET expires_at = now() - interval '1 second' WHERE name = ${name}`.execute(t.db);
  }

  it('first holder gets epoch 1; renewal keeps it; a second holder is refused while the lease lives', async () => {
    const name = uid('lease');
    const first = await acquireLease(t.db, name, 'a', 10_000);
    expect(first?.epoch).toBe(1);
    expect(first!.expiresAt.getTime()).toBeGreaterThan(Date.now() + 8_000);
    expect(first!.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 10_000);
    const stored = await readLease(t.db, name);
    expect(stored).toMatchObject({ name, holder: 'a', epoch: 1 });

    await sleep(30);
    const renewed = await acquireLease(t.db, name, 'a', 10_000);
    expect(renewed?.epoch).toBe(1);
    expect(renewed!.expiresAt.getTime()).toBeGreaterThan(first!.expiresAt.getTime());
    const storedAfter = await readLease(t.db, name);
    expect(storedAfter!.renewed_at.getTime()).toBeGreaterThan(stored!.renewed_at.getTime());

    expect(await acquireLease(t.db, name, 'b', 10_000)).toBeUndefined();
    expect(await readLease(t.db, name)).toMatchObject({ holder: 'a', epoch: 1 });
  });

  it('after expiry another holder takes over with epoch + 1, and the old holder is then refused', async () => {
    const name = uid('lease');
    expect((await acquireLease(t.db, name, 'a', 10_000))?.epoch).toBe(1);
    await expire(name);
    expect((await acquireLease(t.db, name, 'b', 10_000))?.epoch).toBe(2);
    expect(await acquireLease(t.db, name, 'a', 10_000)).toBeUndefined();
    expect(await readLease(t.db, name)).toMatchObject({ holder: 'b', epoch: 2 });
  });

  it('expiry is real time: a short lease lapses by itself', async () => {
    const name = uid('lease');
    expect((await acquireLease(t.db, name, 'a', 300))?.epoch).toBe(1);
    expect(await acquireLease(t.db, name, 'b', 300)).toBeUndefined();
    await sleep(450);
    expect((await acquireLease(t.db, name, 'b', 300))?.epoch).toBe(2);
  });

  it('a holder coming back after its own lease lapsed gets a new epoch', async () => {
    const name = uid('lease');
    expect((await acquireLease(t.db, name, 'a', 10_000))?.epoch).toBe(1);
    await expire(name);
    expect((await acquireLease(t.db, name, 'a', 10_000))?.epoch).toBe(2);
  });

  it('releaseLease frees the lease at once for the next holder, and only the holder can release it', async () => {
    const name = uid('lease');
    expect((await acquireLease(t.db, name, 'a', 60_000))?.epoch).toBe(1);
    await releaseLease(t.db, name, 'b');
    expect(await acquireLease(t.db, name, 'b', 60_000)).toBeUndefined();
    await releaseLease(t.db, name, 'a');
    expect((await acquireLease(t.db, name, 'b', 60_000))?.epoch).toBe(2);
  });

  it('a stale fence (an older epoch) makes transition and recordEvent write nothing', async () => {
    const name = uid('lease');
    const oldLease = await acquireLease(t.db, name, 'a', 10_000);
    const oldFence: Fence = { lease: name, holder: 'a', epoch: oldLease!.epoch };
    const id = await insertDeployment(t.db, { status: 'deploying' });

    // While 'a' leads, its fence holds.
    expect(await t.store.recordEvent({ deploymentId: id, type: 'Normal', reason: 'Fenced', message: 'ok', actor: 'a' }, oldFence)).toBe(true);
    expect(await eventsOf(t.db, id)).toHaveLength(1);

    await expire(name);
    const newLease = await acquireLease(t.db, name, 'b', 10_000);
    const newFence: Fence = { lease: name, holder: 'b', epoch: newLease!.epoch };
    expect(newFence.epoch).toBe(2);

    expect(await t.store.transition(transitionOf(id, 1), oldFence)).toBe(false);
    expect(await t.store.recordEvent({ deploymentId: id, type: 'Normal', reason: 'Fenced', message: 'stale', actor: 'a' }, oldFence)).toBe(false);
    expect(await row(t.db, id)).toMatchObject({ status: 'deploying', version: 1 });
    expect(await eventsOf(t.db, id)).toHaveLength(1);

    // The same holder name with a stale epoch is still stale.
    expect(await t.store.transition(transitionOf(id, 1), { ...newFence, epoch: 1 })).toBe(false);
    expect(await t.store.transition(transitionOf(id, 1), { ...newFence, lease: uid('other-lease') })).toBe(false);

    expect(await t.store.transition(transitionOf(id, 1), newFence)).toBe(true);
    expect((await row(t.db, id)).status).toBe('failed');
    expect((await eventsOf(t.db, id)).map((e) => e.reason)).toEqual(['Fenced', 'ZombieFailed']);
  });

  it('an expired lease fences its holder out even before anybody takes over', async () => {
    const name = uid('lease');
    const lease = await acquireLease(t.db, name, 'a', 10_000);
    const fence: Fence = { lease: name, holder: 'a', epoch: lease!.epoch };
    const id = await insertDeployment(t.db, { status: 'deploying' });
    await expire(name);

    expect(await t.store.transition(transitionOf(id, 1), fence)).toBe(false);
    expect(await t.store.recordEvent({ deploymentId: id, type: 'Normal', reason: 'Fenced', message: 'late', actor: 'a' }, fence)).toBe(false);
    expect(await row(t.db, id)).toMatchObject({ status: 'deploying', version: 1 });
    expect(await eventsOf(t.db, id)).toHaveLength(0);
  });
});

describe('LeaderElector', () => {
  let t: TestDatabase;
  const electors: LeaderElector[] = [];
  const logger = createLogger('silent');

  beforeAll(async () => {
    t = await createTestDatabase('leader');
  });
  afterEach(async () => {
    await Promise.all(electors.splice(0).map((e) => e.stop()));
  });
  afterAll(async () => {
    await t?.drop();
  });

  function elector(lease: string, holder: string, ttlMs: number, db: Kysely<Database> = t.db) {
    const metrics = new Metrics({ processMetrics: false });
    let elected = 0;
    const e = new LeaderElector({ db, lease, holder, ttlMs, logger, metrics, onElected: () => elected++ });
    electors.push(e);
    return {
      e,
      metrics,
      elected: () => elected,
      leaderGauge: async () => (await metrics.leader.get()).values[0]?.value,
    };
  }

  it('is not leader and has no fence before acquiring', () => {
    const { e } = elector(uid('lease'), 'a', 10_000);
    expect(e.isLeader()).toBe(false);
    expect(e.fence()).toBeUndefined();
  });

  it('tryAcquire makes one leader with a fence; the other is refused and has no fence', async () => {
    const lease = uid('lease');
    const a = elector(lease, 'a', 10_000);
    const b = elector(lease, 'b', 10_000);

    expect(await a.e.tryAcquire()).toBe(true);
    expect(a.e.isLeader()).toBe(true);
    expect(a.e.fence()).toEqual({ lease, holder: 'a', epoch: 1 });
    expect(a.elected()).toBe(1);
    expect(await a.leaderGauge()).toBe(1);

    expect(await b.e.tryAcquire()).toBe(false);
    expect(b.e.isLeader()).toBe(false);
    expect(b.e.fence()).toBeUndefined();
    expect(b.elected()).toBe(0);
    expect(await b.leaderGauge()).toBe(0);

    // Renewal: same epoch, onElected not called again.
    expect(await a.e.tryAcquire()).toBe(true);
    expect(a.e.fence()?.epoch).toBe(1);
    expect(a.elected()).toBe(1);

    // The fence works against the store.
    const id = await insertDeployment(t.db, { status: 'deploying' });
    expect(await t.store.transition(transitionOf(id, 1), a.e.fence())).toBe(true);
  });

  it('stops counting itself leader a margin before the lease expires, before anyone can take over', async () => {
    const lease = uid('lease');
    const a = elector(lease, 'a', 600);
    const b = elector(lease, 'b', 600);
    expect(await a.e.tryAcquire()).toBe(true);
    await sleep(500);
    // Past expiry - ttl/5 locally, yet the database still gives the lease to 'a'.
    expect(a.e.isLeader()).toBe(false);
    expect(a.e.fence()).toBeUndefined();
    expect(await b.e.tryAcquire()).toBe(false);
    await sleep(250);
    expect(await b.e.tryAcquire()).toBe(true);
    expect(b.e.fence()).toEqual({ lease, holder: 'b', epoch: 2 });
    // 'a' cannot get back in and its old fence (epoch 1) is refused.
    expect(await a.e.tryAcquire()).toBe(false);
    const id = await insertDeployment(t.db, { status: 'deploying' });
    expect(await t.store.transition(transitionOf(id, 1), { lease, holder: 'a', epoch: 1 })).toBe(false);
    expect(await t.store.transition(transitionOf(id, 1), b.e.fence())).toBe(true);
  });

  it('start renews the lease and keeps the epoch; stop releases it at once for the next leader', async () => {
    const lease = uid('lease');
    const a = elector(lease, 'a', 300);
    const b = elector(lease, 'b', 300);
    await a.e.start();
    await a.e.start(); // twice is safe
    expect(a.e.isLeader()).toBe(true);
    expect(a.elected()).toBe(1);
    const first = await readLease(t.db, lease);

    await sleep(800); // more than two lease lengths: only renewals keep it
    expect(a.e.isLeader()).toBe(true);
    expect(a.e.fence()?.epoch).toBe(1);
    expect(a.elected()).toBe(1);
    const renewed = await readLease(t.db, lease);
    expect(renewed?.epoch).toBe(1);
    expect(renewed!.renewed_at.getTime()).toBeGreaterThan(first!.renewed_at.getTime());
    expect(await b.e.tryAcquire()).toBe(false);

    await a.e.stop();
    await a.e.stop(); // twice is safe
    expect(a.e.isLeader()).toBe(false);
    expect(a.e.fence()).toBeUndefined();
    expect(await a.leaderGauge()).toBe(0);
    expect(await b.e.tryAcquire()).toBe(true);
    expect(b.e.fence()?.epoch).toBe(2);
  });

  it('stop releases a lease taken by tryAcquire alone, without start (run --once)', async () => {
    const lease = uid('lease');
    const a = elector(lease, 'a', 60_000);
    const b = elector(lease, 'b', 60_000);
    expect(await a.e.tryAcquire()).toBe(true);
    await a.e.stop();
    expect(a.e.isLeader()).toBe(false);
    expect(await a.leaderGauge()).toBe(0);
    const row = await readLease(t.db, lease);
    expect(row!.expires_at.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
    expect(await b.e.tryAcquire()).toBe(true);
    expect(b.e.fence()?.epoch).toBe(2);
  });

  it('a database error counts as "not leader" instead of throwing', async () => {
    const dead = createDb({ connectionString: 'postgres://nobody:nothing@127.0.0.1:1/none', connectionTimeoutMs: 500 });
    try {
      const a = elector(uid('lease'), 'a', 10_000, dead);
      expect(await a.e.tryAcquire()).toBe(false);
      expect(a.e.isLeader()).toBe(false);
      expect(a.e.fence()).toBeUndefined();
      expect(a.elected()).toBe(0);
    } finally {
      await dead.destroy();
    }
  });
});
