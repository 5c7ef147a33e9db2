/**
 * Helpers of the rollout integration suites (issue 3): deployment rows
 * inserted with plain kysely (as a platform would with SQL), the daemon run
 * in-process (or the environment of the built CLI daemon, which
 * `processes.ts` starts), and reads of what the PRIVATE engine of `dockerd.ts`
 * holds. Every wait polls with a deadline and fails with the daemon's recent
 * log lines; nothing sleeps to assert.
 */
import type Docker from 'dockerode';
import type { Kysely } from 'kysely';
import { loadConfig, type ConfigKey } from '../../src/config.js';
import { Daemon } from '../../src/controller/daemon.js';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import { openDatabase, type OpenDatabase } from '../../src/store/open.js';
import type { Database, DeploymentRow, EventRow } from '../../src/store/schema.js';
import { LABELS, type DeploymentStatus } from '../../src/types.js';
import { BUSYBOX_IMAGE } from './busybox-image.js';
import { cleanEnv, waitFor } from './processes.js';

/** The test image, imported offline into the private engine. */
export const IMAGE = BUSYBOX_IMAGE;

// ---------------------------------------------------------------------------
// The private engine
// ---------------------------------------------------------------------------

/** The containers (running or not) labelled with `deploymentId`, by name. */
export async function containersOf(docker: Docker, deploymentId: string): Promise<Docker.ContainerInfo[]> {
  const list = await docker.listContainers({ all: true, filters: { label: [`${LABELS.deploymentId}=${deploymentId}`] } });
  return list.filter((c) => c.Labels[LABELS.deploymentId] === deploymentId).sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
}

/** A listed container's name without the leading slash. */
export function nameOf(c: Docker.ContainerInfo): string {
  return (c.Names[0] ?? c.Id).replace(/^\//, '');
}

/** Names of the running containers of a deployment. */
export async function runningNames(docker: Docker, deploymentId: string): Promise<string[]> {
  return (await containersOf(docker, deploymentId)).filter((c) => c.State === 'running').map(nameOf);
}

export async function volumeExists(docker: Docker, name: string): Promise<boolean> {
  try {
    await docker.getVolume(name).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

/**
 * Removes every container and volume the suites made on the PRIVATE engine:
 * only those carrying a `deployer.` label (deployment id, or shared).
 */
export async function removeManaged(docker: Docker, filter: (labels: Record<string, string>) => boolean = () => true): Promise<void> {
  for (const c of await docker.listContainers({ all: true, filters: { label: [LABELS.deploymentId] } })) {
    if (!c.Labels[LABELS.deploymentId] || !filter(c.Labels)) continue;
    await docker
      .getContainer(c.Id)
      .remove({ force: true, v: true })
      .catch((err: { statusCode?: number }) => {
        if (err.statusCode !== 404 && err.statusCode !== 409) throw err;
      });
  }
  const { Volumes } = await docker.listVolumes();
  for (const v of Volumes ?? []) {
    const labels = v.Labels ?? {};
    if (!(labels[LABELS.deploymentId] || labels[LABELS.shared]) || !filter(labels)) continue;
    await docker
      .getVolume(v.Name)
      .remove()
      .catch((err: { statusCode?: number }) => {
        if (err.statusCode !== 404) throw err;
      });
  }
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/** A deployment spec as a platform writes it (DESIGN.md 3.2): plain JSON. */
export type SpecJson = Record<string, unknown>;

/** Two replicas of `sleep`, healthy at the first probe (Docker health `healthy` after ~1s). */
export function healthySpec(extra: SpecJson = {}): SpecJson {
  return { image: IMAGE, replicas: 2, command: ['sleep', '3600'], healthcheck: { test: ['CMD', 'true'], interval: '1s' }, ...extra };
}

export interface RowSeed {
  id?: string;
  project?: string;
  service?: string;
  revision: number;
  spec: SpecJson;
  status?: DeploymentStatus;
}

/** Inserts a deployment row with plain SQL defaults (`pending`, executor `controller`); returns its id. */
export async function insertDeployment(db: Kysely<Database>, seed: RowSeed): Promise<string> {
  const project = seed.project ?? 'shop';
  const service = seed.service ?? 'web';
  const id = seed.id ?? `${project}.${service}.r${seed.revision}`;
  await db
    .insertInto('deployments')
    .values({
      id,
      project,
      service,
      revision: seed.revision,
      spec: JSON.stringify(seed.spec),
      spec_hash: `test:${id}`,
      ...(seed.status ? { status: seed.status } : {}),
    })
    .execute();
  return id;
}

export async function row(db: Kysely<Database>, id: string): Promise<DeploymentRow> {
  return db.selectFrom('deployments').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
}

/** A deployment's events, oldest first. */
export async function eventsOf(db: Kysely<Database>, id: string): Promise<EventRow[]> {
  return db.selectFrom('deployment_events').selectAll().where('deployment_id', '=', id).orderBy('id').execute();
}

export async function reasonsOf(db: Kysely<Database>, id: string): Promise<string[]> {
  return (await eventsOf(db, id)).map((e) => e.reason);
}

export async function rollbacksOf(db: Kysely<Database>, project = 'shop', service = 'web') {
  return db.selectFrom('rollbacks').selectAll().where('project', '=', project).where('service', '=', service).orderBy('started_at').execute();
}

/** Describes a row for failure messages. */
export async function describeRows(db: Kysely<Database>, ids: readonly string[]): Promise<string> {
  const rows = await db.selectFrom('deployments').select(['id', 'status', 'phase', 'attempts', 'owner', 'status_reason', 'progress']).where('id', 'in', [...ids]).execute();
  return rows.map((r) => JSON.stringify(r)).join('\n');
}

// ---------------------------------------------------------------------------
// The daemon, in-process
// ---------------------------------------------------------------------------

/** An in-process daemon with its own pool and a log kept in memory. */
export interface TestDaemon {
  daemon: Daemon;
  database: OpenDatabase;
  /** Parsed JSON log lines so far. */
  logs: Record<string, unknown>[];
  /** Completed sweeps so far. */
  sweeps(): number;
  /** Waits until `n` more sweeps than now have finished. */
  waitSweeps(n: number): Promise<void>;
  /** The last log lines, for failure messages. */
  tail(lines?: number): string;
  stop(): Promise<void>;
}

/**
 * Starts a daemon in this process on `databaseUrl` and the engine at
 * `dockerHost`: network mode `none`, a short resync and lease, everything else
 * as given in `overrides`.
 */
export async function startDaemon(databaseUrl: string, dockerHost: string, overrides: Partial<Record<ConfigKey, unknown>> = {}): Promise<TestDaemon> {
  const config = loadConfig({
    env: {},
    overrides: {
      databaseUrl,
      dockerHost,
      containerNetwork: 'none',
      resync: '300ms',
      leaseDuration: '2s',
      logLevel: 'info',
      ...overrides,
    },
  });
  const logs: Record<string, unknown>[] = [];
  const logger = createLogger(config.logLevel, {
    write(line: string) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
    },
  });
  const database = await openDatabase(config, { startEmbedded: false });
  const daemon = new Daemon({ config, logger, database, metrics: new Metrics({ processMetrics: false }) });
  await daemon.start();
  const sweeps = () => logs.filter((l) => l.msg === 'sweep finished').length;
  let stopped: Promise<void> | undefined;
  return {
    daemon,
    database,
    logs,
    sweeps,
    async waitSweeps(n: number) {
      const target = sweeps() + n;
      await waitFor(`${n} more sweeps`, () => sweeps() >= target, { timeoutMs: 30_000 });
    },
    tail(lines = 25) {
      return `--- daemon log (last ${lines}) ---\n${logs
        .slice(-lines)
        .map((l) => JSON.stringify(l))
        .join('\n')}`;
    },
    stop() {
      stopped ??= (async () => {
        await daemon.stop();
        await database.close();
      })();
      return stopped;
    },
  };
}

// ---------------------------------------------------------------------------
// The built CLI daemon, in a child process (see `startCli`)
// ---------------------------------------------------------------------------

/** The daemon's environment for a test database and the private engine. */
export function daemonEnv(databaseUrl: string, dockerHost: string, stateDir: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cleanEnv({
    DATABASE_URL: databaseUrl,
    DOCKER_HOST: dockerHost,
    DEPLOYER_CONTAINER_NETWORK: 'none',
    DEPLOYER_STATE_DIR: stateDir,
    DEPLOYER_METRICS_ADDRESS: '127.0.0.1:0',
    DEPLOYER_RESYNC: '500ms',
    DEPLOYER_LEASE_DURATION: '2s',
    DEPLOYER_LOG_LEVEL: 'info',
    ...extra,
  });
}
