/**
 * What the benches share: the real engines they run on (an embedded
 * PostgreSQL in a fresh directory, migrated; a private dockerd with the
 * busybox image), the planners' policy, a count of the SQL statements sent,
 * and how samples are summed up.
 */
import { rmSync } from 'node:fs';
import type Docker from 'dockerode';
import type { Kysely } from 'kysely';
import pg from 'pg';
import type { Policy } from '../src/reconcilers/snapshot.js';
import { createDb } from '../src/store/db.js';
import { startEmbeddedPostgres } from '../src/store/embedded.js';
import { migrateUp } from '../src/store/migrate.js';
import type { Database } from '../src/store/schema.js';
import type { PrivateDockerd } from '../test/support/dockerd.js';
import { startEngine } from '../test/support/engine.js';
import { makeStateDir } from '../test/support/state-dir.js';

/** The planners' policy of the benches: the config defaults (`src/config.ts`), spelt out. */
export const BENCH_POLICY: Policy = {
  controllerName: 'deployer-controller',
  orphanGraceMs: 120_000,
  retainFailed: 0,
  failedRetentionMs: 86_400_000,
  stuckTimeoutMs: 6 * 3_600_000,
  heartbeatTimeoutMs: 60_000,
  maxAttempts: 3,
  maxDeletionsPerSweep: 50,
  guardFraction: 0.5,
  guardMinContainers: 10,
  force: false,
};

/** A migrated embedded PostgreSQL. */
export interface BenchPostgres {
  /** Its state directory, a fresh temporary one, removed afterwards (free for other files of the bench). */
  dir: string;
  url: string;
  db: Kysely<Database>;
}

/** A private dockerd with the busybox image imported. */
export interface BenchDocker {
  dockerd: PrivateDockerd;
  docker: Docker;
  image: string;
}

/**
 * Runs `bench` on a migrated embedded PostgreSQL in a fresh temporary
 * directory, then closes the pool, stops the server and removes the
 * directory, whether `bench` succeeded or not.
 */
export async function withPostgres<T>(bench: (engines: BenchPostgres) => Promise<T>): Promise<T> {
  const dir = makeStateDir('deployer-bench-');
  try {
    const server = await startEmbeddedPostgres(dir);
    const db = createDb({ connectionString: server.url });
    try {
      await migrateUp(db);
      return await bench({ dir, url: server.url, db });
    } finally {
      await db.destroy();
      await server.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** {@link withPostgres}, with a private dockerd and the busybox image too (stopped afterwards). */
export async function withEngines<T>(bench: (engines: BenchPostgres & BenchDocker) => Promise<T>): Promise<T> {
  const engine = await startEngine();
  try {
    return await withPostgres((postgres) => bench({ ...postgres, ...engine }));
  } finally {
    await engine.dockerd.stop();
  }
}

/** Counts every SQL statement any pg client of this process sends, from now on. */
export function countQueries(): { readonly count: number; reset(): void } {
  let count = 0;
  const originalQuery = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    count++;
    return (originalQuery as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof pg.Client.prototype.query;
  return {
    get count() {
      return count;
    },
    reset() {
      count = 0;
    },
  };
}

/** The median of `samples` (the mean of the middle two for an even count). */
export function median(samples: readonly number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** `median … ms (min …, max …, n=…)`, with `digits` decimals. */
export function stats(samples: readonly number[], digits = 1): string {
  const ms = (n: number) => n.toFixed(digits);
  return `median ${ms(median(samples))} ms (min ${ms(Math.min(...samples))}, max ${ms(Math.max(...samples))}, n=${samples.length})`;
}
