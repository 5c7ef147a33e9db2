import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/controller/logger.js';
import { Metrics } from '../../src/controller/metrics.js';
import {
  Notifier,
  notificationsSchema,
  verifySignature,
  type NotificationDeployment,
  type NotifierOptions,
} from '../../src/controller/notifications.js';
import { freePort, waitFor } from '../support/processes.js';
import { LogCapture, metricValue } from '../support/seed.js';

/**
 * Webhook delivery against real HTTP receivers on 127.0.0.1: what an operator's
 * endpoint sees (headers, raw body, signature), and what the notifier does when
 * the endpoint fails, is down or is slow.
 */

const SECRET = 'receiver-secret';
const DEPLOYMENT: NotificationDeployment = {
  id: 'dep-7',
  project: 'shop',
  service: 'web',
  revision: 3,
  status: 'active',
  phase: 'retiring',
  status_reason: null,
};

interface Received {
  path: string;
  method: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The signature checked as a receiver must: HMAC of the raw body, within 5 minutes. */
  signatureValid: boolean;
  status: number;
}

/** A webhook receiver: verifies signatures, records requests, fails or stalls on demand. */
class Receiver {
  readonly received: Received[] = [];
  /** Answer 500 to this many requests first. */
  failFirst = 0;
  /** Hold every answer until {@link release}. */
  stall = false;
  private held: (() => void)[] = [];
  private server: Server | undefined;
  port = 0;

  constructor(private readonly secret: string) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const raw = Buffer.concat(chunks);
        const header = req.headers['deployer-signature'];
        const signatureValid = typeof header === 'string' && verifySignature(header, raw, this.secret, Math.floor(Date.now() / 1000));
        const status = !signatureValid ? 401 : this.received.length < this.failFirst ? 500 : 204;
        this.received.push({ path: req.url ?? '', method: req.method ?? '', headers: req.headers, body: raw.toString('utf8'), signatureValid, status });
        const answer = () => res.writeHead(status).end();
        if (this.stall) this.held.push(answer);
        else answer();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Requests received but not answered yet. */
  get pending(): number {
    return this.held.length;
  }

  release(): void {
    this.stall = false;
    for (const answer of this.held.splice(0)) answer();
  }

  async close(): Promise<void> {
    this.release();
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

const receivers: Receiver[] = [];
const notifiers: Notifier[] = [];

afterEach(async () => {
  await Promise.all(notifiers.splice(0).map((n) => n.stop()));
  await Promise.all(receivers.splice(0).map((r) => r.close()));
});

async function receiver(secret = SECRET): Promise<Receiver> {
  const r = await new Receiver(secret).start();
  receivers.push(r);
  return r;
}

function notifier(hooks: Record<string, unknown>[], options: Partial<NotifierOptions> = {}) {
  const log = new LogCapture();
  const logger = createLogger('debug', log);
  const metrics = new Metrics({ processMetrics: false });
  const n = new Notifier(notificationsSchema.parse({ webhooks: hooks }).webhooks, {
    logger,
    metrics,
    retry: { tries: 4, baseMs: 50, maxMs: 200 },
    ...options,
  });
  notifiers.push(n);
  const count = (event: string, result: string) => metricValue(metrics, 'deployer_notifications_total', { event, result });
  return { notifier: n, logs: log.lines, metrics, count };
}

describe('webhooks (real HTTP receiver on 127.0.0.1)', () => {
  it('delivers a signed JSON POST with the contract headers and body', async () => {
    const r = await receiver();
    const { notifier: n, count } = notifier([{ url: r.url(), secret: SECRET }]);
    await n.start();
    n.notify('active', DEPLOYMENT, 'shop/web revision 3 is active');
    await waitFor('the delivery', async () => (await count('active', 'delivered')) === 1);
    expect(r.received).toHaveLength(1);
    const got = r.received[0]!;
    expect(got).toMatchObject({ method: 'POST', path: '/hook', signatureValid: true, status: 204 });
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['deployer-event']).toBe('active');
    expect(got.headers['deployer-signature']).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    const body = JSON.parse(got.body) as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(['at', 'deployment', 'event', 'message']);
    expect(body).toMatchObject({ event: 'active', deployment: DEPLOYMENT, message: 'shop/web revision 3 is active' });
    expect(new Date(body.at as string).toISOString()).toBe(body.at);
  });

  it('retries a failing receiver until it accepts, each attempt validly signed', async () => {
    const r = await receiver();
    r.failFirst = 2;
    const { notifier: n, count } = notifier([{ url: r.url(), secret: SECRET }]);
    await n.start();
    n.notify('failed', { ...DEPLOYMENT, status: 'failed', status_reason: 'health check failed' }, 'rollout failed');
    await waitFor('the delivery after two failures', async () => (await count('failed', 'delivered')) === 1);
    expect(r.received.map((x) => x.status)).toEqual([500, 500, 204]);
    expect(r.received.every((x) => x.signatureValid)).toBe(true);
    expect(new Set(r.received.map((x) => x.body)).size).toBe(1);
    expect(new Set(r.received.map((x) => x.headers['deployer-delivery'])).size).toBe(1);
    expect(await count('failed', 'retried')).toBe(2);
    expect(await count('failed', 'dropped')).toBe(0);
  });

  it('a receiver with another secret rejects every attempt; the delivery is dropped', async () => {
    const r = await receiver('the-right-secret');
    const { notifier: n, count, logs } = notifier([{ url: r.url(), secret: 'a-wrong-secret' }]);
    await n.start();
    n.notify('zombie', DEPLOYMENT, 'marked failed');
    await waitFor('the drop', async () => (await count('zombie', 'dropped')) === 1);
    expect(r.received.map((x) => [x.signatureValid, x.status])).toEqual(Array(4).fill([false, 401]));
    expect(logs.find((l) => l.msg === 'notification dropped')).toMatchObject({ level: 'warn', attempts: 4, lastError: 'HTTP 401' });
  });

  it('a receiver that is down: the delivery is dropped after the tries, counted and logged', async () => {
    const port = await freePort();
    const { notifier: n, count, logs } = notifier([{ url: `http://127.0.0.1:${port}/hook`, secret: SECRET }], {
      retry: { tries: 3, baseMs: 20, maxMs: 50 },
    });
    await n.start();
    n.notify('guard_tripped', null, 'refused to delete 40 of 50 containers');
    await waitFor('the drop', async () => (await count('guard_tripped', 'dropped')) === 1);
    expect(await count('guard_tripped', 'retried')).toBe(2);
    expect(await count('guard_tripped', 'delivered')).toBe(0);
    const dropped = logs.filter((l) => l.msg === 'notification dropped');
    expect(dropped).toHaveLength(1);
    expect(dropped[0]).toMatchObject({ level: 'warn', url: `http://127.0.0.1:${port}/hook`, event: 'guard_tripped', attempts: 3 });
    expect(dropped[0]!.lastError).toMatch(/ECONNREFUSED/);
  });

  it('a slow receiver blocks neither notify() nor the other webhooks', async () => {
    const slow = await receiver();
    slow.stall = true;
    const fast = await receiver();
    const { notifier: n, count } = notifier(
      [
        { url: slow.url('/slow'), secret: SECRET },
        { url: fast.url('/fast'), secret: SECRET },
      ],
      { concurrency: 1 },
    );
    await n.start();
    for (let i = 0; i < 3; i++) expect(n.notify('orphans_removed', null, `sweep ${i}`)).toBeUndefined();
    // All three calls returned while the slow receiver holds its first request unanswered.
    await waitFor('the fast receiver to accept all three', async () => (await count('orphans_removed', 'delivered')) === 3);
    expect(fast.received).toHaveLength(3);
    await waitFor('the slow receiver to hold a request', () => slow.pending === 1);
    expect(slow.received).toHaveLength(1);
    slow.release();
    await waitFor('the slow receiver to get the rest', async () => (await count('orphans_removed', 'delivered')) === 6);
    expect(slow.received.map((x) => (JSON.parse(x.body) as { message: string }).message)).toEqual(['sweep 0', 'sweep 1', 'sweep 2']);
  });

  it('stop() returns while a receiver hangs, and counts the abandoned delivery', async () => {
    const slow = await receiver();
    slow.stall = true;
    const { notifier: n, count } = notifier([{ url: slow.url(), secret: SECRET }], { stopTimeoutMs: 100 });
    await n.start();
    n.notify('cancelled', DEPLOYMENT, 'cancelled by user');
    await waitFor('the request to arrive', () => slow.pending === 1);
    await n.stop();
    expect(await count('cancelled', 'dropped')).toBe(1);
    expect(await count('cancelled', 'delivered')).toBe(0);
  });

  it('posts a Slack-format body', async () => {
    const r = await receiver();
    const { notifier: n, count } = notifier([{ url: r.url('/slack'), secret: SECRET, format: 'slack', events: ['rolled_back'] }]);
    await n.start();
    n.notify('active', DEPLOYMENT, 'not subscribed');
    n.notify('rolled_back', { ...DEPLOYMENT, status: 'failed', phase: 'health_check', status_reason: 'unhealthy' }, 'revision 2 keeps serving');
    await waitFor('the delivery', async () => (await count('rolled_back', 'delivered')) === 1);
    expect(r.received).toHaveLength(1);
    const got = r.received[0]!;
    expect(got.signatureValid).toBe(true);
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['deployer-event']).toBe('rolled_back');
    const body = JSON.parse(got.body) as { text: string };
    expect(Object.keys(body)).toEqual(['text']);
    expect(body.text).toMatch(/^\[deployer\] rolled_back · shop\/web revision 3 \(dep-7\) · status failed · phase health_check · reason: unhealthy · revision 2 keeps serving · at \S+Z$/);
  });
});
