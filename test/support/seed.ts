/**
 * Seeding and inspection helpers for the integration suites: deployment rows
 * written with plain kysely inserts (as a platform would with SQL), labelled
 * containers and volumes on the PRIVATE engine of `dockerd.ts`, a pino
 * destination that keeps the parsed JSON lines, metric reads, and a TCP
 * forwarder that gives a restartable Postgres a stable address.
 */
import net from 'node:net';
import type Docker from 'dockerode';
import { sql, type Kysely } from 'kysely';
import type { Metrics } from '../../src/controller/metrics.js';
import type { Database, DeploymentRow, EventRow } from '../../src/store/schema.js';
import { LABELS, type DeploymentStatus, type Phase } from '../../src/types.js';

/** The controller name the suites run as (the config default). */
export const CONTROLLER_NAME = 'deployer-controller';

/** A moment `ms` milliseconds before now. */
export function ago(ms: number): Date {
  return new Date(Date.now() - ms);
}

export const MINUTE = 60_000;
export const HOUR = 60 * MINUTE;

// ---------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------

/** One deployment row to insert; everything but `id` and `status` has a default. */
export interface DeploymentSeed {
  id: string;
  status: DeploymentStatus;
  project?: string;
  /** Defaults to the id, so that revisions never collide. */
  service?: string;
  revision?: number;
  phase?: Phase | null;
  executor?: string;
  owner?: string | null;
  attempts?: number;
  heartbeatAt?: Date | null;
  startedAt?: Date | null;
  finishedAt?: Date | null;
  createdAt?: Date;
  updatedAt?: Date;
  statusReason?: string | null;
  output?: string;
  spec?: Record<string, unknown>;
}

/** Inserts deployment rows exactly as given (version starts at 1) and returns them as stored. */
export async function insertDeployments(db: Kysely<Database>, seeds: readonly DeploymentSeed[]): Promise<DeploymentRow[]> {
  if (seeds.length === 0) return [];
  const now = new Date();
  return db
    .insertInto('deployments')
    .values(
      seeds.map((s) => {
        const spec = s.spec ?? { image: 'deployer-test/busybox:latest', replicas: 1, command: ['sleep', '3600'] };
        const createdAt = s.createdAt ?? now;
        return {
          id: s.id,
          project: s.project ?? 'shop',
          service: s.service ?? s.id,
          revision: s.revision ?? 1,
          spec: JSON.stringify(spec),
          spec_hash: `sha256:${s.id}`,
          status: s.status,
          phase: s.phase ?? null,
          executor: s.executor ?? 'controller',
          owner: s.owner ?? null,
          attempts: s.attempts ?? 0,
          heartbeat_at: s.heartbeatAt ?? null,
          started_at: s.startedAt ?? null,
          finished_at: s.finishedAt ?? null,
          status_reason: s.statusReason ?? null,
          output: s.output ?? '',
          created_at: createdAt,
          updated_at: s.updatedAt ?? createdAt,
        };
      }),
    )
    .returningAll()
    .execute();
}

/** Every deployment row, by id. */
export async function deploymentsById(db: Kysely<Database>): Promise<Map<string, DeploymentRow>> {
  const rows = await db.selectFrom('deployments').selectAll().orderBy('id').execute();
  return new Map(rows.map((r) => [r.id, r]));
}

/** Every `deployment_events` row, oldest first. */
export async function allEvents(db: Kysely<Database>): Promise<EventRow[]> {
  return db.selectFrom('deployment_events').selectAll().orderBy('id').execute();
}

/** Empties every table the controller writes (the schema stays). */
export async function clearTables(db: Kysely<Database>): Promise<void> {
  await sql`TRUNCATE deployments, deployment_events, rollbacks, leases RESTART IDENTITY`.execute(db);
}

// ---------------------------------------------------------------------------
// Docker (the private engine only)
// ---------------------------------------------------------------------------

/** A container to create and start on the private engine. */
export interface ContainerSeed {
  name: string;
  /**
   * The `deployer.deployment_id` label. Omitted: the container gets no
   * `deployer.*` label at all (an unlabelled bystander).
   */
  deploymentId?: string;
  /** `deployer.managed-by`; `null` leaves it out (a legacy container). Default: {@link CONTROLLER_NAME}. */
  managedBy?: string | null;
  project?: string;
  service?: string;
  revision?: number;
  replica?: number;
  /** More labels, added last. */
  labels?: Record<string, string>;
  /** `volume:/path` mounts. */
  binds?: string[];
}

/** The labels the controller puts on a container of `deploymentId` (DESIGN.md 3.1). */
export function deploymentLabels(seed: Omit<ContainerSeed, 'name'>): Record<string, string> {
  if (seed.deploymentId === undefined) return { ...seed.labels };
  const labels: Record<string, string> = {
    [LABELS.deploymentId]: seed.deploymentId,
    [LABELS.project]: seed.project ?? 'shop',
    [LABELS.service]: seed.service ?? seed.deploymentId,
    [LABELS.revision]: String(seed.revision ?? 1),
    [LABELS.replica]: String(seed.replica ?? 0),
  };
  const managedBy = seed.managedBy === undefined ? CONTROLLER_NAME : seed.managedBy;
  if (managedBy !== null) labels[LABELS.managedBy] = managedBy;
  return { ...labels, ...seed.labels };
}

/**
 * Creates and starts `sleep 3600` from the busybox test image, without
 * network. Returns the container id.
 */
export async function createContainer(docker: Docker, image: string, seed: ContainerSeed): Promise<string> {
  const container = await docker.createContainer({
    name: seed.name,
    Image: image,
    Cmd: ['sleep', '3600'],
    Labels: deploymentLabels(seed),
    HostConfig: { NetworkMode: 'none', ...(seed.binds ? { Binds: seed.binds } : {}) },
  });
  await container.start();
  return container.id;
}

/** A named volume to create on the private engine. */
export interface VolumeSeed {
  name: string;
  deploymentId: string;
  /** Adds `deployer.shared=true`: never removed by cleanup. */
  shared?: boolean;
  managedBy?: string | null;
}

export async function createVolume(docker: Docker, seed: VolumeSeed): Promise<string> {
  const labels: Record<string, string> = { [LABELS.deploymentId]: seed.deploymentId, [LABELS.project]: 'shop' };
  const managedBy = seed.managedBy === undefined ? CONTROLLER_NAME : seed.managedBy;
  if (managedBy !== null) labels[LABELS.managedBy] = managedBy;
  if (seed.shared) labels[LABELS.shared] = 'true';
  const volume = await docker.createVolume({ Name: seed.name, Labels: labels });
  return volume.name;
}

/** Names of every container on the engine, labelled or not, running or not, sorted. */
export async function containerNames(docker: Docker): Promise<string[]> {
  const list = await docker.listContainers({ all: true });
  return list.map((c) => (c.Names[0] ?? c.Id).replace(/^\//, '')).sort();
}

/** Names of every volume on the engine, sorted. */
export async function volumeNames(docker: Docker): Promise<string[]> {
  const answer = await docker.listVolumes();
  return (answer.Volumes ?? []).map((v) => v.Name).sort();
}

/**
 * Removes every container and volume of the engine. Only ever call it with a
 * client of the private engine the suite started: everything on it is ours.
 */
export async function wipeEngine(docker: Docker): Promise<void> {
  const containers = await docker.listContainers({ all: true });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true })));
  const volumes = (await docker.listVolumes()).Volumes ?? [];
  await Promise.all(volumes.map((v) => docker.getVolume(v.Name).remove()));
}

// ---------------------------------------------------------------------------
// Logs and metrics
// ---------------------------------------------------------------------------

/** One parsed pino line. */
export interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** A pino destination that keeps every line, parsed (each must be one JSON object). */
export class LogCapture {
  readonly lines: LogLine[] = [];

  write(chunk: string): void {
    for (const line of chunk.split('\n')) {
      if (line.trim() !== '') this.lines.push(JSON.parse(line) as LogLine);
    }
  }

  /** Lines whose message is exactly `msg`. */
  withMsg(msg: string): LogLine[] {
    return this.lines.filter((l) => l.msg === msg);
  }

  atLevel(level: string): LogLine[] {
    return this.lines.filter((l) => l.level === level);
  }
}

/** The value of metric `name` with exactly these labels (undefined when never set). */
export async function metricValue(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const wanted = Object.entries(labels);
  const found = values.find((v) => {
    const have = Object.entries(v.labels).filter(([, value]) => value !== undefined);
    return have.length === wanted.length && wanted.every(([k, value]) => v.labels[k] === value);
  });
  return found?.value;
}

// ---------------------------------------------------------------------------
// A stable address for a restartable Postgres
// ---------------------------------------------------------------------------

/**
 * Forwards TCP connections from a fixed local port to a target port that can
 * change. The embedded Postgres picks a fresh port each time it starts; a
 * production database comes back on the same address, which is what this
 * gives the pool under test. While the target is down, connections are
 * accepted and closed at once (the client sees a dropped connection).
 */
export class TcpForwarder {
  private readonly server = net.createServer((client) => this.forward(client));
  private readonly open = new Set<net.Socket>();
  private target: number | undefined;
  private cutAfter: string | undefined;

  /** Listens on 127.0.0.1 and returns the port. */
  async listen(target: number): Promise<number> {
    this.target = target;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const address = this.server.address();
    if (typeof address !== 'object' || !address) throw new Error('forwarder has no address');
    return address.port;
  }

  /**
   * Drops the connection that next receives a server reply containing
   * `marker` (e.g. a command tag such as `UPDATE 1`), right after passing that
   * reply on: the client sees its statement succeed and then loses the line.
   */
  cutAfterReply(marker: string): void {
    this.cutAfter = marker;
  }

  /** Sends new connections to `port` from now on. */
  retarget(port: number): void {
    this.target = port;
  }

  async close(): Promise<void> {
    for (const socket of this.open) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private forward(client: net.Socket): void {
    const upstream = net.connect(this.target ?? 1, '127.0.0.1');
    this.open.add(client);
    this.open.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.open.delete(client);
      this.open.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (this.cutAfter !== undefined && chunk.includes(this.cutAfter)) {
        this.cutAfter = undefined;
        client.end(chunk, () => end());
        return;
      }
      client.write(chunk);
    });
  }
}

/** The port of a `postgres://...` URL. */
export function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** `url` with its host and port replaced by 127.0.0.1:`port`. */
export function withPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}
