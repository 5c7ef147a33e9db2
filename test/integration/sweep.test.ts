/**
 * The sweep against the real engines (DESIGN.md 2, 3.3 and 5): deployment rows
 * in a real PostgreSQL, labelled containers and volumes on a PRIVATE dockerd,
 * one `Sweeper` (or the whole `Daemon`) between them. Each test seeds a world,
 * sweeps, and checks what is left on the engine, in the rows, in
 * `deployment_events`, in the JSON log and in the metrics.
 *
 * Skipped loudly when this machine cannot run a private dockerd, except in CI,
 * where it fails instead.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type ConfigKey } from '../../src/config.js';
import { Daemon } from '../../src/controller/daemon.js';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import { policyFromConfig, Sweeper } from '../../src/controller/sweep.js';
import type { Policy } from '../../src/reconcilers/snapshot.js';
import { DockerRuntime } from '../../src/runtime/docker.js';
import { RuntimeError, type RemoveOutcome, type Runtime, type VolumeRemoveOutcome } from '../../src/runtime/runtime.js';
import { createDb } from '../../src/store/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/store/embedded.js';
import { acquireLease } from '../../src/store/leases.js';
import { migrateUp } from '../../src/store/migrate.js';
import type { OpenDatabase } from '../../src/store/open.js';
import { PgStore, type Fence, type Store } from '../../src/store/store.js';
import type { PrivateDockerd } from '../support/dockerd.js';
import { startEngine } from '../support/engine.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { dockerSkip, requireDocker, waitFor } from '../support/processes.js';
import {
  ago,
  allEvents,
  clearTables,
  containerNames,
  createContainer,
  createVolume,
  deploymentsById,
  HOUR,
  insertDeployments,
  LogCapture,
  metricValue,
  MINUTE,
  portOf,
  TcpForwarder,
  volumeNames,
  wipeEngine,
  withPort,
} from '../support/seed.js';
import { makeStateDir } from '../support/state-dir.js';

const skip = dockerSkip('sweep integration tests (real Postgres + private dockerd)');

const ACTOR = 'test-instance';
/** orphanGrace of the base config: the world below needs an "old" and a "fresh" unknown container on either side of it. */
const GRACE_MS = 2_000;

describe.skipIf(skip !== null)('sweep against real Postgres and a private dockerd', { timeout: 60_000 }, () => {
  let dockerd: PrivateDockerd | undefined;
  let docker: Docker;
  let image: string;
  let database: TestDatabase | undefined;
  let dir: string;
  let configFile: string;

  beforeAll(async () => {
    requireDocker();
    dir = mkdtempSync(join(tmpdir(), 'deployer-sweep-'));
    configFile = join(dir, 'config.yaml');
    writeFileSync(
      configFile,
      [
        `name: deployer-controller`,
        `orphanGrace: ${GRACE_MS}ms`,
        `stuckTimeout: 6h`,
        `heartbeatTimeout: 60s`,
        `maxDeletionsPerSweep: 50`,
        `deletionGuardMinContainers: 10`,
        `runtimeTimeout: 10s`,
        '',
      ].join('\n'),
    );
    const [engine, pg] = await Promise.allSettled([startEngine(), createTestDatabase('sweep')]);
    // Keep whichever started, so that afterAll stops it even when the other failed.
    if (engine.status === 'fulfilled') ({ dockerd, docker, image } = engine.value);
    if (pg.status === 'fulfilled') database = pg.value;
    if (engine.status === 'rejected') throw engine.reason;
    if (pg.status === 'rejected') throw pg.reason;
  }, 120_000);

  afterAll(async () => {
    await database?.drop();
    await dockerd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  beforeEach(async () => {
    await clearTables(db());
  });

  afterEach(async () => {
    await wipeEngine(docker);
  });

  function db() {
    if (!database) throw new Error('database not created');
    return database.db;
  }

  function dockerHost(): string {
    if (!dockerd) throw new Error('dockerd not started');
    return dockerd.dockerHost;
  }

  /** The planners' policy from the suite's config file, with config keys overridden. */
  function policy(overrides: Partial<Record<ConfigKey, unknown>> = {}, force = false): Policy {
    return policyFromConfig(loadConfig({ env: {}, file: configFile, overrides }), force);
  }

  interface Harness {
    sweeper: Sweeper;
    log: LogCapture;
    metrics: Metrics;
  }

  function harness(options: { policy?: Policy; runtime?: Runtime; store?: Store; fence?: () => Fence | undefined } = {}): Harness {
    const log = new LogCapture();
    const metrics = new Metrics({ processMetrics: false });
    const runtime =
      options.runtime ??
      new DockerRuntime({ dockerHost: dockerHost(), timeoutMs: 10_000, observe: (op, s) => metrics.runtimeRequestDuration.observe({ op }, s) });
    const p = options.policy ?? policy();
    const sweeper = new Sweeper({
      store: options.store ?? database!.store,
      runtime,
      logger: createLogger('debug', log),
      metrics,
      actor: ACTOR,
      controllerName: p.controllerName,
      policy: p,
      fence: options.fence ?? (() => undefined),
      mayAct: () => true,
    });
    return { sweeper, log, metrics };
  }

  /**
   * The mixed world of scenario 1: one row per status with a container each,
   * an unknown-deployment container old enough to go and one too fresh to,
   * a foreign, an unlabelled and a legacy container, a deployment-scoped and
   * a shared volume. With `spreadUnknowns`, the old unknown container is made
   * first and the fresh one last, more than {@link GRACE_MS} apart.
   */
  async function seedWorld(spreadUnknowns: boolean) {
    const run = (name: string, seed: Omit<Parameters<typeof createContainer>[2], 'name'>) => createContainer(docker, image, { name, ...seed });
    const old = await run('c-unknown-old', { deploymentId: 'dep-gone-old' });
    const oldCreated = new Date((await docker.getContainer(old).inspect()).Created).getTime();

    const rows = await insertDeployments(db(), [
      { id: 'dep-active', service: 'web', revision: 1, status: 'active', startedAt: ago(HOUR), finishedAt: ago(HOUR) },
      { id: 'dep-failed', service: 'web', revision: 2, status: 'failed', phase: 'health_check', finishedAt: ago(10 * MINUTE), statusReason: 'health check failed' },
      { id: 'dep-cancelled', service: 'web', revision: 3, status: 'cancelled', phase: 'pulling', finishedAt: ago(5 * MINUTE) },
      { id: 'dep-superseded', service: 'api', revision: 1, status: 'superseded', finishedAt: ago(2 * HOUR) },
      { id: 'dep-pending-stuck', service: 'worker', status: 'pending', createdAt: ago(7 * HOUR) },
      {
        id: 'dep-outside-zombie',
        service: 'cron',
        status: 'deploying',
        phase: 'health_check',
        executor: 'legacy-worker',
        owner: 'legacy-worker-7',
        createdAt: ago(10 * MINUTE),
        startedAt: ago(10 * MINUTE),
        heartbeatAt: ago(5 * MINUTE),
        output: 'step 4/6 waiting for health\n',
      },
      { id: 'dep-legacy-failed', service: 'admin', status: 'failed', finishedAt: ago(HOUR) },
    ]);

    await createVolume(docker, { name: 'v-failed-data', deploymentId: 'dep-failed' });
    await createVolume(docker, { name: 'v-shop-shared', deploymentId: 'dep-failed', shared: true });
    await Promise.all([
      run('c-active', { deploymentId: 'dep-active', service: 'web', revision: 1 }),
      run('c-failed', { deploymentId: 'dep-failed', service: 'web', revision: 2, binds: ['v-failed-data:/data', 'v-shop-shared:/shared'] }),
      run('c-cancelled', { deploymentId: 'dep-cancelled', service: 'web', revision: 3 }),
      run('c-superseded', { deploymentId: 'dep-superseded', service: 'api', revision: 1 }),
      run('c-pending-stuck', { deploymentId: 'dep-pending-stuck', service: 'worker' }),
      run('c-outside-zombie', { deploymentId: 'dep-outside-zombie', service: 'cron' }),
      // Condemned deployment, but another controller's container: never touched.
      run('c-foreign', { deploymentId: 'dep-failed', managedBy: 'other-controller' }),
      // No deployer labels at all.
      run('c-unlabelled', { labels: { app: 'something-else' } }),
      // Made by an older platform: no managed-by, so ours to clean.
      run('c-legacy', { deploymentId: 'dep-legacy-failed', managedBy: null, service: 'admin' }),
    ]);

    if (spreadUnknowns) {
      // Docker reports creation times in whole seconds: leave a clear margin on both sides of the grace.
      const wait = oldCreated + GRACE_MS + 1_000 - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    await run('c-unknown-fresh', { deploymentId: 'dep-not-yet-committed' });
    return { rows: new Map(rows.map((r) => [r.id, r])) };
  }

  it('removes orphans, fails zombies and leaves everything else alone, with one event, log line and count per action', async () => {
    const { rows: before } = await seedWorld(true);
    const lease = await acquireLease(db(), 'deployer-controller', ACTOR, 60_000);
    expect(lease).toBeDefined();
    const fence: Fence = { lease: 'deployer-controller', holder: ACTOR, epoch: lease!.epoch };
    const { sweeper, log, metrics } = harness({ fence: () => fence });

    const report = await sweeper.sweep();

    // The engine: exactly the condemned containers and the deployment-scoped volume are gone.
    expect(await containerNames(docker)).toEqual(
      ['c-active', 'c-foreign', 'c-outside-zombie', 'c-pending-stuck', 'c-unknown-fresh', 'c-unlabelled'].sort(),
    );
    expect(await volumeNames(docker)).toEqual(['v-shop-shared']);

    // The plan and its outcomes.
    expect(report.dryRun).toBe(false);
    expect(report.plan.guard).toBeNull();
    expect(report.plan.deferred).toEqual([]);
    expect(report.plan.managed).toBe(9); // everything labelled but the foreign container
    // Zombies first, then status-based removals (in creation order, which Docker gives to the second),
    // then unknown ones, then volumes.
    const outcomes = report.outcomes.map((o) => [o.action.kind, o.action.deploymentId, o.result]);
    expect(outcomes.slice(0, 2)).toEqual([
      ['mark_failed', 'dep-pending-stuck', 'applied'],
      ['mark_failed', 'dep-outside-zombie', 'applied'],
    ]);
    expect(outcomes.slice(2, 6).sort()).toEqual([
      ['remove_container', 'dep-cancelled', 'applied'],
      ['remove_container', 'dep-failed', 'applied'],
      ['remove_container', 'dep-legacy-failed', 'applied'],
      ['remove_container', 'dep-superseded', 'applied'],
    ]);
    expect(outcomes.slice(6)).toEqual([
      ['remove_container', 'dep-gone-old', 'applied'],
      ['remove_volume', 'dep-failed', 'applied'],
    ]);
    expect(report.plan.notes).toEqual([
      expect.objectContaining({ deploymentId: 'dep-not-yet-committed', subject: 'container c-unknown-fresh', reason: expect.stringMatching(/within orphanGrace/) }),
    ]);

    // The rows: the two zombies failed (compare-and-set bumped their version), the rest untouched.
    const after = await deploymentsById(db());
    const stuck = after.get('dep-pending-stuck')!;
    expect(stuck).toMatchObject({ status: 'failed', version: 2, status_reason: 'timed out after 7h0m in phase pending' });
    expect(stuck.output).toBe('[deployer-controller] timed out after 7h0m in phase pending\n');
    expect(stuck.finished_at).toBeInstanceOf(Date);
    const outside = after.get('dep-outside-zombie')!;
    expect(outside.status).toBe('failed');
    expect(outside.version).toBe(2);
    expect(outside.status_reason).toMatch(/^no heartbeat from executor legacy-worker for 5m\d+s in phase health_check$/);
    expect(outside.output).toBe(`step 4/6 waiting for health\n[deployer-controller] ${outside.status_reason}\n`);
    expect(outside.finished_at).toBeInstanceOf(Date);
    for (const [id, row] of after) {
      if (id === 'dep-pending-stuck' || id === 'dep-outside-zombie') continue;
      expect(row, id).toEqual(before.get(id));
    }

    // The audit trail: one event per action, in the order applied, by this instance.
    const events = await allEvents(db());
    expect(events.map((e) => [e.deployment_id, e.reason])).toEqual(report.outcomes.map((o) => [o.action.deploymentId, expect.any(String)]));
    const byKey = new Map(events.map((e) => [`${e.deployment_id} ${e.reason}`, e]));
    expect([...byKey.keys()].sort()).toEqual(
      [
        'dep-pending-stuck ZombieFailed',
        'dep-outside-zombie ZombieFailed',
        'dep-failed OrphanRemoved',
        'dep-cancelled OrphanRemoved',
        'dep-superseded OrphanRemoved',
        'dep-legacy-failed OrphanRemoved',
        'dep-gone-old OrphanRemoved',
        'dep-failed OrphanVolumeRemoved',
      ].sort(),
    );
    expect(events.every((e) => e.actor === ACTOR)).toBe(true);
    expect(events.filter((e) => e.type === 'Warning').map((e) => e.reason)).toEqual(['ZombieFailed', 'ZombieFailed']);
    expect(byKey.get('dep-pending-stuck ZombieFailed')!.message).toBe('timed out after 7h0m in phase pending');
    expect(byKey.get('dep-outside-zombie ZombieFailed')!.message).toBe(outside.status_reason);
    expect(byKey.get('dep-failed OrphanRemoved')!.message).toBe('removed container c-failed: deployment shop/web r2 is failed');
    expect(byKey.get('dep-cancelled OrphanRemoved')!.message).toBe('removed container c-cancelled: deployment shop/web r3 is cancelled');
    expect(byKey.get('dep-superseded OrphanRemoved')!.message).toBe('removed container c-superseded: deployment shop/api r1 is superseded');
    expect(byKey.get('dep-legacy-failed OrphanRemoved')!.message).toBe('removed container c-legacy: deployment shop/admin r1 is failed');
    expect(byKey.get('dep-gone-old OrphanRemoved')!.message).toMatch(/^removed container c-unknown-old: deployment dep-gone-old is unknown \(created \d+s ago\)$/);
    expect(byKey.get('dep-failed OrphanVolumeRemoved')!.message).toBe('removed volume v-failed-data: deployment shop/web r2 is failed');

    // The log: one JSON line per action, naming what it touched; no errors.
    const zombieLines = log.withMsg('marked zombie failed');
    expect(zombieLines.map((l) => l.deploymentId)).toEqual(['dep-pending-stuck', 'dep-outside-zombie']);
    const removedLines = log.withMsg('removed orphan container');
    expect(removedLines.map((l) => [l.deploymentId, l.container, l.result, l.level]).sort()).toEqual([
      ['dep-cancelled', 'c-cancelled', 'applied', 'info'],
      ['dep-failed', 'c-failed', 'applied', 'info'],
      ['dep-gone-old', 'c-unknown-old', 'applied', 'info'],
      ['dep-legacy-failed', 'c-legacy', 'applied', 'info'],
      ['dep-superseded', 'c-superseded', 'applied', 'info'],
    ]);
    expect(removedLines.every((l) => typeof l.containerId === 'string' && typeof l.reason === 'string')).toBe(true);
    expect(log.withMsg('removed orphan volume').map((l) => [l.deploymentId, l.volume])).toEqual([['dep-failed', 'v-failed-data']]);
    expect(log.atLevel('error')).toEqual([]);
    expect(log.atLevel('warn')).toEqual([]);
    expect(log.withMsg('sweep finished')).toEqual([expect.objectContaining({ level: 'info', managed: 9, actions: 8, dryRun: false })]);

    // The counts.
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'mark_failed', result: 'applied' })).toBe(2);
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'applied' })).toBe(5);
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_volume', result: 'applied' })).toBe(1);
    expect(await metricValue(metrics, 'deployer_drift', { kind: 'orphan' })).toBe(5);
    expect(await metricValue(metrics, 'deployer_drift', { kind: 'zombie' })).toBe(2);
    expect(await metricValue(metrics, 'deployer_deployments', { status: 'failed' })).toBe(4);
    expect(await metricValue(metrics, 'deployer_deployments', { status: 'active' })).toBe(1);
    expect(await metricValue(metrics, 'deployer_up', { dependency: 'database' })).toBe(1);
    expect(await metricValue(metrics, 'deployer_up', { dependency: 'docker' })).toBe(1);

    // The next sweep finds the zombies failed and removes their containers; nothing else moves.
    const next = harness({ fence: () => fence, policy: policy({ orphanGrace: '10m' }) });
    const second = await next.sweeper.sweep();
    expect(second.outcomes.map((o) => [o.action.kind, o.action.deploymentId, o.result]).sort()).toEqual([
      ['remove_container', 'dep-outside-zombie', 'applied'],
      ['remove_container', 'dep-pending-stuck', 'applied'],
    ]);
    expect(await containerNames(docker)).toEqual(['c-active', 'c-foreign', 'c-unknown-fresh', 'c-unlabelled']);
    expect(await volumeNames(docker)).toEqual(['v-shop-shared']);
    expect((await allEvents(db())).length).toBe(10);

    // A third sweep has nothing left to do.
    const third = await next.sweeper.sweep();
    expect(third.plan.actions).toEqual([]);
  });

  it('changes nothing on a dry run or a plan', async () => {
    await seedWorld(false);
    const { sweeper, log } = harness({ policy: policy({ orphanGrace: '0s' }) });
    const containersBefore = await containerNames(docker);
    const volumesBefore = await volumeNames(docker);
    const rowsBefore = await deploymentsById(db());

    const plan = await sweeper.plan();
    const report = await sweeper.sweep({ dryRun: true });

    // There was plenty to do...
    expect(plan.actions.map((a) => a.kind).sort()).toEqual([
      'mark_failed',
      'mark_failed',
      'remove_container',
      'remove_container',
      'remove_container',
      'remove_container',
      'remove_container',
      'remove_container',
      'remove_volume',
    ]);
    const target = (a: (typeof plan.actions)[number]) => [a.kind, a.deploymentId, a.kind === 'remove_container' ? a.containerName : a.kind === 'remove_volume' ? a.volumeName : ''];
    expect(report.plan.actions.map(target).sort()).toEqual(plan.actions.map(target).sort());
    expect(report.dryRun).toBe(true);
    expect(report.outcomes).toEqual([]);
    // ...and none of it was done.
    expect(await containerNames(docker)).toEqual(containersBefore);
    expect(await volumeNames(docker)).toEqual(volumesBefore);
    const rowsAfter = await deploymentsById(db());
    expect(rowsAfter).toEqual(rowsBefore);
    expect([...rowsAfter.values()].every((r) => r.version === 1)).toBe(true);
    expect(await allEvents(db())).toEqual([]);
    const would = log.lines.filter((l) => l.dryRun === true && typeof l.msg === 'string' && l.msg.startsWith('would '));
    expect(would).toHaveLength(plan.actions.length);
    expect(log.withMsg('sweep finished')).toEqual([expect.objectContaining({ dryRun: true, actions: plan.actions.length })]);
  });

  describe('a container removed out of band', () => {
    /** A DockerRuntime whose target disappears just before the controller gets to it. */
    class RacingRuntime extends DockerRuntime {
      readonly raced: string[] = [];
      constructor(
        private readonly client: Docker,
        private readonly at: 'inspect' | 'remove',
      ) {
        super({ dockerHost: dockerHost(), timeoutMs: 10_000 });
      }

      override async inspectContainer(id: string): ReturnType<DockerRuntime['inspectContainer']> {
        if (this.at === 'inspect') await this.steal(id);
        return super.inspectContainer(id);
      }

      override async removeContainer(id: string): Promise<RemoveOutcome> {
        if (this.at === 'remove') await this.steal(id);
        return super.removeContainer(id);
      }

      override async removeVolume(name: string): Promise<VolumeRemoveOutcome> {
        if (this.at === 'remove') {
          await this.client.getVolume(name).remove();
          this.raced.push(name);
        }
        return super.removeVolume(name);
      }

      private async steal(id: string): Promise<void> {
        await this.client.getContainer(id).remove({ force: true, v: true });
        this.raced.push(id);
      }
    }

    async function seedCancelled() {
      await insertDeployments(db(), [{ id: 'dep-cancelled', status: 'cancelled', finishedAt: ago(MINUTE) }]);
      await createVolume(docker, { name: 'v-cancelled-data', deploymentId: 'dep-cancelled' });
      const id = await createContainer(docker, image, { name: 'c-cancelled', deploymentId: 'dep-cancelled', binds: ['v-cancelled-data:/data'] });
      return id;
    }

    it('counts "no such container" at removal as done, and still records it', async () => {
      const id = await seedCancelled();
      const runtime = new RacingRuntime(docker, 'remove');
      const { sweeper, log, metrics } = harness({ runtime });

      const report = await sweeper.sweep();

      expect(runtime.raced).toEqual([id, 'v-cancelled-data']);
      expect(report.outcomes.map((o) => [o.action.kind, o.result])).toEqual([
        ['remove_container', 'gone'],
        ['remove_volume', 'gone'],
      ]);
      expect(await containerNames(docker)).toEqual([]);
      expect(await volumeNames(docker)).toEqual([]);
      const events = await allEvents(db());
      expect(events.map((e) => [e.deployment_id, e.reason])).toEqual([
        ['dep-cancelled', 'OrphanRemoved'],
        ['dep-cancelled', 'OrphanVolumeRemoved'],
      ]);
      expect(events[0]!.message).toBe('removed container c-cancelled: deployment shop/dep-cancelled r1 is cancelled (already gone)');
      expect(log.withMsg('removed orphan container')).toEqual([expect.objectContaining({ result: 'gone', container: 'c-cancelled' })]);
      expect(log.atLevel('error')).toEqual([]);
      expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'gone' })).toBe(1);
      expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'error' })).toBeUndefined();
    });

    it('counts a container gone by the fresh read as done, and still records it', async () => {
      const id = await seedCancelled();
      const runtime = new RacingRuntime(docker, 'inspect');
      const { sweeper, log } = harness({ runtime });

      const report = await sweeper.sweep();

      expect(runtime.raced).toEqual([id]);
      expect(report.outcomes.map((o) => [o.action.kind, o.result])).toEqual([
        ['remove_container', 'gone'],
        ['remove_volume', 'applied'],
      ]);
      expect(await containerNames(docker)).toEqual([]);
      expect((await allEvents(db())).map((e) => [e.reason, e.message])).toEqual([
        ['OrphanRemoved', 'removed container c-cancelled: deployment shop/dep-cancelled r1 is cancelled (already gone)'],
        ['OrphanVolumeRemoved', 'removed volume v-cancelled-data: deployment shop/dep-cancelled r1 is cancelled'],
      ]);
      expect(log.atLevel('error')).toEqual([]);
    });
  });

  describe('when Postgres goes away', () => {
    let pgDir: string;
    let server: EmbeddedPostgres | undefined;
    let forwarder: TcpForwarder;
    let url: string;
    let open: OpenDatabase;

    beforeAll(async () => {
      pgDir = makeStateDir('deployer-sweep-pg-');
      server = await startEmbeddedPostgres(pgDir);
      forwarder = new TcpForwarder();
      url = withPort(server.url, await forwarder.listen(portOf(server.url)));
      const kdb = createDb({ connectionString: url, connectionTimeoutMs: 2_000 });
      await migrateUp(kdb);
      open = { db: kdb, store: new PgStore(kdb), url, description: 'restartable embedded PostgreSQL', close: () => kdb.destroy() };
    }, 120_000);

    afterAll(async () => {
      await open?.close();
      await server?.stop();
      await forwarder?.close();
      if (pgDir) rmSync(pgDir, { recursive: true, force: true });
    }, 60_000);

    beforeEach(async () => {
      if (!server) await restart();
      await clearTables(open.db);
    });

    async function stop(): Promise<void> {
      await server?.stop();
      server = undefined;
    }

    async function restart(): Promise<void> {
      server = await startEmbeddedPostgres(pgDir);
      forwarder.retarget(portOf(server.url));
    }

    async function seedOrphans(): Promise<void> {
      await insertDeployments(open.db, [
        { id: 'dep-live', status: 'active' },
        { id: 'dep-cancelled', status: 'cancelled' },
      ]);
      await createContainer(docker, image, { name: 'c-live', deploymentId: 'dep-live' });
      await createContainer(docker, image, { name: 'c-cancelled', deploymentId: 'dep-cancelled' });
      await createContainer(docker, image, { name: 'c-unknown', deploymentId: 'dep-unknown' });
    }

    it('a sweep with the database down rejects and removes nothing; after a restart the next sweep cleans up', async () => {
      await seedOrphans();
      const { sweeper, metrics } = harness({ store: open.store, policy: policy({ orphanGrace: '0s' }) });
      await stop();

      await expect(sweeper.sweep()).rejects.toThrow();
      await expect(sweeper.plan()).rejects.toThrow();
      expect(await containerNames(docker)).toEqual(['c-cancelled', 'c-live', 'c-unknown']);
      expect(await metricValue(metrics, 'deployer_up', { dependency: 'database' })).toBe(0);
      expect(await metricValue(metrics, 'deployer_up', { dependency: 'docker' })).toBe(1);

      await restart();
      // No event or status change was written while it was down.
      expect(await allEvents(open.db)).toEqual([]);
      const report = await sweeper.sweep();
      expect(report.outcomes.map((o) => [o.action.deploymentId, o.result])).toEqual([
        ['dep-cancelled', 'applied'],
        ['dep-unknown', 'applied'],
      ]);
      expect(await containerNames(docker)).toEqual(['c-live']);
      expect((await allEvents(open.db)).map((e) => e.deployment_id)).toEqual(['dep-cancelled', 'dep-unknown']);
      expect(await metricValue(metrics, 'deployer_up', { dependency: 'database' })).toBe(1);
    });

    it('a connection lost in the middle of a write fails that action, rolls it back, and does not crash the process', async () => {
      // pg emits 'error' on a pooled client whose connection drops while it is checked out (here:
      // inside the transition's transaction, between its UPDATE and its event INSERT). Without an
      // 'error' listener on the client that is an uncaught exception: vitest reports it, and the
      // daemon would exit.
      await insertDeployments(open.db, [{ id: 'dep-pending-stuck', status: 'pending', createdAt: ago(7 * HOUR) }]);
      const rowsBefore = await deploymentsById(open.db);
      const { sweeper, log } = harness({ store: open.store });
      forwarder.cutAfterReply('UPDATE 1');

      const report = await sweeper.sweep();

      expect(report.outcomes.map((o) => [o.action.kind, o.result])).toEqual([['mark_failed', 'error']]);
      expect(log.atLevel('error')).toEqual([expect.objectContaining({ action: 'mark_failed', deploymentId: 'dep-pending-stuck' })]);
      // The transaction died with its connection: neither the status change nor its event stayed.
      expect(await deploymentsById(open.db)).toEqual(rowsBefore);
      expect(await allEvents(open.db)).toEqual([]);
      // The pool recovers: the next sweep applies it.
      const next = await sweeper.sweep();
      expect(next.outcomes.map((o) => [o.action.kind, o.result])).toEqual([['mark_failed', 'applied']]);
      expect((await allEvents(open.db)).map((e) => e.reason)).toEqual(['ZombieFailed']);
    });

    it('the daemon keeps running across a database outage and cleans up once it is back', async () => {
      await insertDeployments(open.db, [{ id: 'dep-live', status: 'active' }]);
      await createContainer(docker, image, { name: 'c-live', deploymentId: 'dep-live' });
      const config = loadConfig({
        file: configFile,
        env: {},
        overrides: { resync: '200ms', orphanGrace: '0s', leaseDuration: '3s', dockerHost: dockerHost() },
      });
      const log = new LogCapture();
      const metrics = new Metrics({ processMetrics: false });
      const daemon = new Daemon({ config, logger: createLogger('debug', log), database: open, metrics, http: false });
      const up = () => metricValue(metrics, 'deployer_up', { dependency: 'database' });
      const errors = async () => (await metricValue(metrics, 'deployer_reconcile_total', { reconciler: 'sweep', result: 'error' })) ?? 0;
      try {
        await daemon.start();
        await waitFor('the first sweep', async () => ((await metricValue(metrics, 'deployer_last_sweep_timestamp_seconds')) ?? 0) > 0, 15_000);
        expect(await up()).toBe(1);
        expect(await metricValue(metrics, 'deployer_leader')).toBe(1);

        await stop();
        await createContainer(docker, image, { name: 'c-unknown', deploymentId: 'dep-unknown' });
        await waitFor('deployer_up{dependency="database"} to drop to 0', async () => (await up()) === 0, 15_000);
        await waitFor('two failed sweeps', async () => (await errors()) >= 2, 15_000);
        expect(await containerNames(docker)).toEqual(['c-live', 'c-unknown']);
        expect(log.withMsg('reconcile failed; retrying').length).toBeGreaterThanOrEqual(2);
        expect(log.withMsg('reconcile failed; retrying')[0]).toMatchObject({ level: 'error', err: expect.objectContaining({ message: expect.any(String) }) });

        await restart();
        // The event row is written just after the removal: wait for it, not for the container.
        const events = await waitFor('the orphan removal to be recorded', async () => {
          const rows = await allEvents(open.db);
          return rows.length > 0 ? rows : undefined;
        }, 30_000);
        expect(events.map((e) => [e.deployment_id, e.reason, e.actor])).toEqual([['dep-unknown', 'OrphanRemoved', daemon.instance]]);
        expect(await containerNames(docker)).toEqual(['c-live']);
        expect(await up()).toBe(1);
        expect(log.withMsg('removed orphan container')).toEqual([expect.objectContaining({ deploymentId: 'dep-unknown', result: 'applied' })]);
      } finally {
        await daemon.stop();
      }
      expect(log.withMsg('deployer-controller stopped')).toHaveLength(1);
    });
  });

  it('keeps everything an in-progress rollback references, and cleans up once it is settled', async () => {
    await insertDeployments(db(), [
      { id: 'dep-bad', service: 'web', revision: 2, status: 'failed', finishedAt: ago(MINUTE) },
      { id: 'dep-good', service: 'web', revision: 3, status: 'deploying', phase: 'starting', owner: 'another-instance', startedAt: ago(MINUTE), heartbeatAt: new Date() },
    ]);
    await db()
      .insertInto('rollbacks')
      .values({ project: 'shop', service: 'web', from_deployment_id: 'dep-bad', to_deployment_id: 'dep-good', status: 'in_progress', reason: 'health check failed' })
      .execute();
    await createContainer(docker, image, { name: 'c-bad', deploymentId: 'dep-bad', service: 'web', revision: 2 });
    await createContainer(docker, image, { name: 'c-good', deploymentId: 'dep-good', service: 'web', revision: 3 });
    const { sweeper } = harness();

    const report = await sweeper.sweep();

    expect(report.plan.actions).toEqual([]);
    expect([...report.plan.notes].sort((a, b) => a.subject.localeCompare(b.subject))).toEqual([
      { deploymentId: 'dep-bad', subject: 'container c-bad', reason: 'referenced by a rollback in progress' },
      { deploymentId: 'dep-good', subject: 'container c-good', reason: 'referenced by a rollback in progress' },
    ]);
    expect(await containerNames(docker)).toEqual(['c-bad', 'c-good']);

    await db().updateTable('rollbacks').set({ status: 'failed', finished_at: new Date() }).execute();
    const next = await sweeper.sweep();
    expect(next.outcomes.map((o) => [o.action.kind, o.action.deploymentId, o.result])).toEqual([['remove_container', 'dep-bad', 'applied']]);
    expect(await containerNames(docker)).toEqual(['c-good']);
  });

  it('a database error during the fresh read before a removal stops the sweep\'s removals', async () => {
    await insertDeployments(db(), [{ id: 'dep-cancelled', status: 'cancelled' }]);
    await createContainer(docker, image, { name: 'c-cancelled-0', deploymentId: 'dep-cancelled', replica: 0 });
    await createContainer(docker, image, { name: 'c-cancelled-1', deploymentId: 'dep-cancelled', replica: 1 });
    /** The store of a database that dies after the snapshot was read. */
    class FailingReads extends PgStore {
      override getDeployment(): Promise<never> {
        return Promise.reject(new Error('Connection terminated unexpectedly'));
      }
    }
    const { sweeper, log, metrics } = harness({ store: new FailingReads(db()) });

    const report = await sweeper.sweep();

    expect(report.outcomes.map((o) => [o.action.kind, o.result])).toEqual([
      ['remove_container', 'error'],
      ['remove_container', 'aborted'],
    ]);
    expect(report.outcomes[1]!.detail).toBe('database error');
    expect(await containerNames(docker)).toEqual(['c-cancelled-0', 'c-cancelled-1']);
    expect(await allEvents(db())).toEqual([]);
    const errors = log.atLevel('error');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ action: 'remove_container', deploymentId: 'dep-cancelled', err: expect.objectContaining({ message: 'Connection terminated unexpectedly' }) });
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'error' })).toBe(1);
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'aborted' })).toBe(1);
  });

  it('a deposed leader whose fence no longer holds changes nothing', async () => {
    await insertDeployments(db(), [
      { id: 'dep-pending-stuck', status: 'pending', createdAt: ago(7 * HOUR) },
      { id: 'dep-cancelled', status: 'cancelled' },
    ]);
    await createContainer(docker, image, { name: 'c-cancelled', deploymentId: 'dep-cancelled' });
    const rowsBefore = await deploymentsById(db());
    const old = await acquireLease(db(), 'deployer-controller', 'old-leader', 60_000);
    // The old leader's lease lapses (it was paused) and another instance takes over.
    await db().updateTable('leases').set({ expires_at: sql<Date>`now()` }).execute();
    const taken = await acquireLease(db(), 'deployer-controller', 'new-leader', 60_000);
    expect(taken!.epoch).toBe(old!.epoch + 1);
    // Its local clock still says it leads (mayAct is true): only the fence can stop it.
    const { sweeper } = harness({ fence: () => ({ lease: 'deployer-controller', holder: 'old-leader', epoch: old!.epoch }) });

    const report = await sweeper.sweep();

    expect(report.outcomes.map((o) => [o.action.kind, o.result])).toEqual([
      ['mark_failed', 'error'],
      ['remove_container', 'aborted'],
    ]);
    expect(report.outcomes[1]!.detail).toMatch(/leadership lost/);
    expect(await deploymentsById(db())).toEqual(rowsBefore);
    expect(await containerNames(docker)).toEqual(['c-cancelled']);
    expect(await allEvents(db())).toEqual([]);
  });

  it('a follower reports no drift of its own and the rows by status, also once it loses the lead', async () => {
    // Drift the leader cannot act on: the guard refuses to empty the host while the table is empty.
    await createContainer(docker, image, { name: 'c-x-0', deploymentId: 'dep-x', replica: 0 });
    await createContainer(docker, image, { name: 'c-x-1', deploymentId: 'dep-x', replica: 1 });
    const config = loadConfig({ file: configFile, env: {}, overrides: { resync: '200ms', orphanGrace: '0s', leaseDuration: '3s', dockerHost: dockerHost() } });
    const open: OpenDatabase = { db: db(), store: database!.store, url: database!.url, description: 'test database', close: async () => undefined };
    const start = async () => {
      const metrics = new Metrics({ processMetrics: false });
      const daemon = new Daemon({ config, logger: createLogger('silent'), database: open, metrics, http: false });
      await daemon.start();
      await daemon.firstSweepDone();
      return { daemon, metrics };
    };
    const a = await start();
    const b = await start();
    try {
      expect(await metricValue(a.metrics, 'deployer_leader')).toBe(1);
      expect(await metricValue(a.metrics, 'deployer_drift', { kind: 'orphan' })).toBe(2);
      expect(await metricValue(b.metrics, 'deployer_leader')).toBe(0);
      expect(await metricValue(b.metrics, 'deployer_drift', { kind: 'orphan' })).toBe(0);

      // The lead goes elsewhere (another host); A becomes a follower and drops the drift of its last sweep.
      await db().updateTable('leases').set({ holder: 'elsewhere', expires_at: sql<Date>`now() + interval '1 hour'` }).execute();
      await waitFor('A to follow', async () => (await metricValue(a.metrics, 'deployer_leader')) === 0, 15_000);
      await waitFor('A to clear its drift', async () => (await metricValue(a.metrics, 'deployer_drift', { kind: 'orphan' })) === 0, 15_000);

      // Followers keep the rows by status current.
      await insertDeployments(db(), [
        { id: 'dep-live', status: 'active' },
        { id: 'dep-old', status: 'failed' },
      ]);
      for (const { metrics } of [a, b]) {
        await waitFor('the counts to show the new rows', async () => (await metricValue(metrics, 'deployer_deployments', { status: 'active' })) === 1, 15_000);
        expect(await metricValue(metrics, 'deployer_deployments', { status: 'failed' })).toBe(1);
        expect(await metricValue(metrics, 'deployer_deployments', { status: 'pending' })).toBe(0);
      }
      // Nobody here leads: the containers are untouched.
      expect(await containerNames(docker)).toEqual(['c-x-0', 'c-x-1']);
    } finally {
      await Promise.all([a.daemon.stop(), b.daemon.stop()]);
    }
  });

  it('refuses to delete anything when the deployments table is empty, unless forced', async () => {
    await insertDeployments(db(), [
      { id: 'dep-web', status: 'active' },
      { id: 'dep-api', status: 'active' },
    ]);
    await createContainer(docker, image, { name: 'c-web-0', deploymentId: 'dep-web', replica: 0 });
    await createContainer(docker, image, { name: 'c-web-1', deploymentId: 'dep-web', replica: 1 });
    await createContainer(docker, image, { name: 'c-api-0', deploymentId: 'dep-api' });
    await sql`DELETE FROM deployments`.execute(db());
    const { sweeper, log, metrics } = harness({ policy: policy({ orphanGrace: '0s' }) });

    const report = await sweeper.sweep();

    expect(report.plan.guard?.reason).toMatch(/desired state is empty while 3 managed containers exist/);
    expect(report.plan.actions).toEqual([]);
    expect(report.plan.blocked.map((a) => a.kind)).toEqual(['remove_container', 'remove_container', 'remove_container']);
    expect(report.outcomes).toEqual([]);
    expect(await containerNames(docker)).toEqual(['c-api-0', 'c-web-0', 'c-web-1']);
    expect(await allEvents(db())).toEqual([]);
    expect(await metricValue(metrics, 'deployer_deletion_guard_trips_total')).toBe(1);
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'blocked' })).toBe(3);
    expect(log.atLevel('error')).toEqual([expect.objectContaining({ msg: expect.stringMatching(/^deletion guard tripped/), blocked: 3, managed: 3 })]);

    // Forced, the same world would be cleaned up (planned only here).
    const forced = harness({ policy: policy({ orphanGrace: '0s' }, true) });
    const plan = await forced.sweeper.plan();
    expect(plan.guard).toBeNull();
    expect(plan.blocked).toEqual([]);
    expect(plan.actions.map((a) => (a.kind === 'remove_container' ? a.containerName : a.kind)).sort()).toEqual(['c-api-0', 'c-web-0', 'c-web-1']);
    expect(await containerNames(docker)).toEqual(['c-api-0', 'c-web-0', 'c-web-1']);
  });

  it('changes nothing when Docker does not answer', async () => {
    await insertDeployments(db(), [
      { id: 'dep-pending-stuck', status: 'pending', createdAt: ago(7 * HOUR) },
      { id: 'dep-cancelled', status: 'cancelled' },
    ]);
    const rowsBefore = await deploymentsById(db());
    const runtime = new DockerRuntime({ dockerHost: `unix://${join(dir, 'no-such-dir', 'docker.sock')}`, timeoutMs: 5_000 });
    const { sweeper, metrics } = harness({ runtime });

    const failure = await sweeper.sweep().then(
      () => undefined,
      (err: unknown) => err,
    );

    expect(failure).toBeInstanceOf(RuntimeError);
    expect((failure as RuntimeError).op).toMatch(/^list_/);
    // Not even the zombie, which needs no Docker call, is failed on half a snapshot.
    expect(await deploymentsById(db())).toEqual(rowsBefore);
    expect(await allEvents(db())).toEqual([]);
    expect(await metricValue(metrics, 'deployer_up', { dependency: 'docker' })).toBe(0);
  });

  it('removes at most maxDeletionsPerSweep containers per sweep', async () => {
    await insertDeployments(db(), [
      { id: 'dep-live', status: 'active' },
      { id: 'dep-cancelled', status: 'cancelled' },
    ]);
    await createContainer(docker, image, { name: 'c-live', deploymentId: 'dep-live' });
    await Promise.all([0, 1, 2, 3, 4].map((replica) => createContainer(docker, image, { name: `c-cancelled-${replica}`, deploymentId: 'dep-cancelled', replica })));
    const { sweeper, log, metrics } = harness({ policy: policy({ maxDeletionsPerSweep: 2 }) });
    const cancelledLeft = async () => (await containerNames(docker)).filter((n) => n.startsWith('c-cancelled-')).length;

    const removedPerSweep: number[] = [];
    const deferredPerSweep: number[] = [];
    for (let i = 0; i < 4; i++) {
      const before = await cancelledLeft();
      const report = await sweeper.sweep();
      expect(report.outcomes.every((o) => o.result === 'applied')).toBe(true);
      removedPerSweep.push(before - (await cancelledLeft()));
      deferredPerSweep.push(report.plan.deferred.length);
    }

    expect(removedPerSweep).toEqual([2, 2, 1, 0]);
    expect(deferredPerSweep).toEqual([3, 1, 0, 0]);
    expect(await containerNames(docker)).toEqual(['c-live']);
    expect((await allEvents(db())).filter((e) => e.reason === 'OrphanRemoved')).toHaveLength(5);
    expect(log.withMsg('deletion budget reached; the rest waits for the next sweep').map((l) => l.deferred)).toEqual([3, 1]);
    expect(await metricValue(metrics, 'deployer_actions_total', { action: 'remove_container', result: 'deferred' })).toBe(4);
  });
});
