import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';

const INT8_OID = 20;

/** Options for {@link createDb}. */
export interface DbOptions {
  connectionString: string;
  /** Pool size: concurrent reconciles, probes and health checks (default 10). */
  max?: number;
  /** Per-statement timeout, so a hung database cannot stall a sweep for ever. */
  statementTimeoutMs?: number;
  connectionTimeoutMs?: number;
}

/**
 * A kysely instance over a `pg` pool. `bigint` columns (version, epoch, event
 * ids) come back as numbers: they stay far below 2^53.
 */
export function createDb(options: DbOptions): Kysely<Database> {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    statement_timeout: options.statementTimeoutMs ?? 30_000,
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client losing its connection (database restart) must not crash the daemon.
  pool.on('error', () => undefined);
  // Nor may one checked out (a restart's "terminating connection"): its query fails, and the pool drops it on release.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}
