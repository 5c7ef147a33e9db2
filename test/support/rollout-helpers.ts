/**
 * Helpers of the rollout integration suites (issue 3): deployment rows
 * inserted with plain kysely (as a platform would with SQL), the daemon run
 * in-process or as the built CLI in a child process, and reads of what the
 * PRIVATE engine of `dockerd.ts` holds. Every wait polls with a deadline and
 * fails with the daemon's recent log lines; nothing sleeps to assert.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import type { Kysely } from 'kysely';
import { loadConfig, type ConfigKey } from '../../src/config.js';
import { Daemon } from '../../src/controller/daemon.js';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import { openDatabase, type OpenDatabase } from '../../src/store/open.js';
import type { Database, DeploymentRow, EventRow } from '../../src/store/schema.js';
import { LABELS, type DeploymentStatus } from '../../src/types.js';
import { busyboxAvailable, importBusyboxImage, BUSYBOX_IMAGE } from './busybox-image.js';
import { dockerdAvailable, startPrivateDockerd, type PrivateDockerd } from './dockerd.js';

const execFileAsync = promisify(execFile);

/** The repository root. */
export const ROOT = new URL('../../', import.meta.url).pathname;

/** The test image, imported offline into the private engine. */
export const IMAGE = BUSYBOX_IMAGE;

/** Why a private dockerd cannot run here, or null. */
export const dockerUnavailable = dockerdAvailable() ?? busyboxAvailable();
export const inCi = !['', '0', 'false'].includes((process.env.CI ?? '').trim().toLowerCase());
/** Skip (loudly) only outside CI: in CI a missing engine is a failure. */
export const skipWithoutDocker = dockerUnavailable !== null && !inCi;

/** Says loudly why `suite` is skipped. */
export function announceSkip(suite: string): void {
  if (skipWithoutDocker) console.warn(`SKIPPING ${suite} (they need a private dockerd): ${dockerUnavailable}`);
}

// ---------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------

/** A private dockerd with the busybox image imported. */
export interface Engine {
  dockerd: PrivateDockerd;
  docker: Docker;
}

export async function startEngine(): Promise<Engine> {
  if (dockerUnavailable !== null) throw new Error(`CI must be able to run a private dockerd: ${dockerUnavailable}`);
  const dockerd = await startPrivateDockerd();
  const docker = new Docker({ socketPath: dockerd.socketPath });
  try {
    await importBusyboxImage(docker);
  } catch (err) {
    await dockerd.stop();
    throw err;
  }
  return { dockerd, docker };
}

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

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `check` until it returns something other than undefined/false, or
 * fails after `timeoutMs` naming `what`, the last error and `context()`.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: { timeoutMs?: number; context?: () => string | Promise<string> } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const context = options.context ? await options.context() : '';
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}${context ? `\n${context}` : ''}`);
    }
    await sleep(100);
  }
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
// The built CLI, in a child process
// ---------------------------------------------------------------------------

/** A build of the CLI of its own (so that suites building at once never read each other's half-written files). */
export interface CliBuild {
  /** Path of `main.js`. */
  cli: string;
  dir: string;
  remove(): void;
}

/**
 * Builds `src` with `tsconfig.build.json` into a private directory holding
 * `dist/`, a copy of `package.json` (the CLI reads its version from it) and a
 * link to the repository's `node_modules`.
 */
export async function buildCli(): Promise<CliBuild> {
  const dir = mkdtempSync(join(tmpdir(), 'deployer-cli-'));
  try {
    await execFileAsync(join(ROOT, 'node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json', '--outDir', join(dir, 'dist')], { cwd: ROOT });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`build failed: ${(err as { stdout?: string }).stdout ?? (err as Error).message}`);
  }
  copyFileSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return { cli: join(dir, 'dist/cli/main.js'), dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * The environment of every CLI run: nothing inherited but PATH and HOME, so
 * neither the runner's DATABASE_URL nor its DOCKER_HOST leaks in.
 */
export function cliEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', LC_ALL: 'C' };
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

/** The daemon's environment for a test database and the private engine. */
export function daemonEnv(databaseUrl: string, dockerHost: string, stateDir: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cliEnv({
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

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Pids of CLI children still running: the suites kill these (and only these) when they end. */
export const childPids = new Set<number>();

/** Runs `node <cli> ...args` to its end (SIGKILL by pid after `timeoutMs`). */
export function runCli(cli: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const pid = child.pid;
    if (pid !== undefined) childPids.add(pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      if (pid !== undefined) process.kill(pid, 'SIGKILL');
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (pid !== undefined) childPids.delete(pid);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A daemon (`run`) in a child process. */
export interface ChildDaemon {
  child: ChildProcess;
  pid: number;
  output(): string;
  /** The last lines of its output, for failure messages. */
  tail(lines?: number): string;
  /** Resolves when it has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it ended. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function spawnDaemon(cli: string, env: NodeJS.ProcessEnv): ChildDaemon {
  const child = spawn(process.execPath, [cli, 'run'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error('daemon did not start');
  const pid = child.pid;
  childPids.add(pid);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      childPids.delete(pid);
      resolve({ code, signal });
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    pid,
    exited,
    output: () => out,
    tail: (lines = 30) => `--- daemon ${pid} output (last ${lines} lines) ---\n${out.trimEnd().split('\n').slice(-lines).join('\n')}`,
    async stop(graceMs = 20_000) {
      if (running()) process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (running()) process.kill(pid, 'SIGKILL');
      }, graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Kills (by pid) the CLI children this process started that are still running. */
export function killChildren(): void {
  for (const pid of childPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  childPids.clear();
}
