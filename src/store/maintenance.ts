import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.js';
import { fenceHolds, type Fence } from './store.js';

/**
 * Deletes `deployment_events` older than `retentionMs` (by the database's
 * clock), only while `fence` holds. Returns how many rows went.
 */
export async function pruneEvents(db: Kysely<Database>, retentionMs: number, fence?: Fence): Promise<number> {
  let query = db.deleteFrom('deployment_events').where('at', '<', sql<Date>`now() - ${`${Math.round(retentionMs)} milliseconds`}::interval`);
  if (fence) query = query.where(fenceHolds(fence));
  const result = await query.executeTakeFirst();
  return Number(result.numDeletedRows);
}
