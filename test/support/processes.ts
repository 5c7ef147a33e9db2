/**
 * The one home of what the suites need around child processes: the built CLI
 * (built ONCE per run by global-setup.ts: no suite runs tsc itself), run to
 * its end or started in the background, in a clean environment, with every
 * pid tracked so that a suite kills only what it started; polling with a
 * deadline; and the rule for suites that need something this machine may lack
 * (skipped loudly outside CI, failing in CI).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';
import { busyboxAvailable } from './busybox-image.js';
import { dockerdAvailable } from './dockerd.js';

/** The repository root and the built CLI (built once per run by global-setup.ts). */
export const ROOT = new URL('../../', import.meta.url).pathname;
export const CLI = join(ROOT, 'dist/cli/main.js');

// ---------------------------------------------------------------------------
// Skipping
// ---------------------------------------------------------------------------

/** True when CI is set to something other than empty/0/false: skips become failures. */
export const IN_CI = !['', '0', 'false'].includes((process.env.CI ?? '').trim().toLowerCase());

/** Why a private dockerd with the busybox test image cannot run here, or null. */
export const DOCKER_UNAVAILABLE = dockerdAvailable() ?? busyboxAvailable();

/**
 * The rule for a suite that needs what `unavailable` says is missing (null:
 * nothing is): outside CI it is skipped, with a loud SKIPPING warning; in CI
 * it runs, and {@link requireAvailable} at the top of its `beforeAll` makes it
 * FAIL.
 *
 * @returns the reason to skip, or null when the suite must run
 */
export function skipReason(suite: string, unavailable: string | null): string | null {
  if (unavailable === null || IN_CI) return null;
  console.warn(`SKIPPING ${suite}: ${unavailable}`);
  return unavailable;
}

/** {@link skipReason} for a suite that needs a private dockerd and the busybox image. */
export function dockerSkip(suite: string): string | null {
  return skipReason(`${suite} (they need a private dockerd)`, DOCKER_UNAVAILABLE);
}

/**
 * First thing in the `beforeAll` of a suite that {@link skipReason} let run:
 * throws, so that the suite fails, when what it needs is missing (which only
 * happens in CI).
 */
export function requireAvailable(unavailable: string | null, what: string): void {
  if (unavailable !== null) throw new Error(`CI must be able to run ${what}: ${unavailable}`);
}

/** {@link requireAvailable} for a private dockerd and the busybox image. */
export function requireDocker(): void {
  requireAvailable(DOCKER_UNAVAILABLE, 'a private dockerd');
}

// ---------------------------------------------------------------------------
// Environment, ports, pids
// ---------------------------------------------------------------------------

/**
 * A child environment with nothing inherited but PATH and HOME (so the test
 * runner's DATABASE_URL or DOCKER_HOST cannot leak in), plus `extra`.
 */
export function cleanEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', LC_ALL: 'C' };
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A free TCP port on 127.0.0.1 (nothing listens on it once this resolves). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process run to its end. */
export interface RunResult extends Exit {
  stdout: string;
  stderr: string;
}

/** Pids of the children this test process started that are still running: {@link killChildren} kills these, and only these. */
const childPids = new Set<number>();

function track(child: ChildProcess): number | undefined {
  const pid = child.pid;
  if (pid === undefined) return undefined;
  childPids.add(pid);
  child.once('exit', () => childPids.delete(pid));
  return pid;
}

/** Kills (SIGKILL, by pid) the children this test process started that are still running: for `afterAll`. */
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

export interface RunOptions {
  /** Default: {@link cleanEnv} with nothing extra. */
  env?: NodeJS.ProcessEnv;
  /** Written to the child's stdin, which is then closed; without it stdin is /dev/null. */
  stdin?: string;
  /** SIGKILL (by pid) after this long. Default 30 s. */
  timeoutMs?: number;
}

/** Runs `command` to its end; never throws on a non-zero exit. */
export function runProcess(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? cleanEnv({}), stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const pid = track(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      if (pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(pid, 'SIGKILL');
    }, options.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (child.stdin) {
      // A child that exits without reading its input must not crash the suite with EPIPE.
      child.stdin.on('error', () => undefined);
      child.stdin.end(options.stdin);
    }
  });
}

/** Runs `node dist/cli/main.js ...args` to its end (SIGKILL by pid after `timeoutMs`). */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<RunResult> {
  return runProcess(process.execPath, [CLI, ...args], { env, timeoutMs });
}

/** A long-running child (the daemon, a Prometheus) with its output collected. */
export interface BackgroundProcess {
  child: ChildProcess;
  pid: number;
  /** Everything it wrote so far, stdout and stderr interleaved. */
  output(): string;
  /** The last lines of its output under a header naming it, for failure messages. */
  tail(lines?: number): string;
  /** Resolves with how it ended, once it has and its output is read to the end. */
  exited: Promise<Exit>;
  running(): boolean;
  /** SIGTERM if still running, SIGKILL after `graceMs` (default 20 s); resolves with how it ended. */
  stop(graceMs?: number): Promise<Exit>;
  /** SIGKILL by pid if still running. */
  kill(): void;
}

/** Starts `command` in the background; its pid is tracked for {@link killChildren}. */
export function startProcess(command: string, args: readonly string[], env: NodeJS.ProcessEnv, options: { cwd?: string; label?: string } = {}): BackgroundProcess {
  const child = spawn(command, args, { env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = track(child);
  if (pid === undefined) {
    child.once('error', () => undefined);
    throw new Error(`could not start ${command}`);
  }
  const label = options.label ?? basename(command);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<Exit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    pid,
    output: () => out,
    tail: (lines = 30) => `--- ${label} ${pid} output (last ${lines} lines) ---\n${out.trimEnd().split('\n').slice(-lines).join('\n')}`,
    exited,
    running,
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
    kill() {
      if (running() && pidAlive(pid)) process.kill(pid, 'SIGKILL');
    },
  };
}

/** Starts `node dist/cli/main.js ...args` (the daemon, with `run`) in the background. */
export function startCli(args: readonly string[], env: NodeJS.ProcessEnv): BackgroundProcess {
  return startProcess(process.execPath, [CLI, ...args], env, { label: 'daemon' });
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

export interface WaitOptions {
  /** Default 30 s. */
  timeoutMs?: number;
  /** Pause between two checks. Default 100 ms. */
  everyMs?: number;
  /** Appended to the timeout error (e.g. a daemon's last log lines). */
  context?: () => string | Promise<string>;
}

/**
 * Polls `check` until it returns something other than undefined, null or
 * false, and returns that. A check that throws is tried again; at the
 * deadline the error names `what`, the last error and `context()`.
 *
 * @param options the timeout in ms, or {@link WaitOptions}
 */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, options: number | WaitOptions = {}): Promise<Exclude<NonNullable<T>, false>> {
  const { timeoutMs = 30_000, everyMs = 100, context } = typeof options === 'number' ? { timeoutMs: options } : options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== null && value !== false) return value as Exclude<NonNullable<T>, false>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const more = context ? await Promise.resolve().then(context).catch((err: unknown) => `(no context: ${String(err)})`) : '';
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}${more ? `\n${more}` : ''}`);
    }
    await sleep(everyMs);
  }
}
