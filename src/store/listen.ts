import pg from 'pg';
import { NOTIFY_CHANNEL } from './migrate.js';

/** A change notice from the `deployments` trigger. */
export interface DeploymentNotice {
  id: string;
  status: string;
  version: number;
}

/** Options of {@link DeploymentListener}. */
export interface ListenerOptions {
  connectionString: string;
  onNotice: (notice: DeploymentNotice) => void;
  /** Called after every (re)connection: notices may have been missed, so resync. */
  onConnected?: () => void;
  onError?: (err: Error, retryInMs: number) => void;
}

/**
 * LISTENs on the `deployments` NOTIFY channel on a connection of its own and
 * reconnects with jittered backoff when it drops. Notices are hints only:
 * every decision is still made from a fresh read.
 */
export class DeploymentListener {
  private client: pg.Client | undefined;
  private stopped = true;
  private timer: NodeJS.Timeout | undefined;
  private failures = 0;

  constructor(private readonly options: ListenerOptions) {}

  start(): Promise<void> {
    if (!this.stopped) return Promise.resolve();
    this.stopped = false;
    return this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({ connectionString: this.options.connectionString, connectionTimeoutMillis: 5_000 });
    client.on('notification', (msg) => {
      if (msg.channel !== NOTIFY_CHANNEL || !msg.payload) return;
      try {
        const notice = JSON.parse(msg.payload) as DeploymentNotice;
        if (typeof notice.id === 'string') this.options.onNotice(notice);
      } catch {
        // A malformed payload is only a missed hint; the resync catches up.
      }
    });
    client.on('error', (err) => this.retry(client, err));
    client.on('end', () => this.retry(client, new Error('listen connection ended')));
    try {
      await client.connect();
      await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
      this.client = client;
      this.failures = 0;
      this.options.onConnected?.();
    } catch (err) {
      this.retry(client, err as Error);
    }
  }

  private retry(client: pg.Client, err: Error): void {
    if (this.client && this.client !== client) return;
    this.client = undefined;
    client.removeAllListeners('end');
    client.end().catch(() => undefined);
    if (this.stopped || this.timer) return;
    this.failures++;
    const base = Math.min(30_000, 500 * 2 ** Math.min(this.failures - 1, 6));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.options.onError?.(err, delay);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.connect();
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
  }
}
