/**
 * The operator's commands end to end, through commander, on a real
 * PostgreSQL: schema, validate, apply, diff, delete, get, describe and watch,
 * their output (golden files for tables, colour off) and exit codes.
 *
 * Golden files live in test/golden; `UPDATE_GOLDEN=1` rewrites them.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { sql, type Kysely } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { getDeployment, getOutput, listEvents } from '../../src/cli/commands/deployments-query.js';
import { formatDeploymentDetail } from '../../src/cli/commands/deployments-view.js';
import type { CommandIo } from '../../src/cli/commands/io.js';
import { watchDeployment } from '../../src/cli/commands/watch.js';
import type { Database } from '../../src/store/schema.js';
import type { Progress } from '../../src/types.js';
import { Sink, startManifestCli, type ManifestCliOptions, type ManifestCliRun } from '../support/manifest-cli.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/processes.js';

const ROOT = join(import.meta.dirname, '..', '..');
const EXAMPLES = join(ROOT, 'manifests');
const GOLDEN = join(ROOT, 'test', 'golden');

let database: TestDatabase;
let db: Kysely<Database>;
let dir: string;

beforeAll(async () => {
  database = await createTestDatabase('cli_manifests');
  db = database.db;
  dir = await mkdtemp(join(tmpdir(), 'cli-manifests-'));
});

afterAll(async () => {
  await database?.drop();
  await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await sql`TRUNCATE deployments, deployment_events, rollbacks`.execute(db);
});

/** Options of {@link cli}: the config environment's DATABASE_URL is the test database unless given. */
type CliOptions = Omit<ManifestCliOptions, 'configEnv'> & { configEnv?: NodeJS.ProcessEnv };

/** Starts `deployerctl ARGS` on the test database; `stdout` can be read while it runs. */
function start(args: string[], options: CliOptions = {}) {
  return startManifestCli(args, { ...options, configEnv: { DATABASE_URL: database.url, ...options.configEnv } });
}

function cli(args: string[], options: CliOptions = {}): Promise<ManifestCliRun> {
  return start(args, options).done;
}

async function golden(name: string, actual: string): Promise<void> {
  const path = join(GOLDEN, name);
  if (process.env.UPDATE_GOLDEN) await writeFile(path, actual);
  expect(actual).toBe(await readFile(path, 'utf8'));
}

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

function doc(project: string, name: string, spec: string): string {
  return `apiVersion: deployer/v1\nkind: Service\nmetadata: { project: ${project}, name: ${name} }\nspec: ${spec}\n`;
}

async function count(): Promise<number> {
  const row = await db.selectFrom('deployments').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

async function setRow(id: string, values: { status?: 'pending' | 'deploying' | 'active' | 'failed' | 'cancelled' | 'superseded'; phase?: string | null; progress?: Progress | null; reason?: string | null }) {
  await db
    .updateTable('deployments')
    .set({
      ...(values.status ? { status: values.status } : {}),
      ...(values.phase !== undefined ? { phase: values.phase as never } : {}),
      ...(values.progress !== undefined ? { progress: values.progress === null ? null : JSON.stringify(values.progress) } : {}),
      ...(values.reason !== undefined ? { status_reason: values.reason } : {}),
    })
    .where('id', '=', id)
    .execute();
}

/** Moves a row's timestamps back by SQL intervals, measured on the database's clock. */
async function age(id: string, created: string, started: string | null = created) {
  await sql`UPDATE deployments SET created_at = now() - ${created}::interval,
    started_at = ${started === null ? null : sql`now() - ${started}::interval`} WHERE id = ${id}`.execute(db);
}

describe('schema and validate', () => {
  it('schema prints the manifest JSON Schema', async () => {
    const run = await cli(['schema']);
    expect(run.code).toBe(0);
    const schema = JSON.parse(run.stdout) as { $schema: string; properties: Record<string, unknown> };
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(Object.keys(schema.properties)).toEqual(['apiVersion', 'kind', 'metadata', 'spec', 'status']);
  });

  it('validate accepts the examples and touches no database', async () => {
    const run = await cli(['validate', '-f', EXAMPLES], { configEnv: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' } });
    expect(run).toEqual({ code: 0, stdout: '5 services in 2 files: valid\n', stderr: '' });
  });

  it('validate prints one line per problem and exits 1', async () => {
    const bad = await file('bad.yaml', doc('shop', 'web', '{ image: "web:1", replicas: two, volumes: [data] }'));
    const run = await cli(['validate', '-f', bad]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      [
        `${bad}:4:35 spec.replicas: expected a whole number from 0 to 1000, got "two"`,
        `${bad}:4:50 spec.volumes[0]: expected name:/path or /path, with an optional :ro or :rw, got "data"`,
        'deployerctl: 2 problems in the manifests',
        '',
      ].join('\n'),
    );
  });

  it('requires -f', async () => {
    const run = await cli(['apply']);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/required option '-f, --filename <path\.\.\.>' not specified/);
  });
});

describe('apply', () => {
  it('creates, then finds everything unchanged, writing nothing the second time', async () => {
    const first = await cli(['apply', '-f', EXAMPLES]);
    expect(first).toEqual({
      code: 0,
      stdout: [
        'blog/app created: revision 1 (blog.app.r1), pending',
        'blog/db created: revision 1 (blog.db.r1), pending',
        'shop/cache created: revision 1 (shop.cache.r1), pending',
        'shop/web created: revision 1 (shop.web.r1), pending',
        'shop/worker created: revision 1 (shop.worker.r1), pending',
        'apply: 5 created, 0 unchanged, 0 pruned',
        '',
      ].join('\n'),
      stderr: '',
    });
    const before = await db.selectFrom('deployments').select(['id', 'version', 'updated_at']).orderBy('id').execute();
    const second = await cli(['apply', '-f', join(EXAMPLES, 'shop.yaml'), '-f', join(EXAMPLES, 'blog.yaml')]);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(
      [
        'blog/app unchanged: revision 1 (blog.app.r1, pending)',
        'blog/db unchanged: revision 1 (blog.db.r1, pending)',
        'shop/cache unchanged: revision 1 (shop.cache.r1, pending)',
        'shop/web unchanged: revision 1 (shop.web.r1, pending)',
        'shop/worker unchanged: revision 1 (shop.worker.r1, pending)',
        'apply: 0 created, 5 unchanged, 0 pruned',
        '',
      ].join('\n'),
    );
    expect(await db.selectFrom('deployments').select(['id', 'version', 'updated_at']).orderBy('id').execute()).toEqual(before);
  });

  it('writes nothing when one document among valid ones is invalid, and names it', async () => {
    const tree = await mkdtemp(join(dir, 'mixed-'));
    await writeFile(join(tree, 'a-good.yaml'), doc('shop', 'web', '{ image: "web:1" }') + '---\n' + doc('shop', 'api', '{ image: "api:1" }'));
    await writeFile(join(tree, 'b-bad.yaml'), doc('shop', 'worker', '{ image: "w:1", replicas: "two" }'));
    await writeFile(join(tree, 'README.md'), 'docs\n');
    const run = await cli(['apply', '-f', tree]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      [
        `deployerctl: note: skipped ${join(tree, 'README.md')}: not a .yaml or .yml file`,
        `${join(tree, 'b-bad.yaml')}:4:33 spec.replicas: expected a whole number from 0 to 1000, got "two"`,
        'deployerctl: 1 problem in the manifests; nothing was written',
        '',
      ].join('\n'),
    );
    expect(await count()).toBe(0);
  });

  it('reads stdin with -f -', async () => {
    const run = await cli(['apply', '-f', '-'], { stdin: doc('shop', 'web', '{ image: "web:1" }') });
    expect(run.stdout).toBe('shop/web created: revision 1 (shop.web.r1), pending\napply: 1 created, 0 unchanged, 0 pruned\n');
    expect(await count()).toBe(1);
  });

  it('prunes, and says what a dry run would do without writing', async () => {
    await cli(['apply', '-f', EXAMPLES]);
    await db.updateTable('deployments').set({ status: 'active' }).execute();
    const web = await file('shop-web-v2.yaml', doc('shop', 'web', '{ image: "registry.example.com/shop/web:1.5.0", replicas: 2 }'));
    const dry = await cli(['apply', '-f', web, '--prune', '--dry-run']);
    expect(dry.stdout).toBe(
      [
        'shop/cache would be pruned: would cancel shop.cache.r1 (active)',
        'shop/web would be created: revision 2 (shop.web.r2)',
        'shop/worker would be pruned: would cancel shop.worker.r1 (active)',
        'apply --dry-run: 1 to create, 0 unchanged, 2 to prune; nothing was written',
        '',
      ].join('\n'),
    );
    expect(await count()).toBe(5);
    const run = await cli(['apply', '-f', web, '--prune']);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(
      [
        'shop/cache pruned: cancelled shop.cache.r1 (active)',
        'shop/web created: revision 2 (shop.web.r2), pending',
        'shop/worker pruned: cancelled shop.worker.r1 (active)',
        'apply: 1 created, 0 unchanged, 2 pruned',
        '',
      ].join('\n'),
    );
    const status = Object.fromEntries((await db.selectFrom('deployments').select(['id', 'status']).execute()).map((r) => [r.id, r.status]));
    expect(status).toEqual({
      'blog.app.r1': 'active',
      'blog.db.r1': 'active',
      'shop.cache.r1': 'cancelled',
      'shop.web.r1': 'active',
      'shop.web.r2': 'pending',
      'shop.worker.r1': 'cancelled',
    });
  });

  it('fails with one line when the database cannot be reached', async () => {
    const run = await cli(['apply', '-f', EXAMPLES], { configEnv: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' } });
    expect(run.code).toBe(1);
    expect(run.stderr.split('\n')).toHaveLength(2);
    expect(run.stderr).toMatch(/^deployerctl: cannot connect to the database .*ECONNREFUSED/);
  });
});

describe('diff', () => {
  it('exits 0 with nothing to show, 1 with a unified diff per service, 2 on errors', async () => {
    await cli(['apply', '-f', EXAMPLES]);
    expect(await cli(['diff', '-f', EXAMPLES])).toEqual({ code: 0, stdout: '', stderr: '' });

    const shop = (await readFile(join(EXAMPLES, 'shop.yaml'), 'utf8')).replace('image: registry.example.com/shop/web:1.4.2\n  replicas: 2', 'image: registry.example.com/shop/web:1.5.0\n  replicas: 3');
    const changed = await file('shop.yaml', shop.replace(/---\napiVersion: deployer\/v1\nkind: Service\nmetadata: \{ project: shop, name: cache \}[\s\S]*$/, '') + '---\n' + doc('shop', 'search', '{ image: "search:1" }'));
    const run = await cli(['diff', '-f', changed, '--prune']);
    expect(run.code).toBe(1);
    await golden('diff-shop.txt', run.stdout.replaceAll(dir, '<dir>'));
    expect(await count()).toBe(5);

    const bad = await file('bad-diff.yaml', doc('shop', 'web', '{ image: 1 }'));
    const invalid = await cli(['diff', '-f', bad]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toBe(`${bad}:4:16 spec.image: expected a string, got 1\ndeployerctl: 1 problem in the manifests\n`);

    const down = await cli(['diff', '-f', EXAMPLES], { configEnv: { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' } });
    expect(down.code).toBe(2);
    // Forgetting -f is an error too, not "differences".
    expect(await cli(['diff'])).toEqual({ code: 2, stdout: '', stderr: "deployerctl: required option '-f, --filename <path...>' not specified (run with --help for usage)\n" });
  });

  it('colours the diff on a terminal only', async () => {
    const v = await file('colour.yaml', doc('shop', 'web', '{ image: "web:1" }'));
    const tty = await cli(['diff', '-f', v], { tty: true });
    expect(tty.stdout).toContain('\x1b[32m+image: web:1\x1b[0m');
    const plain = await cli(['diff', '-f', v], { tty: true, env: { NO_COLOR: '1' } });
    expect(plain.stdout).not.toContain('\x1b[');
  });
});

describe('delete', () => {
  it('cancels the services named; one not found is an error unless told otherwise', async () => {
    await cli(['apply', '-f', EXAMPLES]);
    const del = await file('del.yaml', doc('shop', 'web', '{ image: "x" }') + '---\n' + doc('shop', 'ghost', '{ image: "x" }'));
    const run = await cli(['delete', '-f', del]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('shop/web deleted: cancelled shop.web.r1 (pending)\ndelete: 1 deleted, 1 not found\n');
    expect(run.stderr).toBe(`deployerctl: shop/ghost not found: no pending, deploying or active revision (${del}:6:1)\n`);
    const row = await db.selectFrom('deployments').select(['status', 'status_reason']).where('id', '=', 'shop.web.r1').executeTakeFirstOrThrow();
    expect(row.status).toBe('cancelled');
    expect(row.status_reason).toMatch(/^cancelled by deployerctl:.*: deployerctl delete shop\/web$/);
    const again = await cli(['delete', '-f', del, '--ignore-not-found']);
    expect(again).toEqual({ code: 0, stdout: 'delete: 0 deleted, 2 not found\n', stderr: expect.stringContaining('shop/web not found') as unknown as string });
  });
});

/** A realistic set of rows: apply the examples, then move them through their lives by SQL, as the controller would. */
async function seedLifecycle(): Promise<void> {
  await cli(['apply', '-f', EXAMPLES]);
  await cli(['apply', '-f', await file('app-v2.yaml', doc('blog', 'app', '{ image: "ghcr.io/example/blog:2025.07.0", replicas: 3 }'))]);
  await cli(['apply', '-f', await file('web-v2.yaml', doc('shop', 'web', '{ image: "registry.example.com/shop/web:1.5.0", replicas: 2 }'))]);
  const done: Progress = { step: 6, total: 6, percent: 100, message: 'rollout complete' };
  await setRow('blog.db.r1', { status: 'active', progress: done });
  await age('blog.db.r1', '3 days');
  // r1 of blog/app was cancelled by the apply of r2 (it had not started); pretend it had gone live first.
  await setRow('blog.app.r1', { status: 'superseded', progress: done, reason: 'replaced by blog.app.r2' });
  await age('blog.app.r1', '2 days');
  await setRow('blog.app.r2', { status: 'active', progress: done });
  await age('blog.app.r2', '40 minutes');
  await setRow('shop.web.r1', { status: 'active', progress: done });
  await age('shop.web.r1', '20 hours');
  await setRow('shop.web.r2', { status: 'deploying', phase: 'health_check', progress: { step: 4, total: 6, percent: 50, message: 'waiting for healthy: 1/2' } });
  await age('shop.web.r2', '7 hours');
  await setRow('shop.worker.r1', { status: 'failed', phase: 'pulling', progress: { step: 1, total: 6, percent: 0, message: 'pulling' }, reason: 'image registry.example.com/shop/web:1.4.2 not found' });
  await age('shop.worker.r1', '5 hours 30 minutes');
  await age('shop.cache.r1', '12 minutes', null);
}

describe('get deployments', () => {
  it('prints the table with the STUCK marker, colour off when not a terminal (golden)', async () => {
    await seedLifecycle();
    const run = await cli(['get', 'deployments']);
    expect(run.code).toBe(0);
    expect(run.stdout).not.toContain('\x1b[');
    await golden('get-deployments.txt', run.stdout);
  });

  it('filters by project, service and status', async () => {
    await seedLifecycle();
    const ids = (run: ManifestCliRun) => run.stdout.trim().split('\n').slice(1).map((l) => l.split(/\s+/)[0]);
    expect(ids(await cli(['get', 'deployments', '--project', 'blog']))).toEqual(['blog.app.r1', 'blog.app.r2', 'blog.db.r1']);
    expect(ids(await cli(['get', 'deployments', '--service', 'shop/web']))).toEqual(['shop.web.r1', 'shop.web.r2']);
    expect(ids(await cli(['get', 'deployment', '--status', 'pending,deploying']))).toEqual(['shop.cache.r1', 'shop.web.r2']);
    expect((await cli(['get', 'deployments', '--project', 'nothing'])).stdout).toBe('No deployments found.\n');
    const bad = await cli(['get', 'deployments', '--status', 'running']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^deployerctl: --status: expected pending, deploying, active, failed, cancelled, superseded/);
  });

  it('paints active rows green and STUCK red on a terminal, unless NO_COLOR', async () => {
    await seedLifecycle();
    const tty = await cli(['get', 'deployments'], { tty: true });
    expect(tty.stdout).toContain('\x1b[32mshop.web.r1');
    expect(tty.stdout).toContain('\x1b[31mSTUCK 7h\x1b[0m');
    expect((await cli(['get', 'deployments'], { tty: true, env: { NO_COLOR: '1' } })).stdout).not.toContain('\x1b[');
  });

  it('prints JSON with the columns and whether each is stuck', async () => {
    await seedLifecycle();
    const list = JSON.parse((await cli(['get', 'deployments', '-o', 'json'])).stdout) as { id: string; stuck: boolean; stuck_seconds: number | null; spec: unknown; status: string }[];
    expect(list.map((d) => d.id)).toHaveLength(7);
    const web2 = list.find((d) => d.id === 'shop.web.r2')!;
    expect(web2.stuck).toBe(true);
    expect(web2.stuck_seconds).toBeGreaterThanOrEqual(7 * 3600);
    expect(list.filter((d) => d.stuck).map((d) => d.id)).toEqual(['shop.web.r2']);
  });

  it('-o yaml of the active revisions applies again unchanged, and restores them into an empty database', async () => {
    await seedLifecycle();
    const exported = await cli(['get', 'deployments', '--status', 'active', '-o', 'yaml']);
    expect(exported.code).toBe(0);
    const backup = await file('backup.yaml', exported.stdout);
    const again = await cli(['apply', '-f', backup]);
    expect(again.stdout).toBe(
      [
        'blog/app unchanged: revision 2 (blog.app.r2, active)',
        'blog/db unchanged: revision 1 (blog.db.r1, active)',
        // shop/web has a newer revision deploying: the active one's spec differs from it, so it comes back as revision 3.
        'shop/web created: revision 3 (shop.web.r3), pending',
        '  cancelled shop.web.r2 (deploying): replaced before it finished',
        'apply: 1 created, 2 unchanged, 0 pruned',
        '',
      ].join('\n'),
    );
    const stored = await db.selectFrom('deployments').select(['id', 'spec_hash']).execute();
    const hash = (id: string) => stored.find((r) => r.id === id)!.spec_hash;
    expect(hash('shop.web.r3')).toBe(hash('shop.web.r1'));

    const restore = await createTestDatabase('cli_restore');
    try {
      const run = await cli(['apply', '-f', backup], { configEnv: { DATABASE_URL: restore.url } });
      expect(run.stdout).toContain('apply: 3 created, 0 unchanged, 0 pruned');
      const restored = await restore.db.selectFrom('deployments').select(['project', 'service', 'spec_hash']).orderBy('project').orderBy('service').execute();
      expect(restored.map((r) => [r.project, r.service, r.spec_hash])).toEqual([
        ['blog', 'app', hash('blog.app.r2')],
        ['blog', 'db', hash('blog.db.r1')],
        ['shop', 'web', hash('shop.web.r1')],
      ]);
    } finally {
      await restore.drop();
    }
  });
});

describe('describe deployment', () => {
  it('prints spec, status, phase, progress, events newest last and the log (golden, fixed clock)', async () => {
    await seedLifecycle();
    const id = 'shop.web.r2';
    await db.insertInto('deployment_events').values({ deployment_id: id, type: 'Normal', reason: 'Pulling', message: 'phase pulling (step 1/6)', actor: 'ctl-a:4242' }).execute();
    await db.insertInto('deployment_events').values({ deployment_id: id, type: 'Warning', reason: 'Unhealthy', message: 'replica 1 unhealthy', actor: 'ctl-a:4242' }).execute();
    // Fixed instants everywhere (with the version-bump trigger off, which would set updated_at to now()).
    await sql`ALTER TABLE deployments DISABLE TRIGGER deployments_touch`.execute(db);
    try {
      await sql`UPDATE deployments SET created_at = '2025-06-01T05:00:00Z', started_at = '2025-06-01T04:59:00Z', heartbeat_at = '2025-06-01T11:59:30Z',
        updated_at = '2025-06-01T11:59:30Z', owner = 'ctl-a:4242', attempts = 1,
        output = ${'[2025-06-01T05:00:00.000Z] revision 2 created by deployerctl:op@host from web.yaml:1:1\n[2025-06-01T05:00:02.000Z] rollout started\n'} WHERE id = ${id}`.execute(db);
    } finally {
      await sql`ALTER TABLE deployments ENABLE TRIGGER deployments_touch`.execute(db);
    }
    await sql`UPDATE deployment_events SET at = '2025-06-01T05:00:00Z', actor = 'deployerctl:op@host', message = 'revision 2 created by deployerctl:op@host from web.yaml:1:1'
      WHERE deployment_id = ${id} AND reason = 'Applied'`.execute(db);
    await sql`UPDATE deployment_events SET at = '2025-06-01T05:00:03Z' WHERE deployment_id = ${id} AND reason = 'Pulling'`.execute(db);
    await sql`UPDATE deployment_events SET at = '2025-06-01T05:02:10Z' WHERE deployment_id = ${id} AND reason = 'Unhealthy'`.execute(db);
    const deployment = (await getDeployment(db, id))!;
    const events = await listEvents(db, id, 50);
    const output = (await getOutput(db, id))!;
    const text = formatDeploymentDetail(
      { deployment, events: events.events, totalEvents: events.total, containers: { ok: true, containers: [] }, outputTail: output.trimEnd().split('\n'), outputSkipped: 0 },
      { now: new Date('2025-06-01T12:00:00Z'), stuckTimeoutMs: 6 * 3_600_000, color: false },
    );
    await golden('describe-deployment.txt', text);
  });

  it('describes through the command, and names a deployment that does not exist', async () => {
    await seedLifecycle();
    const run = await cli(['describe', 'deployment', 'shop.worker.r1', '--no-containers']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Id: +shop\.worker\.r1\nService: +shop\/worker\nRevision: +1\nStatus: +failed\nReason: +image registry\.example\.com\/shop\/web:1\.4\.2 not found\nPhase: +pulling\n/);
    expect(run.stdout).toContain('\nContainers: not looked up (--no-containers)\n');
    expect(run.stdout).toMatch(/\nEvents:\n +AT +TYPE +REASON +ACTOR +MESSAGE\n +\S+ +Normal +Applied +deployerctl:\S+ +revision 1 created by /);
    expect(run.stdout).not.toContain('Stuck:');
    const stuck = await cli(['describe', 'deployment', 'shop.web.r2', '--no-containers']);
    expect(stuck.stdout).toMatch(/\nStuck: +STUCK 7h in health_check \(stuckTimeout 6h\)\n/);
    const missing = await cli(['describe', 'deployment', 'shop.nope.r9']);
    expect(missing).toEqual({ code: 1, stdout: '', stderr: 'deployerctl: no deployment shop.nope.r9\n' });
  });

  it('prints the rest and exits 1 when the container runtime cannot answer (never "no containers")', async () => {
    await seedLifecycle();
    const run = await cli(['describe', 'deployment', 'shop.web.r1'], { configEnv: { DOCKER_HOST: `unix://${join(dir, 'no-such-docker.sock')}` } });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/\nContainers: unknown: docker list_containers: .*no-such-docker\.sock/);
    expect(run.stdout).toContain('\nEvents:\n');
    expect(run.stderr).toMatch(/^deployerctl: containers of shop\.web\.r1 unknown: docker list_containers: /);
  });
});

describe('watch', () => {
  const phases: [string, Progress][] = [
    ['pulling', { step: 1, total: 6, percent: 0, message: 'checking image' }],
    ['creating', { step: 2, total: 6, percent: 17, message: 'phase creating' }],
    ['starting', { step: 3, total: 6, percent: 33, message: 'phase starting' }],
    ['health_check', { step: 4, total: 6, percent: 50, message: 'waiting for healthy: 0/1' }],
    ['health_check', { step: 4, total: 6, percent: 50, message: 'waiting for healthy: 1/1' }],
    ['activating', { step: 5, total: 6, percent: 67, message: 'phase activating' }],
  ];

  it('prints one line per change when not a terminal and exits 0 when the deployment ends active', async () => {
    await cli(['apply', '-f', await file('w.yaml', doc('shop', 'web', '{ image: "web:1" }'))]);
    const watch = start(['watch', 'shop.web.r1']);
    await waitFor('the first line', () => watch.stdout.text === 'shop.web.r1 pending\n');
    const expected = ['shop.web.r1 pending'];
    for (const [phase, progress] of phases) {
      await setRow('shop.web.r1', { status: 'deploying', phase, progress });
      const line = `shop.web.r1 deploying ${phase} step ${progress.step}/6 ${progress.percent}%: ${progress.message}`;
      expected.push(line);
      await waitFor(line, () => watch.stdout.text.endsWith(`${line}\n`));
    }
    // A write that changes nothing shown (a heartbeat) prints nothing.
    await sql`UPDATE deployments SET heartbeat_at = now() WHERE id = 'shop.web.r1'`.execute(db);
    await setRow('shop.web.r1', { status: 'active', phase: 'retiring', progress: { step: 6, total: 6, percent: 83, message: 'retiring previous revision' } });
    const run = await watch.done;
    expected.push('shop.web.r1 active retiring step 6/6 83%: retiring previous revision', 'shop.web.r1 is active: revision 1 is serving');
    expect(run).toEqual({ code: 0, stdout: expected.map((l) => `${l}\n`).join(''), stderr: '' });
  });

  it('exits non-zero when the deployment ends failed, with the reason', async () => {
    await cli(['apply', '-f', await file('wf.yaml', doc('shop', 'api', '{ image: "api:1" }'))]);
    const watch = start(['watch', 'shop.api.r1']);
    await waitFor('the first line', () => watch.stdout.text !== '');
    await setRow('shop.api.r1', { status: 'deploying', phase: 'health_check', progress: { step: 4, total: 6, percent: 50, message: 'waiting for healthy: 0/1' } });
    await waitFor('health_check', () => watch.stdout.text.includes('health_check'));
    await setRow('shop.api.r1', { status: 'failed', reason: 'container shop.api.r1.0 became unhealthy' });
    const run = await watch.done;
    expect(run.code).toBe(1);
    expect(run.stdout.trimEnd().split('\n').slice(-2)).toEqual([
      'shop.api.r1 failed health_check step 4/6 50%: waiting for healthy: 0/1',
      'shop.api.r1 ended failed: container shop.api.r1.0 became unhealthy',
    ]);
  });

  it('exits non-zero for cancelled and superseded too, at once when already ended', async () => {
    await cli(['apply', '-f', await file('wc.yaml', doc('shop', 'web', '{ image: "web:1" }') + '---\n' + doc('shop', 'api', '{ image: "api:1" }'))]);
    await setRow('shop.web.r1', { status: 'superseded' });
    expect(await cli(['watch', 'shop.web.r1'])).toEqual({ code: 1, stdout: 'shop.web.r1 superseded\nshop.web.r1 ended superseded\n', stderr: '' });
    const watch = start(['watch', 'shop.api.r1']);
    await waitFor('the first line', () => watch.stdout.text !== '');
    await cli(['delete', '-f', join(dir, 'wc.yaml')]);
    const run = await watch.done;
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/shop\.api\.r1 ended cancelled: cancelled by deployerctl:\S+: deployerctl delete shop\/api\n$/);
  });

  it('draws a progress bar in place on a terminal', async () => {
    await cli(['apply', '-f', await file('wt.yaml', doc('shop', 'web', '{ image: "web:1" }'))]);
    const watch = start(['watch', 'shop.web.r1'], { tty: true });
    await waitFor('the bar', () => watch.stdout.text.includes('[....................]'));
    await setRow('shop.web.r1', { status: 'deploying', phase: 'starting', progress: phases[2]![1] });
    await waitFor('step 3', () => watch.stdout.text.includes('step 3/6'));
    await setRow('shop.web.r1', { status: 'active', phase: null, progress: { step: 6, total: 6, percent: 100, message: 'rollout complete' } });
    const run = await watch.done;
    expect(run.code).toBe(0);
    expect(run.stdout).toBe(
      [
        '\r\x1b[2Kshop.web.r1 pending [....................] step 0/6   0%',
        '\r\x1b[2Kshop.web.r1 deploying [#######.............] step 3/6  33% starting: phase starting',
        '\r\x1b[2Kshop.web.r1 active [####################] step 6/6 100%: rollout complete',
        '\n\x1b[32mshop.web.r1 is active: revision 1 is serving\x1b[0m\n',
      ].join(''),
    );
  });

  it('keeps following by polling when LISTEN is not available', async () => {
    await cli(['apply', '-f', await file('wp.yaml', doc('shop', 'web', '{ image: "web:1" }'))]);
    const stdout = new Sink();
    const io: CommandIo = { stdout, stderr: new Sink(), stdin: Readable.from([]), env: {} };
    const watching = watchDeployment({ db, id: 'shop.web.r1', io, fastPollMs: 30 });
    await waitFor('the first line', () => stdout.text !== '');
    await setRow('shop.web.r1', { status: 'deploying', phase: 'pulling', progress: phases[0]![1] });
    await waitFor('pulling', () => stdout.text.includes('pulling'));
    await setRow('shop.web.r1', { status: 'active', phase: null, progress: null });
    expect(await watching).toBe(0);
    expect(stdout.text).toBe('shop.web.r1 pending\nshop.web.r1 deploying pulling step 1/6 0%: checking image\nshop.web.r1 active\nshop.web.r1 is active: revision 1 is serving\n');
  });

  it('gives up after --timeout, and names an unknown deployment', async () => {
    await cli(['apply', '-f', await file('wto.yaml', doc('shop', 'web', '{ image: "web:1" }'))]);
    expect(await cli(['watch', 'shop.web.r1', '--timeout', '300ms'])).toEqual({
      code: 1,
      stdout: 'shop.web.r1 pending\n',
      stderr: 'deployerctl: timed out after 300ms waiting for shop.web.r1 (still pending)\n',
    });
    expect(await cli(['watch', 'shop.nope.r1'])).toEqual({ code: 1, stdout: '', stderr: 'deployerctl: no deployment shop.nope.r1\n' });
    const bad = await cli(['watch', 'shop.web.r1', '--timeout', 'soon']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^deployerctl: --timeout: expected a duration/);
  });
});
