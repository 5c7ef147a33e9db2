import { sql, type Kysely } from 'kysely';
import type { Database } from './schema.js';

/** A lease this holder has, valid until `expiresAt` (by the database's clock). */
export interface HeldLease {
  epoch: number;
  /** Local deadline derived from the database's answer; renew well before it. */
  expiresAt: Date;
}

/**
 * Takes or renews the lease `name` for `holder` for `ttlMs`. The epoch grows
 * on every takeover (a new holder, or a lapsed lease), never on a renewal of a
 * live one. Expiry is judged by the database's `now()`. Returns undefined when
 * somebody else holds a live lease.
 */
export async function acquireLease(db: Kysely<Database>, name: string, holder: string, ttlMs: number): Promise<HeldLease | undefined> {
  const started = Date.now();
  const ttl = `${Math.max(1, Math.round(ttlMs))} milliseconds`;
  const result = await sql<{ epoch: number; remaining_ms: number }>`
    INSERT INTO leases AS l (name, holder, epoch, renewed_at, expires_at)
    VALUES (${name}, ${holder}, 1, now(), now() + ${ttl}::interval)
    ON CONFLICT (name) DO UPDATE SET
      holder = EXCLUDED.holder,
      epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now() THEN l.epoch ELSE l.epoch + 1 END,
      renewed_at = now(),
      expires_at = EXCLUDED.expires_at
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
    RETURNING epoch, (extract(epoch FROM (expires_at - now())) * 1000)::float8 AS remaining_ms`.execute(db);
  const row = result.rows[0];
  if (!row) return undefined;
  // Count the remaining time from before the round trip: the local deadline is never later than the database's.
  return { epoch: Number(row.epoch), expiresAt: new Date(started + Number(row.remaining_ms)) };
}

/** Gives the lease up at once (on a clean stop) so another instance need not wait for expiry. */
export async function releaseLease(db: Kysely<Database>, name: string, holder: string): Promise<void> {
  await db.updateTable('leases').set({ expires_at: sql<Date>`now()` }).where('name', '=', name).where('holder', '=', holder).execute();
}

/** The current lease row, for status output. */
export async function readLease(db: Kysely<Database>, name: string) {
  return db.selectFrom('leases').selectAll().where('name', '=', name).executeTakeFirst();
}
