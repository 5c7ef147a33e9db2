import type { Kysely } from 'kysely';
import type { Config } from '../config.js';
import { createDb } from './db.js';
import { findEmbeddedPostgres, startEmbeddedPostgres, type EmbeddedPostgres } from './embedded.js';
import type { Database } from './schema.js';
import { PgStore } from './store.js';

/** An open database: the kysely handle, the store over it, and how to close both. */
export interface OpenDatabase {
  db: Kysely<Database>;
  store: PgStore;
  /** Where it is, without the password. */
  description: string;
  /** The connection string (for the LISTEN connection). */
  url: string;
  /** The embedded server, when this process started it. */
  embedded?: EmbeddedPostgres;
  close(): Promise<void>;
}

/**
 * Opens `databaseUrl`, or without one the embedded Postgres in `stateDir`:
 * started when `startEmbedded` (the daemon), found running otherwise (the
 * other commands).
 */
export async function openDatabase(config: Config, options: { startEmbedded: boolean; log?: (msg: string) => void }): Promise<OpenDatabase> {
  let url = config.databaseUrl;
  let embedded: EmbeddedPostgres | undefined;
  if (!url) {
    if (options.startEmbedded) {
      embedded = await startEmbeddedPostgres(config.stateDir, options.log);
      url = embedded.url;
    } else {
      url = await findEmbeddedPostgres(config.stateDir);
    }
  }
  const db = createDb({ connectionString: url });
  const description = embedded || !config.databaseUrl ? `embedded PostgreSQL in ${config.stateDir}` : redact(url);
  return {
    db,
    store: new PgStore(db),
    description,
    url,
    ...(embedded ? { embedded } : {}),
    close: async () => {
      await db.destroy();
      await embedded?.stop();
    },
  };
}

function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return 'DATABASE_URL';
  }
}
