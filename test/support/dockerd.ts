/**
 * Test harness that runs a PRIVATE Docker engine (DESIGN.md section 5).
 *
 * The engine is the Debian `docker.io` dockerd, started with its own
 * containerd, data root, exec root, pid file, config file, trust key and unix
 * socket, all inside one temporary directory. It never touches the machine's
 * own engine: the socket is private, no bridge or iptables rules are created,
 * host sysctls are left alone, and only the processes this module spawned are
 * ever signalled, by their pid.
 *
 * Why a private containerd too: dockerd 20.10 silently attaches to
 * `/run/containerd/containerd.sock` when that socket exists (it does on most CI
 * runners and on any host running docker), so we start our own containerd and
 * pass its socket with `--containerd`.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Absolute path of the dockerd binary shipped by Debian's `docker.io`. */
export const DOCKERD_PATH = '/usr/sbin/dockerd';
/** Absolute path of the containerd binary (Debian package `containerd`, a dependency of `docker.io`). */
export const CONTAINERD_PATH = '/usr/bin/containerd';

/** PATH given to the daemons, so they find runc, docker-init and the shims from the system packages. */
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Unix socket paths must fit in `sockaddr_un.sun_path` (108 bytes including the NUL). */
const MAX_SOCKET_PATH = 107;
const START_TIMEOUT_MS = 30_000;
const DOCKERD_STOP_TIMEOUT_MS = 20_000;
const CONTAINERD_STOP_TIMEOUT_MS = 10_000;
const KILL_WAIT_MS = 5_000;

/** Options of {@link startPrivateDockerd}. */
export interface StartPrivateDockerdOptions {
  /**
   * Parent directory in which the private temporary directory (`dcd-XXXXXX`)
   * is created. Default `/tmp`, kept short because unix socket paths are
   * limited to 107 characters.
   */
  baseDir?: string;
  /**
   * Storage driver to force (`--storage-driver`). By default dockerd picks one
   * (overlay2 when the backing filesystem supports it) and, if it fails to
   * start for a storage-related reason, the harness retries once with `vfs`.
   */
  storageDriver?: string;
}

/** A running private Docker engine. */
export interface PrivateDockerd {
  /** Absolute path of the engine's unix socket: pass it to `new Docker({ socketPath })`. */
  socketPath: string;
  /** The same socket as a `DOCKER_HOST` value (`unix:///...`). */
  dockerHost: string;
  /** Pid of the dockerd process this harness spawned (also in its `--pidfile`). */
  pid: number;
  /** Pid of the private containerd process this harness spawned. */
  containerdPid: number;
  /** The private temporary directory holding all of the engine's state; removed by {@link PrivateDockerd.stop}. */
  baseDir: string;
  /** Storage driver the engine ended up using, as reported by `GET /info`. */
  storageDriver: string;
  /** Path of the dockerd log file (inside {@link PrivateDockerd.baseDir}). */
  logPath: string;
  /**
   * Stops the engine: kills the containers still running in it, sends SIGTERM
   * to the dockerd pid (SIGKILL after ~20 s), then the same to the private
   * containerd, unmounts whatever is left under {@link PrivateDockerd.baseDir}
   * and removes it. Idempotent; never throws for cleanup problems.
   */
  stop(): Promise<void>;
}

/**
 * Tells whether a private dockerd can be started on this machine.
 *
 * @returns `null` when it can (Linux, running as root, `/usr/sbin/dockerd` and
 * `/usr/bin/containerd` present and executable), otherwise a human-readable
 * reason suitable for a loud test skip.
 */
export function dockerdAvailable(): string | null {
  if (process.platform !== 'linux') {
    return `a private dockerd needs Linux (this is ${process.platform})`;
  }
  for (const [binary, pkg] of [
    [DOCKERD_PATH, 'docker.io'],
    [CONTAINERD_PATH, 'containerd'],
  ] as const) {
    try {
      accessSync(binary, fsConstants.X_OK);
    } catch {
      return `${binary} is missing or not executable (apt-get install -y ${pkg})`;
    }
  }
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    return 'a private dockerd must run as root (the tests are not running as root)';
  }
  return null;
}

/** A daemon process spawned by this module. */
interface Spawned {
  child: ChildProcess;
  pid: number;
  exited: Promise<void>;
}

/** Pids spawned by this module and not yet reaped: SIGKILLed if the test process exits without stopping them. */
const livePids = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of livePids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

/**
 * Starts a private dockerd (with its own containerd) in a fresh temporary
 * directory and waits until `GET /_ping` answers on its socket.
 *
 * @throws Error including the tail of the daemon logs when the engine does not
 * answer within ~30 s; everything started so far is stopped and removed.
 */
export async function startPrivateDockerd(opts: StartPrivateDockerdOptions = {}): Promise<PrivateDockerd> {
  const reason = dockerdAvailable();
  if (reason !== null) throw new Error(`cannot start a private dockerd: ${reason}`);
  const parent = opts.baseDir ?? '/tmp';
  try {
    return await launch(parent, opts.storageDriver);
  } catch (error) {
    if (opts.storageDriver === undefined && error instanceof StartError && error.storageRelated) {
      return await launch(parent, 'vfs');
    }
    throw error;
  }
}

/** A start failure, remembering whether the logs point at the storage driver. */
class StartError extends Error {
  constructor(
    message: string,
    readonly storageRelated: boolean,
  ) {
    super(message);
    this.name = 'StartError';
  }
}

async function launch(parent: string, storageDriver: string | undefined): Promise<PrivateDockerd> {
  const baseDir = await realpath(await mkdtemp(path.join(await realpath(parent), 'dcd-')));
  const p = (name: string): string => path.join(baseDir, name);
  const socketPath = p('docker.sock');
  const containerdSocket = p('containerd.sock');
  const logPath = p('dockerd.log');
  const containerdLogPath = p('containerd.log');

  let containerd: Spawned | undefined;
  let dockerd: Spawned | undefined;
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= shutdown(baseDir, socketPath, dockerd, containerd);
    return stopped;
  };

  try {
    for (const socket of [socketPath, `${containerdSocket}.ttrpc`]) {
      if (socket.length > MAX_SOCKET_PATH) {
        throw new Error(`socket path too long (${socket.length} > ${MAX_SOCKET_PATH}): ${socket}; use a shorter baseDir`);
      }
    }
    await mkdir(p('containerd'));
    await writeFile(p('containerd.toml'), containerdConfig(baseDir, containerdSocket));
    // An explicit config file keeps /etc/docker/daemon.json out; the trust key
    // would otherwise be created as /etc/docker/key.json (there is no CLI flag).
    await writeFile(p('daemon.json'), `${JSON.stringify({ 'deprecated-key-path': p('key.json') }, null, 2)}\n`);

    const deadline = Date.now() + START_TIMEOUT_MS;
    containerd = spawnDaemon(CONTAINERD_PATH, ['--config', p('containerd.toml')], containerdLogPath);
    await waitUntil(deadline, containerd, () => canConnect(containerdSocket), 'containerd');

    const args = [
      '--containerd', containerdSocket,
      '--data-root', p('data'),
      '--exec-root', p('exec'),
      '--pidfile', p('dockerd.pid'),
      '--host', `unix://${socketPath}`,
      '--config-file', p('daemon.json'),
      '--bridge=none',
      '--iptables=false',
      '--ip6tables=false',
      '--ip-masq=false',
      '--ip-forward=false',
      '--userland-proxy=false',
      '--exec-opt', 'native.cgroupdriver=cgroupfs',
      ...(storageDriver === undefined ? [] : ['--storage-driver', storageDriver]),
    ];
    dockerd = spawnDaemon(DOCKERD_PATH, args, logPath);
    await waitUntil(deadline, dockerd, () => ping(socketPath), 'dockerd');

    const pidFromFile = (await readFile(p('dockerd.pid'), 'utf8')).trim();
    if (pidFromFile !== String(dockerd.pid)) {
      throw new Error(`dockerd pid file says ${pidFromFile}, but the spawned pid is ${dockerd.pid}`);
    }
    const info = JSON.parse((await request(socketPath, 'GET', '/info', 5_000)).body) as { Driver?: string };
    return {
      socketPath,
      dockerHost: `unix://${socketPath}`,
      pid: dockerd.pid,
      containerdPid: containerd.pid,
      baseDir,
      storageDriver: info.Driver ?? 'unknown',
      logPath,
      stop,
    };
  } catch (error) {
    const logs = `${await logTail(logPath)}${await logTail(containerdLogPath)}`;
    await stop();
    const message = error instanceof Error ? error.message : String(error);
    throw new StartError(
      `private dockerd failed to start${storageDriver ? ` (storage driver ${storageDriver})` : ''}: ${message}${logs}`,
      logs
        .split('\n')
        .some((line) => /level=(error|fatal)|failed to start daemon/i.test(line) && /graphdriver|storage|overlay/i.test(line)),
    );
  }
}

function containerdConfig(baseDir: string, socket: string): string {
  const q = (s: string): string => JSON.stringify(s);
  return [
    'version = 2',
    `root = ${q(path.join(baseDir, 'containerd', 'root'))}`,
    `state = ${q(path.join(baseDir, 'containerd', 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${q(socket)}`,
    '[ttrpc]',
    '  address = ""',
    '[debug]',
    '  address = ""',
    '  level = "warn"',
    '[metrics]',
    '  address = ""',
    '[plugins]',
    '  [plugins."io.containerd.runtime.v1.linux"]',
    `    runtime_root = ${q(path.join(baseDir, 'containerd', 'runc'))}`,
    '',
  ].join('\n');
}

function spawnDaemon(binary: string, args: string[], logPath: string): Spawned {
  installExitHook();
  const logFd = openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, {
      stdio: ['ignore', logFd, logFd],
      env: { PATH: SYSTEM_PATH },
    });
  } finally {
    closeSync(logFd);
  }
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not spawn ${binary}`);
  livePids.add(pid);
  void exited.then(() => livePids.delete(pid));
  return { child, pid, exited };
}

function isRunning(daemon: Spawned): boolean {
  return daemon.child.exitCode === null && daemon.child.signalCode === null;
}

async function waitUntil(deadline: number, daemon: Spawned, ready: () => Promise<boolean>, name: string): Promise<void> {
  for (;;) {
    if (!isRunning(daemon)) {
      throw new Error(`${name} exited early (code ${daemon.child.exitCode}, signal ${daemon.child.signalCode})`);
    }
    if (await ready()) return;
    if (Date.now() > deadline) throw new Error(`${name} did not become ready within ${START_TIMEOUT_MS / 1000}s`);
    await sleep(100);
  }
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function ping(socketPath: string): Promise<boolean> {
  try {
    const res = await request(socketPath, 'GET', '/_ping', 1_000);
    return res.status === 200 && res.body === 'OK';
  } catch {
    return false;
  }
}

/** Minimal HTTP client over the engine's unix socket. */
function request(
  socketPath: string,
  method: string,
  urlPath: string,
  timeoutMs: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Best effort: SIGKILL every running container of the private engine, so dockerd stops without waiting for their stop timeouts. */
async function killContainers(socketPath: string): Promise<void> {
  try {
    const res = await request(socketPath, 'GET', '/containers/json', 3_000);
    if (res.status !== 200) return;
    const containers = JSON.parse(res.body) as Array<{ Id: string }>;
    await Promise.all(
      containers.map((c) =>
        request(socketPath, 'POST', `/containers/${encodeURIComponent(c.Id)}/kill?signal=KILL`, 3_000).catch(() => undefined),
      ),
    );
  } catch {
    // the engine is not answering: SIGTERM/SIGKILL below still apply
  }
}

/** Sends SIGTERM to the daemon's own pid, then SIGKILL after `timeoutMs`; resolves once it has exited. */
async function terminate(daemon: Spawned, timeoutMs: number): Promise<void> {
  if (!isRunning(daemon)) return;
  signal(daemon.pid, 'SIGTERM');
  if (await exitsWithin(daemon, timeoutMs)) return;
  signal(daemon.pid, 'SIGKILL');
  await exitsWithin(daemon, KILL_WAIT_MS);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

async function exitsWithin(daemon: Spawned, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([daemon.exited.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function shutdown(
  baseDir: string,
  socketPath: string,
  dockerd: Spawned | undefined,
  containerd: Spawned | undefined,
): Promise<void> {
  if (dockerd !== undefined && isRunning(dockerd)) {
    await killContainers(socketPath);
    await terminate(dockerd, DOCKERD_STOP_TIMEOUT_MS);
  }
  if (containerd !== undefined) await terminate(containerd, CONTAINERD_STOP_TIMEOUT_MS);
  const stillRunning = [dockerd, containerd].filter((d): d is Spawned => d !== undefined && isRunning(d));
  if (stillRunning.length > 0) {
    console.warn(`private dockerd: pids ${stillRunning.map((d) => d.pid).join(', ')} did not exit; leaving ${baseDir} in place`);
    return;
  }
  await unmountUnder(baseDir);
  if ((await mountsUnder(baseDir)).length > 0) {
    console.warn(`private dockerd: mounts remain under ${baseDir}; not removing it`);
    return;
  }
  await rm(baseDir, { recursive: true, force: true }).catch((error: unknown) => {
    console.warn(`private dockerd: could not remove ${baseDir}: ${String(error)}`);
  });
}

/** Mount points at or below `dir`, deepest first, from /proc/self/mountinfo. */
async function mountsUnder(dir: string): Promise<string[]> {
  let mountinfo: string;
  try {
    mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    .filter((mp): mp is string => mp !== undefined)
    .map(unescape)
    .filter((mp) => mp === dir || mp.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Lazily unmounts whatever a killed daemon left mounted under `dir` (overlay layers, netns files, the data-root bind). */
async function unmountUnder(dir: string): Promise<void> {
  for (const mountPoint of await mountsUnder(dir)) {
    await execFileAsync('umount', ['--lazy', mountPoint], { env: { PATH: SYSTEM_PATH } }).catch(() => undefined);
  }
}

/** The last lines of a daemon log, without gRPC connection chatter, for error messages. */
async function logTail(logPath: string, lines = 30): Promise<string> {
  try {
    const text = await readFile(logPath, 'utf8');
    const tail = text
      .split('\n')
      .filter((line) => line.trim() !== '' && !line.includes('module=grpc'))
      .slice(-lines);
    return `\n--- tail of ${logPath} ---\n${tail.join('\n')}`;
  } catch {
    return `\n--- ${logPath}: no log ---`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
