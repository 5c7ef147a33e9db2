/**
 * `deployerctl` as a user runs it: the built CLI in a child process, against a
 * test database on the run's real Postgres and a PRIVATE dockerd (DESIGN.md
 * section 5), then with no DATABASE_URL at all (the embedded default, 3.7).
 * Skipped loudly when this machine cannot run a private dockerd, except in CI,
 * where it fails instead.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateDockerd } from '../support/dockerd.js';
import { startEngine } from '../support/engine.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import {
  cleanEnv,
  dockerSkip,
  freePort,
  killChildren,
  pidAlive,
  requireDocker,
  ROOT,
  runCli,
  startCli,
  waitFor,
  type BackgroundProcess,
} from '../support/processes.js';
import { makeStateDir } from '../support/state-dir.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const skip = dockerSkip('deployerctl CLI tests');

/** Runs the built CLI to its end (SIGKILL by pid after 45 s). */
function cli(args: readonly string[], env: NodeJS.ProcessEnv) {
  return runCli(args, env, 45_000);
}

/** Stderr as its non-empty lines. */
function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '');
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(3_000) });
  return { status: res.status, body: await res.text() };
}

describe.skipIf(skip !== null)('deployerctl', { timeout: 90_000 }, () => {
  let dockerd: PrivateDockerd | undefined;
  let docker: Docker;
  let image: string;
  let tmp: string;

  beforeAll(async () => {
    requireDocker();
    // Test what a user runs: the built CLI (global-setup.ts builds it from the current sources).
    ({ dockerd, docker, image } = await startEngine());
    tmp = mkdtempSync(join(tmpdir(), 'deployerctl-test-'));
  }, 120_000);

  afterAll(async () => {
    killChildren();
    await dockerd?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  /** Creates (and starts) a container on the private engine; returns its id. */
  async function container(labels: Record<string, string>): Promise<string> {
    const c = await docker.createContainer({
      Image: image,
      Cmd: ['sleep', '600'],
      Labels: labels,
      HostConfig: { NetworkMode: 'none' },
    });
    await c.start();
    return c.id;
  }

  async function exists(id: string): Promise<boolean> {
    try {
      await docker.getContainer(id).inspect();
      return true;
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 404) return false;
      throw error;
    }
  }

  function ourLabels(deploymentId: string, extra: Record<string, string> = {}): Record<string, string> {
    return {
      'deployer.deployment_id': deploymentId,
      'deployer.managed-by': 'deployer-controller',
      'deployer.project': 'shop',
      'deployer.service': 'web',
      'deployer.revision': '1',
      'deployer.replica': '0',
      ...extra,
    };
  }

  describe('without a database', () => {
    const env = () => cleanEnv({ DEPLOYER_STATE_DIR: join(tmp, 'unused-state') });

    it('version prints the package version', async () => {
      const r = await cli(['version'], env());
      expect(r).toMatchObject({ code: 0, stdout: `deployerctl ${VERSION}\n`, stderr: '' });
      const flag = await cli(['--version-flag'], env());
      expect(flag).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
    });

    it('--help works for the program and each subcommand', async () => {
      const program = await cli(['--help'], env());
      expect(program.code).toBe(0);
      expect(program.stdout).toContain('Usage: deployerctl');
      for (const command of ['run', 'plan', 'migrate', 'version']) expect(program.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));

      const help: Record<string, RegExp> = { run: /--once[\s\S]*--dry-run/, plan: /--output/, migrate: /up, down or status/, version: /print the version/ };
      for (const [command, shows] of Object.entries(help)) {
        const r = await cli([command, '--help'], env());
        expect(r.code, `${command} --help`).toBe(0);
        expect(r.stdout).toContain(`Usage: deployerctl ${command}`);
        expect(r.stdout).toMatch(shows);
        const viaHelp = await cli(['help', command], env());
        expect(viaHelp.code, `help ${command}`).toBe(0);
        expect(viaHelp.stdout).toBe(r.stdout);
      }
    });

    it('usage errors are one line on stderr with a non-zero exit', async () => {
      for (const args of [['bogus'], ['plan', '-o', 'yaml'], ['plan', '--nope'], ['migrate', 'sideways']]) {
        const r = await cli(args, env());
        expect(r.code, args.join(' ')).toBe(1);
        expect(lines(r.stderr), args.join(' ')).toHaveLength(1);
        expect(r.stdout).toBe('');
      }
      expect((await cli(['plan', '-o', 'yaml'], env())).stderr).toMatch(/yaml.*table, json/);
    });

    it('with no DATABASE_URL and no daemon running, plan fails with one line naming DATABASE_URL', async () => {
      const r = await cli(['plan'], env());
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain('DATABASE_URL');
      expect(r.stderr).toContain(join(tmp, 'unused-state'));
      expect(r.stdout).toBe('');
    });
  });

  describe('configuration errors', () => {
    const env = (extra: Record<string, string> = {}) =>
      cleanEnv({ DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', DEPLOYER_STATE_DIR: join(tmp, 'unused-state'), ...extra });

    it('a bad environment value exits non-zero with one line naming the key', async () => {
      const r = await cli(['plan'], env({ DEPLOYER_STUCK_TIMEOUT: 'soon' }));
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain('DEPLOYER_STUCK_TIMEOUT');
      expect(r.stderr).toContain('stuckTimeout');
      expect(r.stdout).toBe('');

      const run = await cli(['run', '--once'], env({ DEPLOYER_MAX_ATTEMPTS: 'many' }));
      expect(run.code).toBe(1);
      expect(lines(run.stderr)).toHaveLength(1);
      expect(run.stderr).toContain('DEPLOYER_MAX_ATTEMPTS');
    });

    it('an unknown config file key is named with file:line:col', async () => {
      const file = join(tmp, 'unknown-key.yaml');
      writeFileSync(file, '# deployer config\nresync: 10s\nstuckTimeot: 6h\n');
      const r = await cli(['--config', file, 'plan'], env());
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:\\d+ .*stuckTimeot`));
      expect(r.stderr).toMatch(/unknown key/);
    });

    it('a bad config file value is named with file:line:col; the environment wins over the file', async () => {
      const file = join(tmp, 'bad-value.yaml');
      writeFileSync(file, 'resync: 10s\n\nstuckTimeout: soon\n');
      const r = await cli(['plan', '--config', file], env());
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain(`${file}:3:`);
      expect(r.stderr).toContain('stuckTimeout');

      // With the key set in the environment the file's bad value is never used:
      // the command gets as far as the (unreachable) database.
      const overridden = await cli(['plan', '--config', file], env({ DEPLOYER_STUCK_TIMEOUT: '6h' }));
      expect(overridden.code).toBe(1);
      expect(overridden.stderr).not.toContain('stuckTimeout');
      expect(lines(overridden.stderr)).toHaveLength(1);
    });

    it('a missing config file is one line naming it', async () => {
      const file = join(tmp, 'no-such-config.yaml');
      const r = await cli(['--config', file, 'plan'], env());
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain(file);
    });
  });

  describe('migrate', () => {
    let t: TestDatabase;
    beforeAll(async () => {
      t = await createTestDatabase('cli_migrate', { migrate: false });
    });
    afterAll(async () => {
      await t?.drop();
    });

    it('status, up, up again, down', async () => {
      const env = cleanEnv({ DATABASE_URL: t.url, DEPLOYER_STATE_DIR: join(tmp, 'unused-state') });
      const pending = await cli(['migrate', 'status'], env);
      expect(pending).toMatchObject({ code: 0, stdout: '0001-initial\tpending\n' });

      const up = await cli(['migrate'], env);
      expect(up).toMatchObject({ code: 0, stdout: '0001-initial\tapplied\n' });
      const status = await cli(['migrate', 'status'], env);
      expect(status.code).toBe(0);
      expect(status.stdout).toMatch(/^0001-initial\tapplied \d{4}-\d\d-\d\dT/);

      expect(await cli(['migrate', 'up'], env)).toMatchObject({ code: 0, stdout: 'already up to date\n' });
      expect(await cli(['migrate', 'down'], env)).toMatchObject({ code: 0, stdout: '0001-initial\treverted\n' });
      expect(await cli(['migrate', 'down'], env)).toMatchObject({ code: 0, stdout: 'nothing to revert\n' });
      expect((await cli(['migrate', 'status'], env)).stdout).toBe('0001-initial\tpending\n');
    });

    it('an unreachable database is a one-line error', async () => {
      const r = await cli(['migrate', 'status'], cleanEnv({ DATABASE_URL: 'postgres://nobody:secret@127.0.0.1:1/none' }));
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).not.toContain('secret');
    });
  });

  describe('plan and run --once against DATABASE_URL and the private dockerd', () => {
    let t: TestDatabase;
    let env: NodeJS.ProcessEnv;
    const orphanId = `orphan-${randomBytes(4).toString('hex')}`;
    const activeId = `active-${randomBytes(4).toString('hex')}`;
    const foreignId = `foreign-${randomBytes(4).toString('hex')}`;
    let orphan: string;
    let active: string;
    let foreign: string;
    let unlabelled: string;

    beforeAll(async () => {
      t = await createTestDatabase('cli');
      env = cleanEnv({
        DATABASE_URL: t.url,
        DOCKER_HOST: dockerd!.dockerHost,
        DEPLOYER_STATE_DIR: join(tmp, 'unused-state'),
        DEPLOYER_LOG_LEVEL: 'warn',
      });
    });
    afterAll(async () => {
      for (const id of [orphan, active, foreign, unlabelled]) {
        if (id) await docker.getContainer(id).remove({ force: true }).catch(() => undefined);
      }
      await t?.drop();
    });

    const events = () => t.db.selectFrom('deployment_events').selectAll().execute();

    it('plan exits 0 when there is nothing to do', async () => {
      const r = await cli(['plan'], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('No drift');
    });

    it('plan exits 2 on drift (a failed deployment whose container still runs) and changes nothing', async () => {
      const insert = (id: string, revision: number, status: 'failed' | 'active') =>
        t.db
          .insertInto('deployments')
          .values({ id, project: 'shop', service: 'web', revision, spec: JSON.stringify({ image }), spec_hash: 'h', status })
          .execute();
      await insert(orphanId, 1, 'failed');
      await insert(activeId, 2, 'active');
      await insert(foreignId, 3, 'failed');
      orphan = await container(ourLabels(orphanId));
      active = await container(ourLabels(activeId, { 'deployer.revision': '2' }));
      foreign = await container(ourLabels(foreignId, { 'deployer.managed-by': 'someone-else' }));
      unlabelled = await container({ purpose: 'not ours' });

      const r = await cli(['plan'], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(2);
      expect(r.stdout).toMatch(new RegExp(`planned\\s+remove\\s+container \\S+ \\(${orphan.slice(0, 12)}\\)\\s+${orphanId}`));
      expect(r.stdout).not.toContain(activeId);
      expect(r.stdout).not.toContain(foreignId);
      expect(r.stdout).toContain('2 managed container(s)');

      for (const id of [orphan, active, foreign, unlabelled]) expect(await exists(id)).toBe(true);
      expect(await events()).toEqual([]);
      expect((await t.db.selectFrom('deployments').select(['id', 'version']).where('id', '=', orphanId).executeTakeFirst())?.version).toBe(1);
    });

    it('plan -o json is valid JSON with an actions array', async () => {
      const r = await cli(['plan', '-o', 'json'], env);
      expect(r.code).toBe(2);
      const plan = JSON.parse(r.stdout) as { actions: Array<Record<string, unknown>>; managed: number; drift: Record<string, number> };
      expect(Array.isArray(plan.actions)).toBe(true);
      expect(plan.actions).toEqual([expect.objectContaining({ kind: 'remove_container', deploymentId: orphanId, containerId: orphan, cause: 'failed' })]);
      expect(plan.managed).toBe(2);
      expect(plan.drift).toMatchObject({ orphan: 1, zombie: 0 });
      expect(await exists(orphan)).toBe(true);
      expect(await events()).toEqual([]);
    });

    it('run --once --dry-run shows the plan and changes nothing', async () => {
      const r = await cli(['run', '--once', '--dry-run'], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(orphanId);
      expect(r.stdout).toMatch(/planned\s+remove/);
      for (const id of [orphan, active, foreign, unlabelled]) expect(await exists(id)).toBe(true);
      expect(await events()).toEqual([]);
      expect(await t.db.selectFrom('leases').selectAll().execute()).toEqual([]);
    });

    it('run --once removes the orphan, records it, exits 0 and touches nothing else', async () => {
      const r = await cli(['run', '--once'], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/applied\s+remove/);

      expect(await exists(orphan)).toBe(false);
      for (const id of [active, foreign, unlabelled]) expect(await exists(id)).toBe(true);
      expect((await docker.getContainer(active).inspect()).State.Running).toBe(true);

      const written = await events();
      expect(written).toHaveLength(1);
      expect(written[0]).toMatchObject({ deployment_id: orphanId, type: 'Normal', reason: 'OrphanRemoved' });
      expect(written[0]?.actor).toMatch(/^deployer-controller\//);

      // It held the leader lease for the sweep and gave it back.
      const lease = await t.db.selectFrom('leases').selectAll().executeTakeFirstOrThrow();
      expect(lease.epoch).toBe(1);
      expect(lease.expires_at.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);

      const again = await cli(['plan'], env);
      expect(again.code).toBe(0);
      expect(again.stdout).toContain('No drift');
    });

    it('a second run --once right after the first takes the released lease and finds nothing to do', async () => {
      const r = await cli(['run', '--once'], env);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('No drift');
      const lease = await t.db.selectFrom('leases').selectAll().executeTakeFirstOrThrow();
      expect(lease.epoch).toBe(2);
      expect(lease.expires_at.getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
      expect(await events()).toHaveLength(1);
    });

    it('run --once refuses while another instance holds the leader lease', async () => {
      await t.db
        .updateTable('leases')
        .set({ holder: 'another-instance', expires_at: new Date(Date.now() + 60_000) })
        .execute();
      const r = await cli(['run', '--once'], env);
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain('leader lease');
    });
  });

  describe('embedded default (no DATABASE_URL)', () => {
    let stateDir: string;
    let daemon: BackgroundProcess | undefined;
    let postgresPid: number | undefined;
    let port: number;
    let env: NodeJS.ProcessEnv;

    beforeAll(async () => {
      stateDir = makeStateDir('deployer-state-');
      port = await freePort();
      env = cleanEnv({
        DOCKER_HOST: dockerd!.dockerHost,
        DEPLOYER_STATE_DIR: stateDir,
        DEPLOYER_METRICS_ADDRESS: `127.0.0.1:${port}`,
        DEPLOYER_RESYNC: '1s',
        DEPLOYER_LEASE_DURATION: '3s',
      });
    });

    afterAll(async () => {
      // Only what this file started: the daemon child and the PostgreSQL it started, by pid.
      daemon?.kill();
      if (postgresPid !== undefined && pidAlive(postgresPid)) process.kill(postgresPid, 'SIGKILL');
      if (stateDir) rmSync(stateDir, { recursive: true, force: true });
    }, 30_000);

    const context = () => daemon?.tail(30) ?? '(daemon not started)';

    it('run starts the embedded PostgreSQL and serves /livez, /metrics and /healthz', async () => {
      const child = startCli(['run'], env);
      daemon = child;
      const base = `http://127.0.0.1:${port}`;

      await waitFor('GET /livez to answer 200', async () => {
        if (!child.running()) throw new Error(`daemon exited with ${child.child.exitCode}`);
        return (await get(`${base}/livez`)).status === 200;
      }, { timeoutMs: 60_000, context });

      const metrics = await waitFor('a completed sweep in /metrics', async () => {
        const { status, body } = await get(`${base}/metrics`);
        const value = /^deployer_last_sweep_timestamp_seconds (\S+)$/m.exec(body)?.[1];
        return status === 200 && value !== undefined && Number(value) > 0 ? body : undefined;
      }, { timeoutMs: 30_000, context });
      expect(metrics).toMatch(/^deployer_leader 1$/m);
      expect(Number(/^deployer_last_sweep_timestamp_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(Date.now() / 1000 - 60);

      const health = await get(`${base}/healthz`);
      expect(health.status, health.body).toBe(200);
      const report = JSON.parse(health.body) as {
        status: string;
        timestamp: string;
        checks: { database: { status: string; latency_ms: number }; docker: { status: string; latency_ms: number }; leader: { status: string }; last_sweep: { age_seconds: number } };
      };
      expect(['healthy', 'degraded']).toContain(report.status);
      expect(Number.isNaN(Date.parse(report.timestamp))).toBe(false);
      expect(report.checks.database).toMatchObject({ status: 'healthy', latency_ms: expect.any(Number) });
      expect(report.checks.docker).toMatchObject({ status: 'healthy', latency_ms: expect.any(Number) });
      expect(report.checks.leader.status).toBe('leader');
      expect(report.checks.last_sweep.age_seconds).toBeLessThan(30);

      const connection = JSON.parse(readFileSync(join(stateDir, 'postgres.json'), 'utf8')) as { pid: number | null; port: number };
      expect(connection.pid).toEqual(expect.any(Number));
      postgresPid = connection.pid!;
      expect(pidAlive(postgresPid)).toBe(true);
      expect(child.child.exitCode).toBeNull();
    });

    it('plan in another process finds the embedded PostgreSQL', async () => {
      if (!daemon) throw new Error('daemon not started');
      const r = await cli(['plan'], env);
      expect(r.stderr).toBe('');
      expect([0, 2]).toContain(r.code);
      expect(r.stdout).toMatch(/managed container\(s\)\.\n$/);
      const json = await cli(['plan', '-o', 'json'], env);
      expect([0, 2]).toContain(json.code);
      expect(Array.isArray((JSON.parse(json.stdout) as { actions: unknown }).actions)).toBe(true);
    });

    it('SIGTERM stops the daemon with exit 0 and stops its PostgreSQL', async () => {
      if (!daemon || postgresPid === undefined) throw new Error('daemon not started');
      // SIGTERM, and SIGKILL (which fails the expectation) if it has not exited within 30 s.
      const result = await daemon.stop(30_000);
      expect(result, context()).toEqual({ code: 0, signal: null });
      expect(pidAlive(postgresPid)).toBe(false);
      const connection = JSON.parse(readFileSync(join(stateDir, 'postgres.json'), 'utf8')) as { pid: number | null };
      expect(connection.pid).toBeNull();
      expect(daemon.output()).toContain('deployer-controller stopped');
    });

    it('with the daemon gone, plan fails with one line mentioning DATABASE_URL', async () => {
      const r = await cli(['plan'], env);
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toContain('DATABASE_URL');
      expect(r.stdout).toBe('');
    });
  });
});
