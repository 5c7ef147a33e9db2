/**
 * Webhooks as an operator gets them: the built daemon with `notifications`
 * in its config file, a real receiver on 127.0.0.1 that checks signatures,
 * real Postgres and a private dockerd. Each transition of DESIGN.md 3.8
 * arrives once, signed.
 */
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySignature } from '../../src/controller/notifications.js';
import type { PrivateDockerd } from '../support/dockerd.js';
import { startEngine } from '../support/engine.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { cleanEnv, dockerSkip, freePort, requireDocker, startCli, waitFor, type BackgroundProcess } from '../support/processes.js';

const skip = dockerSkip('daemon webhook tests');

const SECRET = 'test-secret';

interface Received {
  event: string;
  body: { event: string; deployment: { id: string; status: string; status_reason: string | null } | null; message: string };
  valid: boolean;
}

describe.skipIf(skip !== null)('webhooks from the running daemon', () => {
  let dockerd: PrivateDockerd | undefined;
  let docker: Docker;
  let image: string;
  let t: TestDatabase;
  let dir: string;
  let receiver: Server;
  let daemon: BackgroundProcess | undefined;
  const received: Received[] = [];

  beforeAll(async () => {
    requireDocker();
    ({ dockerd, docker, image } = await startEngine());
    t = await createTestDatabase('notify');
    dir = mkdtempSync(join(tmpdir(), 'deployer-notify-'));
    receiver = createServer((req, res) => {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString()));
      req.on('end', () => {
        const valid = verifySignature(String(req.headers['deployer-signature']), raw, SECRET, Math.floor(Date.now() / 1000));
        received.push({ event: String(req.headers['deployer-event']), body: JSON.parse(raw) as Received['body'], valid });
        res.writeHead(valid ? 204 : 401).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as { port: number }).port;
    const config = join(dir, 'config.yaml');
    writeFileSync(
      config,
      [
        'resync: 1s',
        'containerNetwork: none',
        'heartbeatTimeout: 2s',
        'orphanGrace: 1s',
        'notifications:',
        '  webhooks:',
        `    - url: http://127.0.0.1:${port}/deployer`,
        `      secret: ${SECRET}`,
        '',
      ].join('\n'),
    );
    daemon = startCli(
      ['run', '--config', config],
      cleanEnv({ DATABASE_URL: t.url, DOCKER_HOST: dockerd.dockerHost, DEPLOYER_METRICS_ADDRESS: `127.0.0.1:${await freePort()}` }),
    );
  });

  afterAll(async () => {
    await daemon?.stop();
    receiver?.close();
    await dockerd?.stop();
    await t?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const spec = (extra: Record<string, unknown> = {}) => JSON.stringify({ image, replicas: 1, command: ['sleep', '3600'], ...extra });
  const insert = (id: string, revision: number, specJson: string, extra: Record<string, unknown> = {}) =>
    t.db.insertInto('deployments').values({ id, project: 'shop', service: 'web', revision, spec: specJson, spec_hash: id, ...extra }).execute();
  const eventsFor = (event: string, id?: string) => received.filter((r) => r.event === event && (id === undefined || r.body.deployment?.id === id));

  it('announces active, failed with rolled_back, cancelled, zombie, orphans_removed and guard_tripped, each signed', async () => {
    await insert('shop.web.r1', 1, spec());
    await waitFor('active webhook', () => eventsFor('active', 'shop.web.r1').length === 1, 60_000);
    expect(eventsFor('active', 'shop.web.r1')[0]!.body.deployment!.status).toBe('active');

    // A revision whose healthcheck fails: failed, and rolled back to r1.
    await insert('shop.web.r2', 2, spec({ healthcheck: { test: ['CMD', 'false'], interval: '1s', retries: 1 } }));
    await waitFor('failed webhook', () => eventsFor('failed', 'shop.web.r2').length === 1, 60_000);
    await waitFor('rolled_back webhook', () => eventsFor('rolled_back', 'shop.web.r2').length === 1);
    expect(eventsFor('failed', 'shop.web.r2')[0]!.body.deployment!.status_reason).toContain('unhealthy');
    expect(eventsFor('rolled_back', 'shop.web.r2')[0]!.body.message).toContain('revision 1');
    // Its container goes once the rollback settled: orphans_removed.
    await waitFor('orphans_removed webhook', () => eventsFor('orphans_removed').length >= 1, 60_000);

    // A cancel made elsewhere (plain SQL, as a platform would): cancelled.
    await insert('shop.web.r3', 3, spec({ rollout: { minReadySeconds: 600, progressDeadline: '30m' } }));
    await waitFor('r3 deploying', async () => (await t.db.selectFrom('deployments').select('status').where('id', '=', 'shop.web.r3').executeTakeFirst())?.status === 'deploying');
    await t.db.updateTable('deployments').set({ status: 'cancelled', status_reason: 'cancelled by the platform' }).where('id', '=', 'shop.web.r3').execute();
    await waitFor('cancelled webhook', () => eventsFor('cancelled', 'shop.web.r3').length === 1);

    // An outside worker's rollout that stopped heart-beating: zombie.
    await insert('other.r1', 1, spec(), {
      service: 'worker',
      status: 'deploying',
      executor: 'platform-worker',
      heartbeat_at: sql<Date>`now() - interval '1 hour'`,
      started_at: sql<Date>`now() - interval '1 hour'`,
    });
    await waitFor('zombie webhook', () => eventsFor('zombie', 'other.r1').length === 1);
    expect(eventsFor('zombie', 'other.r1')[0]!.body.deployment!.status).toBe('failed');

    expect(received.length).toBeGreaterThanOrEqual(6);
    expect(received.every((r) => r.valid)).toBe(true);
    expect(received.every((r) => r.body.event === r.event)).toBe(true);
    // One delivery per transition.
    expect(eventsFor('active', 'shop.web.r1')).toHaveLength(1);
    expect(eventsFor('failed', 'shop.web.r2')).toHaveLength(1);

    // The table emptied under running containers: the guard refuses, and says so.
    await t.db.deleteFrom('deployments').execute();
    await waitFor('guard_tripped webhook', () => eventsFor('guard_tripped').length >= 1);
    expect(eventsFor('guard_tripped')[0]!.body.deployment).toBeNull();
    expect(eventsFor('guard_tripped')[0]!.body.message).toContain('desired state is empty');
    expect((await docker.listContainers({ filters: { label: ['deployer.deployment_id=shop.web.r1'] } })).length).toBe(1);
  });
});
