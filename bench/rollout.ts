/**
 * How long a rollout and a self-heal take, end to end, on real engines: a
 * private dockerd, an embedded PostgreSQL and an in-process daemon (leader
 * election, NOTIFY listener, sweep loop, rollout reconciler), as `deployerctl
 * run` runs them.
 *
 *   ./node_modules/.bin/tsx bench/rollout.ts [--runs 10] [--heals 5] [--heal-resync 5s]
 *
 * (a) rollout: from inserting a `pending` 1-replica deployment (image already
 *     present, no healthcheck, minReadySeconds 0) until it is `active` with
 *     phase null. Every run is the next revision of the same service, so each
 *     also retires (supersedes and removes) the previous one.
 * (b) self-heal: from `docker rm -f` of the running replica until a new
 *     container of that replica is running. Measured with the resync period as
 *     the only trigger (the runtime's event stream hidden from the daemon), and,
 *     when the runtime offers an event stream, once more with it.
 */
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from '../src/config.js';
import { Daemon } from '../src/controller/daemon.js';
import { createLogger } from '../src/controller/logger.js';
import { Metrics } from '../src/controller/metrics.js';
import { parseDuration } from '../src/duration.js';
import { specHash, validateSpec } from '../src/manifest/spec.js';
import { DockerRuntime } from '../src/runtime/docker.js';
import type { Runtime } from '../src/runtime/runtime.js';
import type { OpenDatabase } from '../src/store/open.js';
import { PgStore } from '../src/store/store.js';
import { LABELS } from '../src/types.js';
import { stats, withEngines } from './support.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '10' },
    heals: { type: 'string', default: '5' },
    'heal-resync': { type: 'string', default: '5s' },
    'log-level': { type: 'string', default: 'warn' },
  },
});
const runs = Number(values.runs);
const heals = Number(values.heals);
const healResync = values['heal-resync'];
const TIMEOUT_MS = 120_000;
const POLL_MS = 5;

const PROJECT = 'bench';
const SERVICE = 'web';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` every few milliseconds until it returns a value; throws after {@link TIMEOUT_MS}. */
async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(POLL_MS);
  }
}

/** The runtime without its event stream: the daemon then reacts to Docker only on resync. */
function withoutEvents(runtime: Runtime): Runtime {
  return new Proxy(runtime, {
    get: (target, key) => (key === 'watchEvents' ? undefined : (Reflect.get(target, key, target) as unknown)),
    has: (target, key) => key !== 'watchEvents' && Reflect.has(target, key),
  });
}

await withEngines(async ({ dir, url, db, dockerd, docker, image }) => {
  const database: OpenDatabase = {
    db,
    store: new PgStore(db),
    description: 'embedded PostgreSQL (bench)',
    url,
    close: () => db.destroy(),
  };
  const logger = createLogger(values['log-level']);
  let daemon: Daemon | undefined;
  try {
    const spec = validateSpec({ image, command: ['sleep', '3600'], replicas: 1, rollout: { minReadySeconds: 0 } });

    const configFor = (resync: string): Config =>
      loadConfig({
        env: {},
        overrides: { databaseUrl: url, dockerHost: dockerd.dockerHost, stateDir: dir, containerNetwork: 'none', resync, logLevel: values['log-level'] },
      });
    const startDaemon = async (config: Config, runtime?: Runtime): Promise<Daemon> => {
      const d = new Daemon({ config, logger, database, metrics: new Metrics({ processMetrics: false }), http: false, ...(runtime ? { runtime } : {}) });
      await d.start();
      await d.firstSweepDone();
      return d;
    };
    const containersOf = (deploymentId: string) =>
      docker.listContainers({ all: true, filters: { label: [`${LABELS.deploymentId}=${deploymentId}`] } });

    // (a) rollouts.
    daemon = await startDaemon(configFor('30s'));
    console.log(`rollout: ${runs} revisions of ${PROJECT}/${SERVICE}, 1 replica of ${image} (present), no healthcheck, minReadySeconds 0; resync 30s`);
    const rolloutMs: number[] = [];
    /** From insertion until the previous revision's container is gone too. */
    const retireMs: number[] = [];
    const segments = new Map<string, number[]>();
    /** Where a rollout's time went: the gaps between its event rows, from the row's insertion on. */
    const phaseSplit = async (id: string): Promise<[string, number][]> => {
      const { created_at: inserted } = await db.selectFrom('deployments').select('created_at').where('id', '=', id).executeTakeFirstOrThrow();
      const events = await db.selectFrom('deployment_events').select(['reason', 'at']).where('deployment_id', '=', id).orderBy('id').execute();
      const at = (reason: string) => events.find((e) => e.reason === reason)?.at;
      const marks: [string, Date | undefined][] = [
        ['inserted', inserted],
        ['claim', at('RolloutStarted')],
        ['pulling', at('Creating')],
        ['creating', at('Starting')],
        ['starting', at('HealthCheck')],
        ['health_check', at('Activating')],
        ['activating', at('Activated')],
        ['retiring', at('RolloutComplete')],
      ];
      const split: [string, number][] = [];
      for (let i = 1; i < marks.length; i++) {
        const from = marks[i - 1]![1];
        const to = marks[i]![1];
        if (from && to) split.push([marks[i]![0], to.getTime() - from.getTime()]);
      }
      return split;
    };
    let previous: string | undefined;
    for (let revision = 1; revision <= runs; revision++) {
      const id = `bench-${revision}`;
      const started = performance.now();
      await db
        .insertInto('deployments')
        .values({ id, project: PROJECT, service: SERVICE, revision, spec: JSON.stringify(spec), spec_hash: specHash(spec), status: 'pending', executor: 'controller' })
        .execute();
      const row = await until(`${id} to be active`, async () => {
        const r = await db.selectFrom('deployments').select(['status', 'phase', 'status_reason']).where('id', '=', id).executeTakeFirstOrThrow();
        if (r.status === 'failed' || r.status === 'cancelled') throw new Error(`${id} ${r.status}: ${r.status_reason}`);
        return r.status === 'active' && r.phase === null ? r : undefined;
      });
      const ms = performance.now() - started;
      rolloutMs.push(ms);
      // Checks outside the timing: the new replica runs, the previous revision is superseded and its container gone.
      const mine = await containersOf(id);
      if (mine.length !== 1 || mine[0]!.State !== 'running') throw new Error(`${id}: expected 1 running container, found ${mine.map((c) => c.State).join(', ') || 'none'}`);
      if (previous) {
        const old = await db.selectFrom('deployments').select('status').where('id', '=', previous).executeTakeFirstOrThrow();
        if (old.status !== 'superseded') throw new Error(`${previous}: ${old.status}, expected superseded`);
        // Retiring hands the old container to the sweep it asks for: it goes right after.
        await until(`${previous}'s container to go`, async () => ((await containersOf(previous!)).length === 0 ? true : undefined));
        retireMs.push(performance.now() - started);
      }
      const split = await phaseSplit(id);
      for (const [segment, segmentMs] of split) segments.set(segment, [...(segments.get(segment) ?? []), segmentMs]);
      console.log(`  revision ${revision}: ${ms.toFixed(0)} ms (${row.status}); ${split.map(([segment, segmentMs]) => `${segment} ${segmentMs.toFixed(0)}`).join(', ')}`);
      previous = id;
    }
    console.log(`rollout to active, image present: ${stats(rolloutMs, 0)}`);
    console.log(`  ... and the previous revision's container removed: ${stats(retireMs, 0)}`);
    console.log('  by segment (database clock, from the event rows):');
    for (const [segment, samples] of segments) console.log(`    ${segment.padEnd(13)} ${stats(samples, 0)}`);
    await daemon.stop();
    daemon = undefined;

    // (b) self-heal of the last revision.
    const target = previous!;
    const resyncMs = parseDuration(healResync);
    const heal = async (label: string, runtime?: Runtime): Promise<number[]> => {
      daemon = await startDaemon(configFor(healResync), runtime);
      const samples: number[] = [];
      for (let i = 0; i < heals; i++) {
        const [running] = (await containersOf(target)).filter((c) => c.State === 'running');
        if (!running) throw new Error(`${target} has no running container`);
        // Let the loop settle at a random point of its resync period, so the samples spread as they would in real life.
        await sleep(Math.random() * resyncMs);
        const started = performance.now();
        await docker.getContainer(running.Id).remove({ force: true });
        await until(`replica 0 of ${target} to run again`, async () => {
          const now = await containersOf(target);
          return now.some((c) => c.Id !== running.Id && c.State === 'running' && c.Labels[LABELS.replica] === '0') ? true : undefined;
        });
        const ms = performance.now() - started;
        samples.push(ms);
        console.log(`  ${label} #${i + 1}: ${ms.toFixed(0)} ms`);
      }
      await daemon.stop();
      daemon = undefined;
      return samples;
    };

    const plain = new DockerRuntime({ dockerHost: dockerd.dockerHost, timeoutMs: 30_000 });
    console.log(`self-heal: docker rm -f of the running replica until a new one runs; resync ${healResync}`);
    const resyncOnly = await heal('resync only', withoutEvents(plain));
    console.log(`self-heal, resync ${healResync} only: ${stats(resyncOnly, 0)} (bounded by the resync period: at most ${healResync} plus the sweep)`);
    if (typeof plain.watchEvents === 'function') {
      const withEvents = await heal('with Docker events', undefined);
      console.log(`self-heal, resync ${healResync} + Docker event stream: ${stats(withEvents, 0)}`);
    } else {
      console.log('self-heal with Docker events: not measured (the runtime has no event stream): only the resync period wakes the loop for a removed container');
    }
  } finally {
    await daemon?.stop().catch(() => undefined);
  }
});
