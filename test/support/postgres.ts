import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import pg from 'pg';
import { inject } from 'vitest';
import { createDb } from '../../src/store/db.js';
import { migrateUp } from '../../src/store/migrate.js';
import type { Database } from '../../src/store/schema.js';
import { PgStore } from '../../src/store/store.js';

/** A fresh, migrated database of its own for one test file (or one test). */
export interface TestDatabase {
  name: string;
  url: string;
  db: Kysely<Database>;
  store: PgStore;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: inject('pgAdminUrl') });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates and migrates a database named after `label`, on the run's Postgres. */
export async function createTestDatabase(label = 'test', options: { migrate?: boolean } = {}): Promise<TestDatabase> {
  const name = `t_${label.replace(/[^a-z0-9]/gi, '_').toLowerCase().slice(0, 30)}_${randomBytes(4).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = withDatabase(inject('pgAdminUrl'), name);
  const db = createDb({ connectionString: url });
  if (options.migrate ?? true) await migrateUp(db);
  return {
    name,
    url,
    db,
    store: new PgStore(db),
    drop: async () => {
      await db.destroy();
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}
