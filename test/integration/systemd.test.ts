/**
 * The daemon under systemd's notification protocol: the test plays systemd,
 * with a real unix datagram socket as NOTIFY_SOCKET and WATCHDOG_USEC set,
 * and runs the built CLI as the service. Also `systemd-analyze verify` on the
 * shipped unit.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startPrivateDockerd, type PrivateDockerd } from '../support/dockerd.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import {
  cleanEnv,
  DOCKER_UNAVAILABLE,
  freePort,
  pidAlive,
  requireAvailable,
  ROOT,
  skipReason,
  sleep,
  startCli,
  waitFor,
  type BackgroundProcess,
} from '../support/processes.js';

const execFileAsync = promisify(execFile);

interface DgramSocket {
  bind(path: string): void;
  close(): void;
  on(event: 'message', listener: (buf: Buffer) => void): void;
}

function loadDgram(): { createSocket(type: 'unix_dgram'): DgramSocket } | null {
  try {
    return createRequire(import.meta.url)('unix-dgram') as { createSocket(type: 'unix_dgram'): DgramSocket };
  } catch {
    return null;
  }
}

const dgram = loadDgram();
const unavailable = DOCKER_UNAVAILABLE ?? (dgram ? null : 'the unix-dgram package is not built');
const skip = skipReason('systemd protocol tests', unavailable);

/** A fake systemd: collects every datagram sent to its socket, with arrival times. */
class FakeSystemd {
  readonly messages: { at: number; text: string }[] = [];
  readonly path: string;
  private socket: DgramSocket;

  constructor(dir: string) {
    this.path = join(dir, 'notify.sock');
    this.socket = dgram!.createSocket('unix_dgram');
    this.socket.on('message', (buf) => this.messages.push({ at: Date.now(), text: buf.toString() }));
    this.socket.bind(this.path);
  }

  /** Messages carrying `state` (e.g. `READY=1`), in order. */
  with(state: string) {
    return this.messages.filter((m) => m.text.split('\n').includes(state));
  }

  close(): void {
    this.socket.close();
  }
}

describe.skipIf(skip !== null)('systemd notify protocol (real datagram socket, real engines)', () => {
  let dockerd: PrivateDockerd | undefined;
  let t: TestDatabase;
  let dir: string;
  let systemd: FakeSystemd;
  let daemon: BackgroundProcess | undefined;

  beforeAll(async () => {
    requireAvailable(unavailable, 'these tests');
    dockerd = await startPrivateDockerd();
    t = await createTestDatabase('systemd');
    dir = mkdtempSync(join(tmpdir(), 'deployer-sd-'));
  });

  afterEach(async () => {
    daemon?.kill();
    await daemon?.exited;
    daemon = undefined;
    systemd?.close();
  });

  afterAll(async () => {
    await dockerd?.stop();
    await t?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function start(extra: Record<string, string> = {}, config = 'resync: 1s\n') {
    systemd = new FakeSystemd(mkdtempSync(join(dir, 's-')));
    const configFile = join(dir, `config-${Date.now()}.yaml`);
    writeFileSync(configFile, config);
    daemon = startCli(
      ['run', '--config', configFile],
      cleanEnv({
        DATABASE_URL: t.url,
        DOCKER_HOST: dockerd!.dockerHost,
        DEPLOYER_METRICS_ADDRESS: `127.0.0.1:${await freePort()}`,
        DEPLOYER_LOG_LEVEL: 'info',
        NOTIFY_SOCKET: systemd.path,
        WATCHDOG_USEC: '400000',
        ...extra,
      }),
    );
    return configFile;
  }

  it('sends READY=1 only after the first sweep, then WATCHDOG=1 every half period, RELOADING=1 on SIGHUP and STOPPING=1 on SIGTERM', async () => {
    const configFile = await start();
    const ready = await waitFor('READY=1', () => systemd.with('READY=1')[0], 45_000);
    // The first sweep finished before readiness was announced.
    const output = daemon!.output();
    expect(output.indexOf('"sweep finished"')).toBeGreaterThan(-1);
    expect(output.indexOf('"sweep finished"')).toBeLessThan(output.indexOf('ready: first sweep finished'));
    expect(systemd.messages[0]!.text).toContain('READY=1');

    await waitFor('three watchdog pings', () => systemd.with('WATCHDOG=1').length >= 3, 20_000);
    expect(systemd.with('WATCHDOG=1').every((m) => m.at >= ready.at)).toBe(true);

    // A valid new config is taken without a restart.
    writeFileSync(configFile, 'resync: 1s\nstuckTimeout: 2h\n');
    process.kill(daemon!.pid, 'SIGHUP');
    const reloading = await waitFor('RELOADING=1', () => systemd.with('RELOADING=1')[0]);
    expect(reloading.text).toMatch(/MONOTONIC_USEC=\d+/);
    await waitFor('READY=1 after the reload', () => systemd.with('READY=1').find((m) => m.at >= reloading.at));
    await waitFor('reload logged', () => daemon!.output().includes('"config reloaded"'));

    // An invalid one is refused with the key named, and the daemon keeps going.
    writeFileSync(configFile, 'resync: 1s\nstuckTimeout: soon\n');
    process.kill(daemon!.pid, 'SIGHUP');
    await waitFor('reload refused', () => daemon!.output().includes('config reload refused'));
    expect(daemon!.output()).toMatch(/config reload refused[^\n]*stuckTimeout/);
    const refusedAt = Date.now();
    await waitFor('pings after the refused reload', () => systemd.with('WATCHDOG=1').some((m) => m.at > refusedAt), 10_000);
    expect(pidAlive(daemon!.pid)).toBe(true);

    process.kill(daemon!.pid, 'SIGTERM');
    const exit = await daemon!.exited;
    expect(exit.code).toBe(0);
    expect(systemd.with('STOPPING=1')).toHaveLength(1);
  });

  it('stops the watchdog pings when the loop blocks, so systemd would restart it', async () => {
    await start({ DEPLOYER_FAILPOINT: 'block:sweep' });
    await waitFor('READY=1', () => systemd.with('READY=1')[0], 45_000);
    // The first sweep went through; the next one blocks the event loop for good.
    await waitFor('the second sweep to block', async () => {
      const before = systemd.with('WATCHDOG=1').length;
      await sleep(1_500);
      return systemd.with('WATCHDOG=1').length === before;
    }, { timeoutMs: 30_000, everyMs: 0 });
    const count = systemd.with('WATCHDOG=1').length;
    await sleep(1_500);
    expect(systemd.with('WATCHDOG=1')).toHaveLength(count);
    expect(pidAlive(daemon!.pid)).toBe(true);
  }, 90_000);
});

describe('the shipped systemd unit', () => {
  const analyze = '/usr/bin/systemd-analyze';
  const skipAnalyze = skipReason('systemd-analyze verify', existsSync(analyze) ? null : `${analyze} not found (Debian package systemd)`);

  it.skipIf(skipAnalyze !== null)('passes systemd-analyze verify and declares notify, watchdog and reload', async () => {
    const unit = join(ROOT, 'deploy/deployer-controller.service');
    const { stderr } = await execFileAsync(analyze, ['verify', unit]);
    expect(stderr.trim()).toBe('');
    const text = readFileSync(unit, 'utf8');
    expect(text).toMatch(/^Type=notify$/m);
    expect(text).toMatch(/^WatchdogSec=/m);
    expect(text).toMatch(/^ExecReload=.*-HUP \$MAINPID$/m);
    expect(text).toMatch(/^StateDirectory=deployer-controller$/m);
    expect(text).not.toMatch(/MemoryDenyWriteExecute=yes/);
  });
});
