import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/controller/logger.js';
import { Maintenance } from '../../src/controller/maintenance.js';
import { Metrics } from '../../src/controller/metrics.js';
import { acquireLease } from '../../src/store/leases.js';
import type { Fence } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const DAY = 86_400_000;

describe('maintenance (real Postgres)', () => {
  let t: TestDatabase;

  beforeAll(async () => {
    t = await createTestDatabase('maintenance');
  });
  afterAll(async () => {
    await t?.drop();
  });

  async function seedEvents(): Promise<void> {
    await t.db.deleteFrom('deployment_events').execute();
    const base = { type: 'Normal' as const, reason: 'OrphanRemoved', message: 'm', actor: 'test' };
    await t.db
      .insertInto('deployment_events')
      .values([
        { ...base, deployment_id: 'old-1', at: sql<Date>`now() - interval '40 days'` as unknown as Date },
        { ...base, deployment_id: 'old-2', at: sql<Date>`now() - interval '31 days'` as unknown as Date },
        { ...base, deployment_id: 'recent', at: sql<Date>`now() - interval '29 days'` as unknown as Date },
        { ...base, deployment_id: 'new' },
      ])
      .execute();
  }

  async function remaining(): Promise<string[]> {
    const rows = await t.db.selectFrom('deployment_events').select('deployment_id').orderBy('deployment_id').execute();
    return rows.map((r) => r.deployment_id);
  }

  async function leaderFence(holder: string): Promise<Fence> {
    const lease = await acquireLease(t.db, 'maintenance-test', holder, 60_000);
    expect(lease).toBeDefined();
    return { lease: 'maintenance-test', holder, epoch: lease!.epoch };
  }

  it('prunes events older than eventRetention and keeps the rest', async () => {
    await seedEvents();
    const fence = await leaderFence('me');
    const metrics = new Metrics({ processMetrics: false });
    const m = new Maintenance({ db: t.db, schedule: '*/30 * * * *', eventRetentionMs: 30 * DAY, logger: createLogger('silent'), metrics, fence: () => fence });
    expect(await m.runOnce()).toBe(2);
    expect(await remaining()).toEqual(['new', 'recent']);
    const counted = await metrics.registry.getSingleMetric('deployer_actions_total')!.get();
    expect(counted.values.find((v) => v.labels.action === 'prune_events' && v.labels.result === 'applied')?.value).toBe(2);
  });

  it('does nothing without leadership, or with a fence that no longer holds', async () => {
    await seedEvents();
    const notLeader = new Maintenance({ db: t.db, schedule: '*/30 * * * *', eventRetentionMs: 30 * DAY, logger: createLogger('silent'), metrics: new Metrics({ processMetrics: false }), fence: () => undefined });
    expect(await notLeader.runOnce()).toBe(0);
    const stale = await leaderFence('me');
    await t.db.updateTable('leases').set({ holder: 'someone-else', epoch: stale.epoch + 1 }).where('name', '=', 'maintenance-test').execute();
    const deposed = new Maintenance({ db: t.db, schedule: '*/30 * * * *', eventRetentionMs: 30 * DAY, logger: createLogger('silent'), metrics: new Metrics({ processMetrics: false }), fence: () => stale });
    expect(await deposed.runOnce()).toBe(0);
    expect(await remaining()).toEqual(['new', 'old-1', 'old-2', 'recent']);
    await t.db.deleteFrom('leases').execute();
  });

  it('runs on its cron schedule and stops cleanly', async () => {
    await seedEvents();
    const fence = await leaderFence('cron');
    const m = new Maintenance({ db: t.db, schedule: '* * * * * *', eventRetentionMs: 30 * DAY, logger: createLogger('silent'), metrics: new Metrics({ processMetrics: false }), fence: () => fence });
    await m.start();
    await m.start();
    const deadline = Date.now() + 10_000;
    while ((await remaining()).length !== 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await m.stop();
    await m.stop();
    expect(await remaining()).toEqual(['new', 'recent']);
  });
});
