/**
 * The planners alone, on in-memory snapshots (fakes, no engines), at sizes a
 * real engine would take long to seed:
 *
 *   npm run bench:planner -- --containers 100000
 */
import { parseArgs } from 'node:util';
import { planSweep } from '../src/reconcilers/plan.js';
import type { Policy, Snapshot } from '../src/reconcilers/snapshot.js';
import { LABELS, type Deployment, type ObservedContainer } from '../src/types.js';
import { BENCH_POLICY, stats } from './support.js';

const { values } = parseArgs({ options: { containers: { type: 'string', default: '10000,100000' }, runs: { type: 'string', default: '5' } } });
const sizes = values.containers.split(',').map(Number);
const runs = Number(values.runs);

/** The benches' policy, keeping the last 2 failed revisions. */
const policy: Policy = { ...BENCH_POLICY, retainFailed: 2 };

/** A fake snapshot: every 10th deployment failed, every 50th container unknown. */
function fakeSnapshot(n: number): Snapshot {
  const now = new Date('2026-01-01T12:00:00Z');
  const old = new Date(now.getTime() - 3_600_000);
  const deployments = new Map<string, Deployment>();
  const containers: ObservedContainer[] = [];
  for (let i = 0; i < n; i++) {
    const id = `d${i}`;
    if (i % 50 !== 0) {
      deployments.set(id, {
        id, project: `p${i % 100}`, service: `s${i % 1000}`, revision: i + 1, specHash: 'h',
        status: i % 10 === 0 ? 'failed' : 'active', phase: null, progress: null, executor: 'controller', owner: null,
        attempts: 1, heartbeatAt: null, startedAt: old, finishedAt: old, statusReason: null, version: 1, createdAt: old, updatedAt: old,
      });
    }
    containers.push({ id: `c${i}`, name: `c${i}`, labels: { [LABELS.deploymentId]: id }, state: 'running', createdAt: old });
  }
  return { now, deployments, containers, volumes: [], rollbacks: [] };
}

for (const n of sizes) {
  const snapshot = fakeSnapshot(n);
  const samples: number[] = [];
  let actions = 0;
  for (let r = 0; r < runs; r++) {
    const started = performance.now();
    const plan = planSweep(snapshot, policy);
    samples.push(performance.now() - started);
    actions = plan.actions.length + plan.deferred.length;
  }
  console.log(`planSweep over ${n} containers: ${stats(samples)}, ${actions} actions planned`);
}
