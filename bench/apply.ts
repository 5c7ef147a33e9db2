/**
 * What `deployerctl apply` costs at scale, on a real PostgreSQL (the
 * embedded one, in a temporary directory): a directory of N one-service
 * manifest files applied into an empty database, then applied again
 * unchanged (which must write nothing), then with a few services changed.
 *
 *   npx tsx bench/apply.ts -- --services 1000 --projects 20 --runs 5
 *
 * Prints, for each case: wall time (load + validate, and the database part),
 * SQL statements sent, and rows written.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { sql } from 'kysely';
import { applyManifests } from '../src/manifest/apply.js';
import { loadManifests } from '../src/manifest/sources.js';
import { countQueries, stats, withPostgres } from './support.js';

const { values } = parseArgs({
  options: {
    services: { type: 'string', default: '1000' },
    projects: { type: 'string', default: '20' },
    runs: { type: 'string', default: '5' },
    changed: { type: 'string', default: '10' },
  },
});
const total = Number(values.services);
const projects = Number(values.projects);
const runs = Number(values.runs);
const changedCount = Math.min(total, Number(values.changed));

const queries = countQueries();

/** A realistic manifest: image, replicas, env, a volume, a healthcheck, rollout options. */
function manifest(i: number, tag: string): string {
  const project = `p${String(i % projects).padStart(2, '0')}`;
  return [
    'apiVersion: deployer/v1',
    'kind: Service',
    `metadata: { project: ${project}, name: svc-${i} }`,
    'spec:',
    `  image: registry.example.com/${project}/svc-${i}:${tag}`,
    `  replicas: ${1 + (i % 3)}`,
    '  command: ["/app/server", "--port", "8080"]',
    '  env:',
    '    LOG_LEVEL: info',
    `    SERVICE_INDEX: ${i}`,
    '    FEATURE_FLAGS: "a,b,c"',
    `  volumes: ["${project}-data:/data", "/tmp/cache"]`,
    '  healthcheck: { test: ["CMD", "/app/health"], interval: 5s, timeout: 2s, retries: 3 }',
    '  rollout: { progressDeadline: 10m, minReadySeconds: 5 }',
    `  labels: { com.example.team: team-${i % 7} }`,
    '',
  ].join('\n');
}

function writeDirectory(dir: string, tagOf: (i: number) => string): void {
  for (let i = 0; i < total; i++) writeFileSync(join(dir, `svc-${String(i).padStart(4, '0')}.yaml`), manifest(i, tagOf(i)));
}

await withPostgres(async ({ dir, db }) => {
  const manifests = join(dir, 'manifests');
  mkdirSync(manifests);
  const count = async () => Number((await sql<{ n: string }>`SELECT (SELECT count(*) FROM deployments) + (SELECT count(*) FROM deployment_events) AS n`.execute(db)).rows[0]!.n);
  writeDirectory(manifests, () => '1.0.0');
  console.log(`${total} services in ${total} files, ${projects} projects, in ${manifests}`);

  const timed = async (label: string, prune: boolean) => {
    const before = await count();
    const t0 = performance.now();
    const set = await loadManifests([manifests]);
    const t1 = performance.now();
    if (set.problems.length > 0) throw new Error(set.problems.slice(0, 3).join('\n'));
    queries.reset();
    const outcome = await applyManifests(db, set.services, { actor: 'bench', prune });
    const t2 = performance.now();
    const statements = queries.count;
    const written = (await count()) - before;
    console.log(
      `${label}: ${(t2 - t0).toFixed(1)} ms (load+validate ${(t1 - t0).toFixed(1)} ms, database ${(t2 - t1).toFixed(1)} ms), ` +
        `${statements} SQL statements, ${written} rows written; ${outcome.plan.created.length} created, ${outcome.plan.unchanged.length} unchanged`,
    );
    return { ms: t2 - t0, dbMs: t2 - t1, written };
  };

  await timed('first apply (empty database)', false);

  const again: number[] = [];
  const againDb: number[] = [];
  for (let r = 0; r < runs; r++) {
    const result = await timed(`apply again unchanged #${r + 1}`, true);
    if (result.written !== 0) throw new Error('an unchanged apply wrote rows');
    again.push(result.ms);
    againDb.push(result.dbMs);
  }
  console.log(`apply again unchanged, whole command: ${stats(again)}; database part: ${stats(againDb)}`);

  writeDirectory(manifests, (i) => (i < changedCount ? '1.0.1' : '1.0.0'));
  await timed(`apply with ${changedCount} services changed`, true);
});
