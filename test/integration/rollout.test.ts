/**
 * Rollouts driven by the controller (issue 3, DESIGN.md 3.3) against a real
 * Postgres and a PRIVATE dockerd: the daemon runs in this process (or the
 * built CLI for `cancel` and `rollback`), deployment rows are inserted with
 * plain SQL as a platform would, and every wait polls with a deadline.
 * Skipped loudly when this machine cannot run a private dockerd, except in
 * CI, where it fails instead.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigKey } from '../../src/config.js';
import { scopedVolumeName } from '../../src/reconcilers/rollout.js';
import type { DeploymentRow } from '../../src/store/schema.js';
import { LABELS } from '../../src/types.js';
import { startEngine, type Engine } from '../support/engine.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { cleanEnv, dockerSkip, killChildren, requireDocker, runCli, waitFor } from '../support/processes.js';
import {
  containersOf,
  describeRows,
  eventsOf,
  healthySpec,
  IMAGE,
  insertDeployment,
  nameOf,
  reasonsOf,
  removeManaged,
  rollbacksOf,
  row,
  runningNames,
  startDaemon,
  volumeExists,
  type SpecJson,
  type TestDaemon,
} from '../support/rollout-helpers.js';

const skip = dockerSkip('rollout integration tests');

/** The events of an uninterrupted rollout of a first revision, in order. */
const ROLLOUT_REASONS = ['RolloutStarted', 'Creating', 'Starting', 'HealthCheck', 'Activating', 'Activated', 'RolloutComplete'];

describe.skipIf(skip !== null)('rollouts (real Postgres, private dockerd)', { timeout: 90_000 }, () => {
  let engine: Engine | undefined;
  let docker: Docker;
  let tmp: string;
  let t: TestDatabase | undefined;
  let d: TestDaemon | undefined;

  beforeAll(async () => {
    requireDocker();
    engine = await startEngine();
    docker = engine.docker;
    tmp = mkdtempSync(join(tmpdir(), 'rollout-test-'));
  }, 120_000);

  afterEach(async () => {
    await d?.stop();
    d = undefined;
    killChildren();
    if (engine) await removeManaged(docker);
    await t?.drop();
    t = undefined;
  }, 60_000);

  afterAll(async () => {
    killChildren();
    await engine?.dockerd.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  // -------------------------------------------------------------------------

  async function setup(overrides: Partial<Record<ConfigKey, unknown>> = {}): Promise<{ db: TestDatabase; daemon: TestDaemon }> {
    t ??= await createTestDatabase('rollout');
    d = await startDaemon(t.url, engine!.dockerd.dockerHost, overrides);
    return { db: t, daemon: d };
  }

  /** Replaces the running daemon with one configured with `overrides`. */
  async function restart(overrides: Partial<Record<ConfigKey, unknown>> = {}): Promise<TestDaemon> {
    await d?.stop();
    d = await startDaemon(t!.url, engine!.dockerd.dockerHost, overrides);
    return d;
  }

  const context = (...ids: string[]) => async () => `${await describeRows(t!.db, ids)}\n${d?.tail() ?? ''}`;

  /** Waits until `id` satisfies `done`, returning the row. */
  function until(id: string, what: string, done: (r: DeploymentRow) => boolean, timeoutMs = 45_000): Promise<DeploymentRow> {
    return waitFor(`${id}: ${what}`, async () => {
      const r = await row(t!.db, id);
      return done(r) ? r : undefined;
    }, { timeoutMs, context: context(id) });
  }

  const rolledOut = (id: string) => until(id, 'active with the rollout complete', (r) => r.status === 'active' && r.phase === null);
  const failed = (id: string) => until(id, 'failed', (r) => r.status === 'failed');

  async function ids(deploymentId: string): Promise<string[]> {
    return (await containersOf(docker, deploymentId)).map((c) => c.Id);
  }

  function env(db: TestDatabase) {
    return cleanEnv({ DATABASE_URL: db.url, DOCKER_HOST: engine!.dockerd.dockerHost, DEPLOYER_STATE_DIR: join(tmp, 'state') });
  }

  // -------------------------------------------------------------------------

  it('an older revision inserted after a newer one went active is superseded, never served', async () => {
    const { db } = await setup();
    const r2 = await insertDeployment(db.db, { revision: 2, spec: healthySpec() });
    await rolledOut(r2);
    const r1 = await insertDeployment(db.db, { revision: 1, spec: healthySpec() });
    const late = await until(r1, 'superseded', (r) => r.status === 'superseded');
    expect(late.status_reason).toBe(`revision 2 (${r2}) is already active`);
    expect(await reasonsOf(db.db, r1)).not.toContain('Activated');
    await waitFor('no container of the late revision', async () => (await containersOf(docker, r1)).length === 0, { context: context(r1, r2) });
    expect((await row(db.db, r2)).status).toBe('active');
    expect(await runningNames(docker, r2)).toEqual(['shop.web.r2.0', 'shop.web.r2.1']);
  });

  it('rolls out a 2-replica service through every phase: labels, command, env, volumes, progress, events, output', async () => {
    const { db, daemon } = await setup();
    const spec = healthySpec({ env: { GREETING: 'hello world', LOG_LEVEL: 'debug' }, volumes: ['shop-data:/data', '/cache'] });
    const id = await insertDeployment(db.db, { revision: 1, spec });
    expect(id).toBe('shop.web.r1');

    // Progress is live: watched while it runs, the step never goes back and the total is 6.
    const seen: { phase: string | null; step: number; total: number }[] = [];
    const r = await waitFor('shop.web.r1 rolled out', async () => {
      const now = await row(db.db, id);
      if (now.progress) seen.push({ phase: now.phase, step: now.progress.step, total: now.progress.total });
      return now.status === 'active' && now.phase === null ? now : undefined;
    }, { timeoutMs: 45_000, context: context(id) });
    expect(seen.every((s) => s.total === 6)).toBe(true);
    expect(seen.map((s) => s.step)).toEqual([...seen.map((s) => s.step)].sort((a, b) => a - b));

    expect(r.progress).toEqual({ step: 6, total: 6, percent: 100, message: 'rollout complete' });
    expect(r).toMatchObject({ status: 'active', phase: null, attempts: 1, owner: daemon.daemon.instance, status_reason: null });
    expect(r.started_at).toBeInstanceOf(Date);
    const output = r.output.trim().split('\n');
    expect(output.length).toBeGreaterThanOrEqual(6);
    for (const line of ['rollout started by', 'phase creating', 'phase starting', 'phase health_check', 'phase activating', 'revision 1 is active', 'rollout complete']) {
      expect(r.output).toContain(line);
    }

    const containers = await containersOf(docker, id);
    expect(containers.map(nameOf)).toEqual(['shop.web.r1.0', 'shop.web.r1.1']);
    for (const [replica, c] of containers.entries()) {
      expect(c.State).toBe('running');
      const info = await docker.getContainer(c.Id).inspect();
      expect(info.Config.Labels).toMatchObject({
        [LABELS.deploymentId]: id,
        [LABELS.managedBy]: 'deployer-controller',
        [LABELS.project]: 'shop',
        [LABELS.service]: 'web',
        [LABELS.revision]: '1',
        [LABELS.replica]: String(replica),
      });
      expect(info.Config.Image).toBe(IMAGE);
      expect(info.Config.Cmd).toEqual(['sleep', '3600']);
      expect(info.Config.Env).toEqual(expect.arrayContaining(['GREETING=hello world', 'LOG_LEVEL=debug']));
      expect(info.HostConfig.NetworkMode).toBe('none');
      expect(info.State.Health?.Status).toBe('healthy');
      const mounts = Object.fromEntries(info.Mounts.map((m) => [m.Destination, { type: m.Type, name: m.Name }]));
      expect(mounts).toEqual({ '/data': { type: 'volume', name: 'shop-data' }, '/cache': { type: 'volume', name: scopedVolumeName(id, 1) } });
    }

    const shared = await docker.getVolume('shop-data').inspect();
    expect(shared.Labels).toMatchObject({ [LABELS.shared]: 'true', [LABELS.project]: 'shop' });
    expect(shared.Labels[LABELS.deploymentId]).toBeUndefined();
    const scoped = await docker.getVolume(scopedVolumeName(id, 1)).inspect();
    expect(scoped.Labels).toMatchObject({
      [LABELS.deploymentId]: id,
      [LABELS.managedBy]: 'deployer-controller',
      [LABELS.project]: 'shop',
      [LABELS.service]: 'web',
      [LABELS.revision]: '1',
    });

    const events = await eventsOf(db.db, id);
    expect(events.map((e) => e.reason)).toEqual(ROLLOUT_REASONS);
    expect(events.every((e) => e.type === 'Normal' && e.actor === daemon.daemon.instance)).toBe(true);
    expect(await rollbacksOf(db.db)).toEqual([]);
  });

  it('a second revision replaces the first only once it is healthy; the old one is superseded and its containers and scoped volume go', async () => {
    const { db } = await setup();
    const volumes = ['shop-data:/data', '/cache'];
    const r1 = await insertDeployment(db.db, { revision: 1, spec: healthySpec({ volumes }) });
    await rolledOut(r1);
    const r1Containers = await ids(r1);
    expect(r1Containers).toHaveLength(2);

    // Healthy only after ~4 s: /tmp/ok appears late; the start period keeps early failures from counting.
    const r2 = await insertDeployment(db.db, {
      revision: 2,
      spec: {
        image: IMAGE,
        replicas: 2,
        command: ['sh', '-c', 'sleep 4; touch /tmp/ok; exec sleep 3600'],
        healthcheck: { test: ['CMD', 'test', '-f', '/tmp/ok'], interval: '1s', startPeriod: '30s' },
        volumes,
      },
    });
    await until(r2, 'waiting in health_check', (r) => r.status === 'deploying' && r.phase === 'health_check');
    // While the new revision is not healthy yet, the old one is still active and serving.
    const waiting = await containersOf(docker, r2);
    expect(waiting.map(nameOf)).toEqual(['shop.web.r2.0', 'shop.web.r2.1']);
    for (const c of waiting) expect((await docker.getContainer(c.Id).inspect()).State.Health?.Status).toBe('starting');
    expect((await row(db.db, r1)).status).toBe('active');
    const serving = await containersOf(docker, r1);
    expect(serving.map((c) => c.Id)).toEqual(r1Containers);
    expect(serving.every((c) => c.State === 'running')).toBe(true);
    expect(await volumeExists(docker, scopedVolumeName(r1, 1))).toBe(true);

    await rolledOut(r2);
    const old = await row(db.db, r1);
    expect(old).toMatchObject({ status: 'superseded', status_reason: 'superseded by revision 2' });
    expect(old.finished_at).toBeInstanceOf(Date);
    expect(old.output).toContain('superseded by revision 2 (shop.web.r2)');
    // Retiring asks for a sweep at once; the sweep removes them, the one removal path.
    await waitFor('r1 containers removed', async () => (await containersOf(docker, r1)).length === 0, { context: context(r1, r2) });
    expect(await runningNames(docker, r2)).toEqual(['shop.web.r2.0', 'shop.web.r2.1']);

    // The deployment-scoped volume follows its containers (on a sweep); the shared one stays.
    // (The event row is written right after the removal: wait for both.)
    await waitFor('r1 scoped volume removed', async () => !(await volumeExists(docker, scopedVolumeName(r1, 1))) && (await reasonsOf(db.db, r1)).includes('OrphanVolumeRemoved'), {
      context: context(r1, r2),
    });
    expect(await volumeExists(docker, 'shop-data')).toBe(true);
    expect(await volumeExists(docker, scopedVolumeName(r2, 1))).toBe(true);
    expect((await reasonsOf(db.db, r1)).filter((r) => r === 'OrphanVolumeRemoved')).toHaveLength(1);

    // Order in the audit trail: new healthy, then active, then the old superseded, then its containers removed.
    const all = [...(await eventsOf(db.db, r1)), ...(await eventsOf(db.db, r2))].sort((a, b) => Number(a.id) - Number(b.id));
    const at = (deploymentId: string, reason: string) => all.findIndex((e) => e.deployment_id === deploymentId && e.reason === reason);
    expect(at(r2, 'HealthCheck')).toBeLessThan(at(r2, 'Activated'));
    expect(at(r2, 'Activated')).toBeLessThan(at(r1, 'Superseded'));
    const removed = all.map((e, i) => ({ e, i })).filter(({ e }) => e.deployment_id === r1 && e.reason === 'OrphanRemoved');
    expect(removed).toHaveLength(2);
    for (const { i } of removed) expect(i).toBeGreaterThan(at(r1, 'Superseded'));
    expect(await reasonsOf(db.db, r2)).toEqual(ROLLOUT_REASONS);
  });

  it('a revision whose healthcheck fails is failed and rolled back: the previous one keeps serving, the rollback completes, the failed containers go', async () => {
    const { db } = await setup();
    const r1 = await insertDeployment(db.db, { revision: 1, spec: healthySpec() });
    await rolledOut(r1);
    const serving = await ids(r1);

    const r2 = await insertDeployment(db.db, { revision: 2, spec: healthySpec({ healthcheck: { test: ['CMD', 'false'], interval: '1s', retries: 1 } }) });
    const bad = await failed(r2);
    expect(bad.status_reason).toMatch(/^container shop\.web\.r2\.[01] is unhealthy$/);
    expect(bad.output).toMatch(/failed after \S+: container shop\.web\.r2\.[01] is unhealthy/);
    expect(bad.finished_at).toBeInstanceOf(Date);

    // The previous revision was never retired: still active, same containers, running.
    expect((await row(db.db, r1)).status).toBe('active');
    expect(await ids(r1)).toEqual(serving);
    expect(await runningNames(docker, r1)).toEqual(['shop.web.r1.0', 'shop.web.r1.1']);

    const [rollback, ...more] = await rollbacksOf(db.db);
    expect(more).toEqual([]);
    expect(rollback).toMatchObject({ from_deployment_id: r2, to_deployment_id: r1 });
    expect(rollback?.reason).toContain('revision 2 failed: container shop.web.r2.');
    const completed = await waitFor('rollback completed', async () => {
      const [r] = await rollbacksOf(db.db);
      return r?.status === 'completed' ? r : undefined;
    }, { context: context(r1, r2) });
    expect(completed.finished_at).toBeInstanceOf(Date);

    // retainFailed 0: the failed revision's containers go once the rollback no longer protects them.
    await waitFor('failed revision containers removed (and recorded)', async () => {
      const removedEvents = (await reasonsOf(db.db, r2)).filter((r) => r === 'OrphanRemoved');
      return (await containersOf(docker, r2)).length === 0 && removedEvents.length === 2;
    }, { context: context(r1, r2) });
    const all = [...(await eventsOf(db.db, r1)), ...(await eventsOf(db.db, r2))].sort((a, b) => Number(a.id) - Number(b.id));
    const completedAt = all.findIndex((e) => e.deployment_id === r1 && e.reason === 'RollbackCompleted');
    expect(completedAt).toBeGreaterThanOrEqual(0);
    const removals = all.map((e, i) => ({ e, i })).filter(({ e }) => e.deployment_id === r2 && e.reason === 'OrphanRemoved');
    expect(removals).toHaveLength(2);
    for (const { i } of removals) expect(i).toBeGreaterThan(completedAt);

    const reasons = await reasonsOf(db.db, r2);
    expect(reasons).toContain('RolloutFailed');
    expect(reasons).not.toContain('Activated');
    expect((await eventsOf(db.db, r2)).find((e) => e.reason === 'RolloutFailed')?.type).toBe('Warning');
    expect((await row(db.db, r1)).status).toBe('active');
    expect(await ids(r1)).toEqual(serving);
  });

  describe('failures', () => {
    it('a container that exits fails the rollout and its container goes', async () => {
      const { db } = await setup();
      const id = await insertDeployment(db.db, {
        service: 'exit',
        revision: 1,
        spec: { image: IMAGE, replicas: 1, command: ['sh', '-c', 'exit 3'], rollout: { minReadySeconds: 5 } },
      });
      const r = await failed(id);
      // Docker restarts it (restart policy unless-stopped), so it may be caught exited or restarted.
      expect(r.status_reason).toMatch(/^container shop\.exit\.r1\.0 (exited with code 3|restarted \d+ time\(s\) \(last exit code (3|unknown)\))$/);
      expect(await reasonsOf(db.db, id)).not.toContain('Activated');
      expect(await rollbacksOf(db.db, 'shop', 'exit')).toEqual([]);
      await waitFor('exited container removed', async () => (await containersOf(docker, id)).length === 0, { context: context(id) });
    });

    it('an image that cannot be had fails with a clear reason, once, and is not retried', async () => {
      const { db, daemon } = await setup();
      const image = '127.0.0.1:1/nope:latest';
      const id = await insertDeployment(db.db, { service: 'noimage', revision: 1, spec: { image, replicas: 1, command: ['sleep', '60'] } });
      const r = await failed(id);
      expect(r.status_reason).toContain(`image ${image}`);
      expect(r.status_reason).toMatch(/could not be pulled|is not present/);
      expect(r.attempts).toBe(1);
      // Several sweeps later nothing has changed: no second attempt, no container.
      await daemon.waitSweeps(4);
      const later = await row(db.db, id);
      expect(later).toMatchObject({ status: 'failed', attempts: 1, version: r.version });
      expect(await reasonsOf(db.db, id)).toEqual(['RolloutStarted', 'RolloutFailed']);
      expect(await containersOf(docker, id)).toEqual([]);
    });

    it('a rollout past its progressDeadline fails naming the deadline', async () => {
      const { db } = await setup();
      const id = await insertDeployment(db.db, {
        service: 'slow',
        revision: 1,
        spec: { image: IMAGE, replicas: 1, command: ['sleep', '3600'], rollout: { progressDeadline: '2s', minReadySeconds: 30 } },
      });
      const r = await failed(id);
      // Normally in health_check (minReadySeconds is far away); on a loaded machine possibly earlier.
      expect(r.status_reason).toMatch(/^progress deadline 2s exceeded in phase (pulling|creating|starting|health_check)$/);
      expect(await reasonsOf(db.db, id)).not.toContain('Activated');
      await waitFor('slow container removed', async () => (await containersOf(docker, id)).length === 0, { context: context(id) });
    });

    it('an invalid spec inserted with SQL fails naming the field and creates nothing', async () => {
      const { db } = await setup();
      const id = await insertDeployment(db.db, { service: 'invalid', revision: 1, spec: { image: IMAGE, replicas: 'two', command: ['sleep', '60'] } });
      const r = await failed(id);
      expect(r.status_reason).toContain('spec.replicas');
      expect(r.status_reason).toContain('"two"');
      expect(await containersOf(docker, id)).toEqual([]);
      expect(await reasonsOf(db.db, id)).toEqual(['RolloutStarted', 'RolloutFailed']);
    });
  });

  describe('activation hook', () => {
    it('receives the deployment as JSON on stdin when a revision activates', async () => {
      const file = join(tmp, 'hook-input.json');
      const { db } = await setup({ activationHook: ['sh', '-c', `cat > ${file}`] });
      const id = await insertDeployment(db.db, { revision: 1, spec: healthySpec() });
      await rolledOut(id);
      const input = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      expect(input).toMatchObject({ id, project: 'shop', service: 'web', revision: 1, phase: 'activating', spec: { image: IMAGE, replicas: 2 } });
    });

    it('a failing hook fails the rollout with its stderr, and the previous revision stays active', async () => {
      const { db } = await setup();
      const r1 = await insertDeployment(db.db, { revision: 1, spec: healthySpec() });
      await rolledOut(r1);
      const serving = await ids(r1);

      await restart({ activationHook: ['sh', '-c', 'echo routes broken >&2; exit 7'] });
      const r2 = await insertDeployment(db.db, { revision: 2, spec: healthySpec({ env: { V: '2' } }) });
      const r = await failed(r2);
      expect(r.status_reason).toContain('routes broken');
      expect(r.status_reason).toContain('7');
      expect(await reasonsOf(db.db, r2)).not.toContain('Activated');
      expect((await row(db.db, r1)).status).toBe('active');
      expect(await ids(r1)).toEqual(serving);
      expect(await runningNames(docker, r1)).toEqual(['shop.web.r1.0', 'shop.web.r1.1']);
      await waitFor('rollback to r1 completed', async () => (await rollbacksOf(db.db))[0]?.status === 'completed', { context: context(r1, r2) });
      await waitFor('failed revision containers removed', async () => (await containersOf(docker, r2)).length === 0, { context: context(r1, r2) });
      expect((await row(db.db, r1)).status).toBe('active');
    });
  });

  it('deployerctl cancel stops a rollout waiting in health_check: cancelled, containers removed, never active; an active one cannot be cancelled', async () => {
    const { db, daemon } = await setup();
    // Never healthy within the start period: the rollout waits in health_check.
    const id = await insertDeployment(db.db, {
      revision: 1,
      spec: { image: IMAGE, replicas: 2, command: ['sleep', '3600'], healthcheck: { test: ['CMD', 'false'], interval: '1s', startPeriod: '5m' } },
    });
    const waiting = await until(id, 'waiting in health_check', (r) => r.status === 'deploying' && r.phase === 'health_check' && r.progress?.message === '0/2 containers ready');
    expect(await containersOf(docker, id)).toHaveLength(2);
    // Waiting is quiet: the row is not rewritten on every pass (each write NOTIFYs and would wake the rollout at once).
    await daemon.waitSweeps(4);
    expect((await row(db.db, id)).version - waiting.version).toBeLessThanOrEqual(1);

    const cancelled = await runCli(['cancel', id], env(db));
    expect(cancelled).toMatchObject({ code: 0, stderr: '', stdout: `deployment ${id} cancelled (was deploying)\n` });
    const r = await row(db.db, id);
    expect(r.status).toBe('cancelled');
    expect(r.status_reason).toMatch(/^cancelled by deployerctl:\S+ in phase health_check$/);
    expect(r.finished_at).toBeInstanceOf(Date);

    await waitFor('cancelled containers removed', async () => (await containersOf(docker, id)).length === 0, { context: context(id) });
    await daemon.waitSweeps(3);
    expect((await row(db.db, id)).status).toBe('cancelled');
    const reasons = await reasonsOf(db.db, id);
    expect(reasons).toContain('Cancelled');
    expect(reasons).not.toContain('Activated');
    expect(await containersOf(docker, id)).toEqual([]);

    const active = await insertDeployment(db.db, { revision: 2, spec: healthySpec() });
    await rolledOut(active);
    const refused = await runCli(['cancel', active], env(db));
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain(`deployment ${active} is active`);
    expect((await row(db.db, active)).status).toBe('active');
    expect(await runningNames(docker, active)).toEqual(['shop.web.r2.0', 'shop.web.r2.1']);
  });

  it('self-heals a replica removed by hand and one that was stopped', async () => {
    const { db } = await setup();
    const id = await insertDeployment(db.db, { revision: 1, spec: healthySpec() });
    await rolledOut(id);
    const [first, second] = await containersOf(docker, id);
    if (!first || !second) throw new Error('expected two containers');

    const healedEvents = async () => (await eventsOf(db.db, id)).filter((e) => e.reason === 'SelfHealed');
    await docker.getContainer(first.Id).remove({ force: true });
    // The event row is written right after the new container starts: wait for both.
    const healed = await waitFor('replica 0 recreated', async () => {
      const c = (await containersOf(docker, id)).find((x) => nameOf(x) === 'shop.web.r1.0');
      return c && c.Id !== first.Id && c.State === 'running' && (await healedEvents()).length > 0 ? c : undefined;
    }, { context: context(id) });
    expect(healed.Labels).toMatchObject({ [LABELS.deploymentId]: id, [LABELS.replica]: '0', [LABELS.revision]: '1' });
    const events = await healedEvents();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'Warning' });
    expect(events[0]?.message).toContain('replica 0');

    // Stopped by hand: Docker does not restart it (unless-stopped), so the controller replaces it.
    await docker.getContainer(second.Id).stop({ t: 0 });
    await waitFor('replica 1 replaced', async () => {
      const c = (await containersOf(docker, id)).find((x) => nameOf(x) === 'shop.web.r1.1');
      return c && c.Id !== second.Id && c.State === 'running' && (await healedEvents()).length > 1 ? c : undefined;
    }, { context: context(id) });
    const both = await healedEvents();
    expect(both).toHaveLength(2);
    expect(both[1]?.message).toMatch(/replica 1.*shop\.web\.r1\.1 is exited/);

    const final = await containersOf(docker, id);
    expect(final.map(nameOf)).toEqual(['shop.web.r1.0', 'shop.web.r1.1']);
    expect(final.every((c) => c.State === 'running')).toBe(true);
    expect((await row(db.db, id)).status).toBe('active');
  });

  it('deployerctl rollback creates the next revision with an earlier spec, which rolls out; the rollbacks row completes', async () => {
    const { db } = await setup();
    const spec1: SpecJson = healthySpec({ env: { VERSION: '1' } });
    const spec2: SpecJson = healthySpec({ env: { VERSION: '2' } });
    const r1 = await insertDeployment(db.db, { revision: 1, spec: spec1 });
    await rolledOut(r1);
    const r2 = await insertDeployment(db.db, { revision: 2, spec: spec2 });
    await rolledOut(r2);
    expect((await row(db.db, r1)).status).toBe('superseded');

    const envOf = async (deploymentId: string) => {
      const [c] = await containersOf(docker, deploymentId);
      return (await docker.getContainer(c!.Id).inspect()).Config.Env;
    };

    // Default: the previously active revision (1).
    const back = await runCli(['rollback', 'shop/web'], env(db));
    expect(back).toMatchObject({ code: 0, stderr: '' });
    expect(back.stdout).toBe('shop/web: revision 3 (shop.web.r3) created with the spec of revision 1, pending\n');
    const [started] = await rollbacksOf(db.db);
    expect(started).toMatchObject({ from_deployment_id: r2, to_deployment_id: 'shop.web.r3', status: 'in_progress' });
    const r3 = await rolledOut('shop.web.r3');
    expect(r3.spec).toMatchObject(spec1);
    expect(await envOf('shop.web.r3')).toContain('VERSION=1');
    expect((await row(db.db, r2)).status).toBe('superseded');
    await waitFor('rollback to r3 completed', async () => (await rollbacksOf(db.db))[0]?.status === 'completed', { context: context(r2, 'shop.web.r3') });
    expect((await reasonsOf(db.db, 'shop.web.r3'))[0]).toBe('RollbackRequested');
    expect(await reasonsOf(db.db, 'shop.web.r3')).toContain('RollbackCompleted');

    // Explicit: --to-revision 2.
    const to2 = await runCli(['rollback', 'shop/web', '--to-revision', '2'], env(db));
    expect(to2).toMatchObject({ code: 0, stderr: '', stdout: 'shop/web: revision 4 (shop.web.r4) created with the spec of revision 2, pending\n' });
    const second = (await rollbacksOf(db.db)).find((r) => r.to_deployment_id === 'shop.web.r4');
    expect(second).toMatchObject({ from_deployment_id: 'shop.web.r3', status: 'in_progress' });
    const r4 = await rolledOut('shop.web.r4');
    expect(r4.spec).toMatchObject(spec2);
    expect(await envOf('shop.web.r4')).toContain('VERSION=2');
    expect(await runningNames(docker, 'shop.web.r4')).toEqual(['shop.web.r4.0', 'shop.web.r4.1']);
    expect((await row(db.db, 'shop.web.r3')).status).toBe('superseded');
    await waitFor('rollback to r4 completed', async () => (await rollbacksOf(db.db)).find((r) => r.to_deployment_id === 'shop.web.r4')?.status === 'completed', {
      context: context('shop.web.r3', 'shop.web.r4'),
    });

    const missing = await runCli(['rollback', 'shop/web', '--to-revision', '9'], env(db));
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).toContain('has no revision 9');
  });
});
