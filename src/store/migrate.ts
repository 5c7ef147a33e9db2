import { Migrator, type Kysely, type MigrationInfo, type MigrationResult } from 'kysely';
import { initial } from './migrations/0001-initial.js';
import type { Database } from './schema.js';

/** Migrations shipped in the package, in order. Names never change once released. */
const MIGRATIONS = { '0001-initial': initial } as const;

/** Channel of the NOTIFY sent on every insert or update of `deployments`. */
export const NOTIFY_CHANNEL = 'deployer_deployments';

function migrator(db: Kysely<Database>): Migrator {
  return new Migrator({
    db,
    provider: { getMigrations: () => Promise.resolve(MIGRATIONS) },
    migrationTableName: 'deployer_migrations',
    migrationLockTableName: 'deployer_migrations_lock',
  });
}

/** Thrown when a migration fails; names it. */
export class MigrationError extends Error {}

function check(results: readonly MigrationResult[] | undefined, error: unknown): MigrationResult[] {
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    const cause = error instanceof Error ? error.message : String(error);
    throw new MigrationError(failed ? `migration ${failed.migrationName} failed: ${cause}` : `migration failed: ${cause}`, { cause: error });
  }
  return [...(results ?? [])];
}

/** Applies every pending migration (under kysely's migration lock, safe for concurrent starts). */
export async function migrateUp(db: Kysely<Database>): Promise<MigrationResult[]> {
  const { results, error } = await migrator(db).migrateToLatest();
  return check(results, error);
}

/** Reverts the newest applied migration. */
export async function migrateDown(db: Kysely<Database>): Promise<MigrationResult[]> {
  const { results, error } = await migrator(db).migrateDown();
  return check(results, error);
}

/** Every known migration with the time it was applied, if it was. */
export async function migrationStatus(db: Kysely<Database>): Promise<readonly MigrationInfo[]> {
  return migrator(db).getMigrations();
}
