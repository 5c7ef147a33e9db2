import { createServer, type Server } from 'node:http';
import type { Runnable } from './controller.js';
import type { Metrics } from './metrics.js';

type CheckStatus = 'healthy' | 'unhealthy';

/** What the health endpoints ask of the daemon. */
export interface HealthSources {
  pingDatabase(): Promise<number>;
  pingRuntime(): Promise<number>;
  leader(): { status: 'leader' | 'follower'; holder: string };
  /** Seconds since the last completed sweep, or null before the first. */
  lastSweepAgeSeconds(): number | null;
  /** False when the loop has been stuck past its own timeouts. */
  loopAlive(): boolean;
  /** A sweep older than this makes the daemon `degraded`. */
  staleAfterSeconds: () => number;
}

const CHECK_TIMEOUT_MS = 2_000;

async function check(fn: () => Promise<number>): Promise<{ status: CheckStatus; latency_ms: number | null; error?: string }> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const latency = await Promise.race([
      fn(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS}ms`)), CHECK_TIMEOUT_MS))),
    ]);
    return { status: 'healthy', latency_ms: Math.round(latency * 100) / 100 };
  } catch (err) {
    return { status: 'unhealthy', latency_ms: null, error: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

/** The health report of `/readyz` and `/healthz` (DESIGN.md 3.5). */
export async function healthReport(sources: HealthSources) {
  const [database, docker] = await Promise.all([check(() => sources.pingDatabase()), check(() => sources.pingRuntime())]);
  const age = sources.lastSweepAgeSeconds();
  const stale = age === null || age > sources.staleAfterSeconds();
  const status = database.status === 'unhealthy' || docker.status === 'unhealthy' ? 'unhealthy' : stale ? 'degraded' : 'healthy';
  return {
    status,
    timestamp: new Date().toISOString(),
    checks: {
      database,
      docker,
      leader: sources.leader(),
      last_sweep: { age_seconds: age === null ? null : Math.round(age * 10) / 10 },
    },
  };
}

/**
 * The daemon's HTTP endpoints: `/metrics`, `/livez`, `/readyz`, `/healthz`.
 * They never wait on a sweep: a hung engine slows only its own check, which
 * has a deadline.
 */
export class HttpServer implements Runnable {
  private server: Server | undefined;
  /** The bound port (useful with port 0). */
  port = 0;

  constructor(
    private readonly address: string,
    private readonly metrics: Metrics,
    private readonly health: HealthSources,
  ) {}

  async start(): Promise<void> {
    if (this.server) return;
    const separator = this.address.lastIndexOf(':');
    const host = this.address.slice(0, separator).replace(/^\[|\]$/g, '');
    const port = Number(this.address.slice(separator + 1));
    const server = createServer((req, res) => {
      void this.handle(req.url ?? '/', req.method ?? 'GET').then(
        ({ status, type, body }) => {
          res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
          res.end(body);
        },
        (err: Error) => {
          res.writeHead(500, { 'Content-Type': 'text/plain' });
          res.end(err.message);
        },
      );
    });
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const bound = server.address();
    this.port = typeof bound === 'object' && bound ? bound.port : port;
    this.server = server;
  }

  private async handle(url: string, method: string): Promise<{ status: number; type: string; body: string }> {
    if (method !== 'GET' && method !== 'HEAD') return { status: 405, type: 'text/plain', body: 'method not allowed\n' };
    const path = url.split('?')[0];
    switch (path) {
      case '/metrics':
        return { status: 200, type: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() };
      case '/livez': {
        const alive = this.health.loopAlive();
        return { status: alive ? 200 : 503, type: 'text/plain', body: alive ? 'ok\n' : 'loop stuck\n' };
      }
      case '/readyz':
      case '/healthz': {
        const report = await healthReport(this.health);
        return { status: report.status === 'unhealthy' ? 503 : 200, type: 'application/json', body: JSON.stringify(report) + '\n' };
      }
      default:
        return { status: 404, type: 'text/plain', body: 'not found\n' };
    }
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
