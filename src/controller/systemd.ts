import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';

/**
 * The systemd notification protocol (sd_notify): `READY=1`, `WATCHDOG=1`,
 * `STOPPING=1`, `RELOADING=1` to the datagram socket named by `NOTIFY_SOCKET`.
 * Node has no unix datagram sockets, so this goes through the small native
 * package `unix-dgram` (an optional dependency), or through the
 * `systemd-notify` tool when the package could not be built or the socket is
 * in the abstract namespace. Without `NOTIFY_SOCKET` every call is a no-op.
 */

interface DgramSocket {
  send(buf: Buffer, offset: number, length: number, path: string, callback: (err?: Error) => void): void;
  close(): void;
  on(event: 'error', listener: (err: Error) => void): void;
}
interface DgramModule {
  createSocket(type: 'unix_dgram'): DgramSocket;
}

let dgram: DgramModule | null | undefined;
function loadDgram(): DgramModule | null {
  if (dgram === undefined) {
    try {
      dgram = createRequire(import.meta.url)('unix-dgram') as DgramModule;
    } catch {
      dgram = null;
    }
  }
  return dgram;
}

/** Sends sd_notify states for this process. */
export class SystemdNotifier {
  private readonly socket: string | undefined;

  constructor(
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly onError: (err: Error) => void = () => undefined,
  ) {
    this.socket = env.NOTIFY_SOCKET || undefined;
  }

  /** True when started by systemd with a notify socket. */
  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /**
   * Half of `WATCHDOG_USEC` in milliseconds (the ping period systemd asks
   * for), or undefined when no watchdog is set for this process.
   */
  watchdogIntervalMs(): number | undefined {
    const usec = Number(this.env.WATCHDOG_USEC);
    if (!this.socket || !Number.isFinite(usec) || usec <= 0) return undefined;
    const pid = this.env.WATCHDOG_PID;
    if (pid && Number(pid) !== process.pid) return undefined;
    return Math.max(1, Math.floor(usec / 2_000));
  }

  /** Sends newline-separated `KEY=value` states. Never throws; failures go to `onError`. */
  notify(...states: string[]): Promise<void> {
    const socket = this.socket;
    if (!socket || states.length === 0) return Promise.resolve();
    const payload = states.join('\n');
    const native = socket.startsWith('/') ? loadDgram() : null;
    if (native) {
      return new Promise((resolve) => {
        let client: DgramSocket | undefined;
        try {
          client = native.createSocket('unix_dgram');
          client.on('error', (err) => this.onError(err));
          const buf = Buffer.from(payload);
          client.send(buf, 0, buf.length, socket, (err) => {
            if (err) this.onError(err);
            client?.close();
            resolve();
          });
        } catch (err) {
          this.onError(err as Error);
          try {
            client?.close();
          } catch {
            // already closed
          }
          resolve();
        }
      });
    }
    return new Promise((resolve) => {
      execFile('systemd-notify', [`--pid=${process.pid}`, ...states], { env: this.env, timeout: 5_000 }, (err) => {
        if (err) this.onError(err);
        resolve();
      });
    });
  }

  /** `RELOADING=1` with the monotonic clock, as `Type=notify-reload` expects. */
  reloading(): Promise<void> {
    return this.notify('RELOADING=1', `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`);
  }
}
