/**
 * The daemon's HTTP endpoints under trouble, on real engines: Postgres really
 * stopped and started again, and a Docker engine that accepts connections
 * but never answers (a hung engine). `/livez` never depends on either;
 * `/readyz` and `/healthz` say what is wrong; everything answers fast.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type ConfigKey } from '../../src/config.js';
import { Daemon, prepareDatabase } from '../../src/controller/daemon.js';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import { createDb } from '../../src/store/db.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/store/embedded.js';
import type { OpenDatabase } from '../../src/store/open.js';
import { PgStore } from '../../src/store/store.js';
import { startPrivateDockerd, type PrivateDockerd } from '../support/dockerd.js';
import { dockerSkip, freePort, requireDocker, waitFor } from '../support/processes.js';
import { makeStateDir } from '../support/state-dir.js';

const skip = dockerSkip('health endpoint tests');

interface Health {
  status: string;
  checks: { database: { status: string; latency_ms: number | null }; docker: { status: string }; leader: { status: string }; last_sweep: { age_seconds: number | null } };
}

async function get(port: number, path: string): Promise<{ status: number; body: string; ms: number }> {
  const started = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.text(), ms: performance.now() - started };
}

/** An empty config file, so that no /etc config is read. */
function emptyConfig(dir: string): string {
  const file = join(dir, 'config.yaml');
  writeFileSync(file, '');
  return file;
}

function openDb(url: string): OpenDatabase {
  const db = createDb({ connectionString: url, connectionTimeoutMs: 1_000 });
  return { db, store: new PgStore(db), description: 'test', url, close: () => db.destroy() };
}

/** A daemon serving HTTP, on an embedded Postgres of its own that a test may stop and start again. */
interface Served {
  pgDir: string;
  pg: EmbeddedPostgres;
  database: OpenDatabase;
  daemon: Daemon;
  port: number;
}

/**
 * Starts an embedded Postgres in a fresh directory (named after `prefix`),
 * migrates it, and makes a daemon on it, not started yet, with HTTP on a free
 * port, a 500ms resync and `overrides`. Stops what it started when a step fails.
 */
async function newDaemon(prefix: string, overrides: Partial<Record<ConfigKey, unknown>>): Promise<Served> {
  const pgDir = makeStateDir(prefix);
  let pg: EmbeddedPostgres | undefined;
  let database: OpenDatabase | undefined;
  try {
    pg = await startEmbeddedPostgres(pgDir);
    database = openDb(pg.url);
    await prepareDatabase(database, createLogger('silent'), undefined, false);
    const port = await freePort();
    const config = loadConfig({ env: {}, file: emptyConfig(pgDir), overrides: { metricsAddress: `127.0.0.1:${port}`, resync: '500ms', ...overrides } });
    const daemon = new Daemon({ config, logger: createLogger('silent'), database, metrics: new Metrics({ processMetrics: false }), http: true });
    return { pgDir, pg, database, daemon, port };
  } catch (err) {
    await database?.close();
    await pg?.stop();
    rmSync(pgDir, { recursive: true, force: true });
    throw err;
  }
}

describe.skipIf(skip !== null)('health endpoints (real Postgres stopped and restarted, private dockerd)', () => {
  let dockerd: PrivateDockerd | undefined;
  let pgDir: string;
  let pg: EmbeddedPostgres | undefined;
  let database: OpenDatabase;
  let daemon: Daemon | undefined;
  let port: number;

  beforeAll(async () => {
    requireDocker();
    dockerd = await startPrivateDockerd();
    ({ pgDir, pg, database, daemon, port } = await newDaemon('deployer-health-', { dockerHost: dockerd.dockerHost, leaseDuration: '3s' }));
    await daemon.start();
    await daemon.firstSweepDone();
  });

  afterAll(async () => {
    await daemon?.stop();
    await database?.close();
    await pg?.stop();
    await dockerd?.stop();
    if (pgDir) rmSync(pgDir, { recursive: true, force: true });
  });

  it('turns /readyz 503 while Postgres is down and 200 when it is back, /livez 200 throughout', async () => {
    const ready = await get(port, '/readyz');
    expect(ready.status).toBe(200);
    const healthy = JSON.parse(ready.body) as Health;
    expect(healthy.status).toBe('healthy');
    expect(healthy.checks.database.status).toBe('healthy');
    expect(healthy.checks.docker.status).toBe('healthy');
    expect(healthy.checks.leader.status).toBe('leader');
    expect(healthy.checks.last_sweep.age_seconds).not.toBeNull();

    await pg!.stop();
    const down = await waitFor('/readyz 503', async () => {
      const r = await get(port, '/readyz');
      return r.status === 503 ? r : undefined;
    });
    const report = JSON.parse(down.body) as Health;
    expect(report.status).toBe('unhealthy');
    expect(report.checks.database.status).toBe('unhealthy');
    expect(report.checks.docker.status).toBe('healthy');
    expect((await get(port, '/healthz')).status).toBe(503);
    expect((await get(port, '/livez')).status).toBe(200);
    expect((await get(port, '/metrics')).status).toBe(200);

    pg = await startEmbeddedPostgres(pgDir);
    expect(pg.url).toBe(database.url);
    await waitFor('/readyz 200 again', async () => (await get(port, '/readyz')).status === 200, 30_000);
    expect((await get(port, '/livez')).status).toBe(200);
    // The loop itself recovered: a sweep completed after the outage.
    const after = JSON.parse((await get(port, '/healthz')).body) as Health;
    await waitFor('a fresh sweep', async () => (JSON.parse((await get(port, '/healthz')).body) as Health).checks.last_sweep.age_seconds! < 2, 30_000);
    expect(after.checks.database.status).toBe('healthy');
  });
});

describe('health endpoints with a hung Docker engine', () => {
  let hung: Server;
  const sockets = new Set<Socket>();
  let pgDir: string;
  let pg: EmbeddedPostgres | undefined;
  let database: OpenDatabase;
  let daemon: Daemon | undefined;
  let port: number;

  beforeAll(async () => {
    // An "engine" that accepts connections and never answers.
    hung = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
    const hungPort = (hung.address() as { port: number }).port;
    ({ pgDir, pg, database, daemon, port } = await newDaemon('deployer-hung-', { dockerHost: `tcp://127.0.0.1:${hungPort}`, runtimeTimeout: '60s' }));
    await daemon.start();
  });

  afterAll(async () => {
    const stopping = daemon?.stop();
    for (const s of sockets) s.destroy();
    await stopping;
    hung?.close();
    await database?.close();
    await pg?.stop();
    if (pgDir) rmSync(pgDir, { recursive: true, force: true });
  });

  it('answers /livez and /metrics at once and reports docker unhealthy while a sweep hangs on the engine', async () => {
    // The first sweep is stuck in its container list.
    await waitFor('a sweep in flight', () => daemon!.controller.busySince !== null);
    const live = await get(port, '/livez');
    expect(live.status).toBe(200);
    const metrics = await get(port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('deployer_last_sweep_timestamp_seconds 0');
    const health = await get(port, '/healthz');
    expect(health.status).toBe(503);
    const report = JSON.parse(health.body) as Health;
    expect(report.checks.docker.status).toBe('unhealthy');
    expect(report.checks.database.status).toBe('healthy');
    // The engine check has its own deadline: the answer does not wait for the hung sweep.
    expect(daemon!.controller.busySince).not.toBeNull();
  });

  it('closes the HTTP server on stop', async () => {
    const stopping = daemon!.stop();
    for (const s of sockets) s.destroy();
    await stopping;
    await expect(get(port, '/livez')).rejects.toThrow();
    daemon = undefined;
  });
});
