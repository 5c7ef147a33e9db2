/**
 * Kill -9 at every phase boundary (issue 3, DESIGN.md principle 4): the built
 * CLI daemon runs in a child process with `DEPLOYER_FAILPOINT=<point>`, which
 * SIGKILLs it there while it replaces an active revision 1 with a pending
 * revision 2; a second daemon, started without the failpoint, must converge to
 * the end state of an uninterrupted run: the same containers (no duplicates),
 * the same statuses, no event lost. The dead owner is on this host, so the
 * restarted daemon resumes at once (its pid is gone) although heartbeatTimeout
 * is a long 60s: every convergence below is awaited for less than that.
 * Skipped loudly when this machine cannot run a private dockerd, except in
 * CI, where it fails instead.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { DeploymentRow } from '../../src/store/schema.js';
import { LABELS, type Phase } from '../../src/types.js';
import { startEngine, type Engine } from '../support/engine.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { dockerSkip, killChildren, requireDocker, startCli, waitFor, type BackgroundProcess } from '../support/processes.js';
import { containersOf, daemonEnv, describeRows, healthySpec, insertDeployment, nameOf, reasonsOf, removeManaged, row } from '../support/rollout-helpers.js';

const skip = dockerSkip('crash (failpoint) tests');

/** Every failpoint the rollout reconciler has, in rollout order. */
const FAILPOINTS = [
  'before:pulling',
  'after:pulling',
  'before:creating',
  'after:creating',
  'before:starting',
  'after:starting',
  'before:health_check',
  'after:health_check',
  'before:activating',
  'after:activating',
  'before:retiring',
  'after:retiring',
] as const;
type Failpoint = (typeof FAILPOINTS)[number];

/**
 * Where each failpoint leaves revision 2 (and revision 1) when the process
 * dies, and how many resumes finishing it takes. A `deploying` rollout whose
 * owner died is claimed again (RolloutResumed, attempts + 1: DESIGN.md 3.3
 * "Interrupted"). Once `active` in `retiring`, the planner finishes the
 * retirement whoever the owner was, without a claim (attempts stay 1), as the
 * planner's unit tests pin down.
 */
const AT_CRASH: Record<Failpoint, { status: 'deploying' | 'active'; phase: Phase; containers: number; r1: 'active' | 'superseded'; resumes: 0 | 1 }> = {
  'before:pulling': { status: 'deploying', phase: 'pulling', containers: 0, r1: 'active', resumes: 1 },
  'after:pulling': { status: 'deploying', phase: 'pulling', containers: 0, r1: 'active', resumes: 1 },
  'before:creating': { status: 'deploying', phase: 'creating', containers: 0, r1: 'active', resumes: 1 },
  'after:creating': { status: 'deploying', phase: 'creating', containers: 2, r1: 'active', resumes: 1 },
  'before:starting': { status: 'deploying', phase: 'starting', containers: 2, r1: 'active', resumes: 1 },
  'after:starting': { status: 'deploying', phase: 'starting', containers: 2, r1: 'active', resumes: 1 },
  'before:health_check': { status: 'deploying', phase: 'health_check', containers: 2, r1: 'active', resumes: 1 },
  'after:health_check': { status: 'deploying', phase: 'health_check', containers: 2, r1: 'active', resumes: 1 },
  'before:activating': { status: 'deploying', phase: 'activating', containers: 2, r1: 'active', resumes: 1 },
  'after:activating': { status: 'deploying', phase: 'activating', containers: 2, r1: 'active', resumes: 1 },
  'before:retiring': { status: 'active', phase: 'retiring', containers: 2, r1: 'active', resumes: 0 },
  'after:retiring': { status: 'active', phase: 'retiring', containers: 2, r1: 'superseded', resumes: 0 },
};

const REPLICAS = 2;
/** Less than heartbeatTimeout (60s): converging in time proves the dead-pid path, not the heartbeat expiry. */
const CONVERGE_MS = 45_000;

/** What one run (crashed or not) ended with. */
interface Outcome {
  r1: DeploymentRow;
  r2: DeploymentRow;
  r1Reasons: string[];
  r2Reasons: string[];
  r2Containers: { name: string; state: string }[];
  r1Containers: number;
  /** Names of every container of the service, whatever its revision. */
  serviceContainers: string[];
  /** Revision 2 and its containers at the moment of the crash. */
  atCrash?: { row: DeploymentRow; containers: { name: string; state: string }[]; r1: DeploymentRow };
  ms: number;
}

/** Reason -> count. */
function tally(reasons: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of reasons) counts[r] = (counts[r] ?? 0) + 1;
  return counts;
}

describe.skipIf(skip !== null)('kill -9 at every phase boundary, then restart', { timeout: 120_000 }, () => {
  let engine: Engine | undefined;
  let docker: Docker;
  let stateDir: string;
  let reference: Outcome;

  /**
   * One database and one service (so container names never collide) per run:
   * revision 1 rolled out by an uninterrupted daemon, then revision 2 rolled
   * out, crashed at `failpoint` when given and finished by a fresh daemon.
   */
  async function run(failpoint?: Failpoint): Promise<Outcome> {
    const started = Date.now();
    const service = failpoint ? failpoint.replace(/[:_]/g, '-') : 'reference';
    const db: TestDatabase = await createTestDatabase(`crash_${service}`);
    const daemons: BackgroundProcess[] = [];
    const env = (extra: Record<string, string> = {}) =>
      daemonEnv(db.url, engine!.dockerd.dockerHost, stateDir, { DEPLOYER_HEARTBEAT_TIMEOUT: '60s', ...extra });
    const start = (extra?: Record<string, string>) => {
      const daemon = startCli(['run'], env(extra));
      daemons.push(daemon);
      return daemon;
    };
    const r1 = `shop.${service}.r1`;
    const r2 = `shop.${service}.r2`;
    const context = (daemon: BackgroundProcess) => async () => `[${failpoint ?? 'reference'}]\n${await describeRows(db.db, [r1, r2])}\n${daemon.tail()}`;
    const listed = async (id: string) => (await containersOf(docker, id)).map((c) => ({ name: nameOf(c), state: c.State }));
    try {
      await insertDeployment(db.db, { service, revision: 1, spec: healthySpec() });
      const seed = start();
      await waitFor(`${r1} rolled out`, async () => {
        const r = await row(db.db, r1);
        return r.status === 'active' && r.phase === null;
      }, { timeoutMs: CONVERGE_MS, context: context(seed) });
      const seedExit = await seed.stop();
      if (seedExit.code !== 0) throw new Error(`seeding daemon exited with ${JSON.stringify(seedExit)}\n${seed.tail()}`);

      await insertDeployment(db.db, { service, revision: 2, spec: healthySpec({ env: { REVISION: '2' } }) });
      let atCrash: Outcome['atCrash'];
      if (failpoint) {
        const crashing = start({ DEPLOYER_FAILPOINT: failpoint });
        const exit = await waitFor(`the daemon to die at ${failpoint}`, () => Promise.race([crashing.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 200))]), {
          timeoutMs: CONVERGE_MS,
          context: context(crashing),
        });
        if (exit.signal !== 'SIGKILL') throw new Error(`expected death by SIGKILL at ${failpoint}, got ${JSON.stringify(exit)}\n${crashing.tail()}`);
        atCrash = { row: await row(db.db, r2), containers: await listed(r2), r1: await row(db.db, r1) };
      }

      const final = start();
      await waitFor(`${r2} rolled out and ${r1} retired`, async () => {
        const [a, b] = [await row(db.db, r1), await row(db.db, r2)];
        return b.status === 'active' && b.phase === null && a.status === 'superseded' && (await containersOf(docker, r1)).length === 0;
      }, { timeoutMs: CONVERGE_MS, context: context(final) });
      const finalExit = await final.stop();
      if (finalExit.code !== 0) throw new Error(`daemon exited with ${JSON.stringify(finalExit)}\n${final.tail()}`);

      return {
        r1: await row(db.db, r1),
        r2: await row(db.db, r2),
        r1Reasons: await reasonsOf(db.db, r1),
        r2Reasons: await reasonsOf(db.db, r2),
        r2Containers: await listed(r2),
        r1Containers: (await containersOf(docker, r1)).length,
        serviceContainers: (await docker.listContainers({ all: true, filters: { label: [`${LABELS.service}=${service}`] } })).map(nameOf).sort(),
        ...(atCrash ? { atCrash } : {}),
        ms: Date.now() - started,
      };
    } finally {
      for (const daemon of daemons) await daemon.stop(5_000);
      await removeManaged(docker, (labels) => labels[LABELS.service] === service);
      await db.drop();
    }
  }

  beforeAll(async () => {
    requireDocker();
    engine = await startEngine();
    docker = engine.docker;
    stateDir = mkdtempSync(join(tmpdir(), 'crash-test-'));
    reference = await run();
    console.info(`uninterrupted reference run: ${reference.ms} ms`);
  }, 180_000);

  afterAll(async () => {
    killChildren();
    await engine?.dockerd.stop();
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  }, 60_000);

  it('the uninterrupted reference run ends with revision 2 active and revision 1 superseded', ({ expect }) => {
    expect(reference.r2).toMatchObject({ status: 'active', phase: null, attempts: 1, progress: { step: 6, total: 6, percent: 100 } });
    expect(reference.r1).toMatchObject({ status: 'superseded', status_reason: 'superseded by revision 2' });
    expect(reference.r2Containers).toEqual([
      { name: 'shop.reference.r2.0', state: 'running' },
      { name: 'shop.reference.r2.1', state: 'running' },
    ]);
    expect(reference.r1Containers).toBe(0);
    expect(reference.r2Reasons).toEqual(['RolloutStarted', 'Creating', 'Starting', 'HealthCheck', 'Activating', 'Activated', 'RolloutComplete']);
    expect(reference.r2Reasons).not.toContain('RolloutResumed');
  });

  it.concurrent.for(FAILPOINTS)('killed at %s, restarted: the same end state as an uninterrupted run', async (failpoint, { expect }) => {
    const outcome = await run(failpoint);
    console.info(`${failpoint}: ${outcome.ms} ms`);
    const service = failpoint.replace(/[:_]/g, '-');
    const expected = AT_CRASH[failpoint];

    // It died where the failpoint says.
    const atCrash = outcome.atCrash!;
    expect(atCrash.row).toMatchObject({ status: expected.status, phase: expected.phase, attempts: 1 });
    expect(atCrash.containers).toHaveLength(expected.containers);
    expect(atCrash.r1.status).toBe(expected.r1);

    // The end state equals the uninterrupted run's.
    expect(outcome.r2).toMatchObject({ status: 'active', phase: null, status_reason: null, progress: reference.r2.progress, attempts: 1 + expected.resumes });
    expect(outcome.r1).toMatchObject({ status: reference.r1.status, status_reason: reference.r1.status_reason });
    expect(outcome.r2Containers).toEqual(
      Array.from({ length: REPLICAS }, (_, i) => ({ name: `shop.${service}.r2.${i}`, state: 'running' })),
    );
    expect(outcome.r1Containers).toBe(0);
    expect(outcome.serviceContainers).toEqual(outcome.r2Containers.map((c) => c.name));
    if (expected.resumes) expect(outcome.r2.owner).not.toBe(atCrash.row.owner);

    // No event of the uninterrupted run is missing or doubled; a resume adds one RolloutResumed.
    const withoutResume = (reasons: string[]) => tally(reasons.filter((r) => r !== 'RolloutResumed'));
    expect(withoutResume(outcome.r2Reasons)).toEqual(tally(reference.r2Reasons));
    expect(withoutResume(outcome.r1Reasons)).toEqual(tally(reference.r1Reasons));
    expect(new Set(outcome.r2Reasons)).toEqual(new Set([...reference.r2Reasons, ...(expected.resumes ? ['RolloutResumed'] : [])]));
    expect(outcome.r2Reasons.filter((r) => r === 'RolloutResumed')).toHaveLength(expected.resumes);
    expect(outcome.r1Reasons).not.toContain('RolloutResumed');
    if (expected.resumes) {
      // Resumed at once, from the phase it died in, because the dead owner's pid is gone (heartbeatTimeout is 60s).
      expect(outcome.r2.output).toMatch(new RegExp(`resuming in phase ${expected.phase} \\(attempt 2\\): owner \\S+/\\d+/\\w+ is gone`));
    }
  });
});
