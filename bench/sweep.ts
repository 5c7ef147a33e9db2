/**
 * What one sweep costs at scale, on real engines: a private dockerd and an
 * embedded PostgreSQL, N labelled containers (created, not started: listing
 * cost does not depend on it) and N deployment rows.
 *
 *   npm run bench -- --containers 1000 --orphans 100
 *
 * Prints, for a steady sweep (no drift) and for sweeps that remove orphans:
 * wall time, SQL queries and Docker API calls per sweep.
 */
import { parseArgs } from 'node:util';
import { Metrics } from '../src/controller/metrics.js';
import { createLogger } from '../src/controller/logger.js';
import { Sweeper } from '../src/controller/sweep.js';
import { DockerRuntime } from '../src/runtime/docker.js';
import { PgStore } from '../src/store/store.js';
import { LABELS } from '../src/types.js';
import { BENCH_POLICY, countQueries, stats, withEngines } from './support.js';

const { values } = parseArgs({
  options: {
    containers: { type: 'string', default: '1000' },
    orphans: { type: 'string', default: '100' },
    runs: { type: 'string', default: '5' },
  },
});
const total = Number(values.containers);
const orphans = Math.min(total, Number(values.orphans));
const runs = Number(values.runs);

const queries = countQueries();

await withEngines(async ({ db, dockerd, docker, image }) => {
  console.log(`seeding ${total} deployment rows and ${total} labelled containers (${orphans} of them orphans)...`);
  const seedStart = performance.now();
  const rows = Array.from({ length: total }, (_, i) => ({
    id: `bench-${i}`,
    project: `p${i % 50}`,
    service: `s${i}`,
    revision: 1,
    spec: JSON.stringify({ image }),
    spec_hash: 'h',
    status: i < orphans ? ('failed' as const) : ('active' as const),
    // Run by the platform's own worker, which the controller only watches: the
    // containers are created, not started, and self-heal would otherwise start over.
    executor: 'platform-worker',
  }));
  for (let i = 0; i < rows.length; i += 500) await db.insertInto('deployments').values(rows.slice(i, i + 500)).execute();
  const queue = [...rows.keys()];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
        await docker.createContainer({
          Image: image,
          Cmd: ['sleep', '3600'],
          Labels: { [LABELS.deploymentId]: `bench-${i}`, [LABELS.managedBy]: 'deployer-controller', [LABELS.replica]: '0' },
          HostConfig: { NetworkMode: 'none' },
        });
      }
    }),
  );
  console.log(`seeded in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`);

  let dockerCalls = 0;
  const metrics = new Metrics({ processMetrics: false });
  const runtime = new DockerRuntime({ dockerHost: dockerd.dockerHost, timeoutMs: 60_000, observe: () => dockerCalls++ });
  const sweeper = new Sweeper({
    store: new PgStore(db),
    runtime,
    logger: createLogger('silent'),
    metrics,
    actor: 'bench',
    controllerName: 'deployer-controller',
    policy: BENCH_POLICY,
    fence: () => undefined,
    mayAct: () => true,
  });

  // Sweeps that remove the orphans, at most 50 per sweep.
  let removing = 0;
  while (true) {
    queries.reset();
    dockerCalls = 0;
    const started = performance.now();
    const report = await sweeper.sweep();
    const ms = performance.now() - started;
    const removed = report.outcomes.filter((o) => o.action.kind === 'remove_container' && (o.result === 'applied' || o.result === 'gone')).length;
    if (report.plan.actions.length === 0) break;
    removing++;
    console.log(`sweep with deletions #${removing}: ${ms.toFixed(1)} ms, removed ${removed}, ${queries.count} SQL queries, ${dockerCalls} Docker calls`);
  }

  // Steady state: nothing to do.
  const samples: number[] = [];
  let steadyQueries = 0;
  let steadyCalls = 0;
  for (let i = 0; i < runs; i++) {
    queries.reset();
    dockerCalls = 0;
    const started = performance.now();
    const report = await sweeper.sweep();
    samples.push(performance.now() - started);
    steadyQueries = queries.count;
    steadyCalls = dockerCalls;
    if (report.plan.actions.length !== 0) throw new Error('steady sweep should have nothing to do');
  }
  console.log(`steady sweep at ${total - orphans} containers / ${total} rows: ${stats(samples)}, ${steadyQueries} SQL queries, ${steadyCalls} Docker calls per sweep`);
});
