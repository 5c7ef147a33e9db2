/**
 * What an operator's Prometheus sees (DESIGN.md 3.5, 3.6): the built daemon
 * (`node dist/cli/main.js run`) in a child process against a test database and
 * a PRIVATE dockerd, seeded with an orphan; its `/metrics` after the sweep that
 * removed it, linted by `promtool check metrics`; a real Prometheus on loopback
 * that scrapes it, loads `deploy/prometheus/alerts.yml` and answers through its
 * HTTP API; and the shipped files under `deploy/` (scrape config, alert rules,
 * Grafana dashboard) checked against the metrics the code registers.
 *
 * promtool and prometheus come from the Debian package `prometheus`. Without
 * them (or without a private dockerd) the tests that need them are skipped
 * loudly, except in CI, where they fail instead.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { Metrics } from '../../src/controller/metrics.js';
import { DEPLOYMENT_STATUSES, LABELS } from '../../src/types.js';
import { busyboxAvailable, importBusyboxImage } from '../support/busybox-image.js';
import { dockerdAvailable, startPrivateDockerd, type PrivateDockerd } from '../support/dockerd.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';


const ROOT = new URL('../../', import.meta.url).pathname;
const CLI = join(ROOT, 'dist/cli/main.js');
const SCRAPE_CONFIG = join(ROOT, 'deploy/prometheus/prometheus.yml');
const ALERT_RULES = join(ROOT, 'deploy/prometheus/alerts.yml');
const DASHBOARD = join(ROOT, 'deploy/grafana/deployer-controller.json');

/** Where Debian's `prometheus` package installs its binaries. */
const PROMTOOL = '/usr/bin/promtool';
const PROMETHEUS = '/usr/bin/prometheus';
/** The job name of `deploy/prometheus/prometheus.yml`, which the alert rules name too. */
const JOB = 'deployer-controller';

/** The alerts `deploy/prometheus/alerts.yml` must define, each with the metric its expression must read. */
const EXPECTED_ALERTS: Record<string, string> = {
  DeployerControllerDown: 'up',
  DeployerNoRecentSweep: 'deployer_last_sweep_timestamp_seconds',
  DeployerDriftPersisting: 'deployer_drift',
  DeployerZombiesFound: 'deployer_actions_total',
  DeployerDeletionGuardTripped: 'deployer_deletion_guard_trips_total',
  DeployerNoLeader: 'deployer_leader',
  DeployerDockerDown: 'deployer_up',
  DeployerDatabaseDown: 'deployer_up',
  DeployerReconcileErrors: 'deployer_reconcile_total',
};

/** Alerts that must stay inactive while one healthy daemon leads and sweeps. */
const OUTAGE_ALERTS = ['DeployerControllerDown', 'DeployerNoRecentSweep', 'DeployerNoLeader', 'DeployerDockerDown', 'DeployerDatabaseDown', 'DeployerDeletionGuardTripped', 'DeployerZombiesFound'];

function executable(path: string): boolean {
  try {
    accessSync(path, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function prometheusAvailable(): string | null {
  for (const binary of [PROMTOOL, PROMETHEUS]) {
    if (!executable(binary)) return `${binary} is missing (apt-get install -y --no-install-recommends prometheus)`;
  }
  return null;
}

const inCi = !['', '0', 'false'].includes((process.env.CI ?? '').trim().toLowerCase());
const promUnavailable = prometheusAvailable();
const engineUnavailable = dockerdAvailable() ?? busyboxAvailable();
const liveUnavailable = engineUnavailable ?? promUnavailable;
if (promUnavailable !== null && !inCi) console.warn(`SKIPPING promtool checks of deploy/prometheus: ${promUnavailable}`);
if (liveUnavailable !== null && !inCi) {
  console.warn(`SKIPPING the daemon-scraped-by-Prometheus tests (they need a private dockerd and Prometheus): ${liveUnavailable}`);
}

// ---------------------------------------------------------------------------
// Metric names, PromQL and the exposition format
// ---------------------------------------------------------------------------

/** Every metric family the daemon registers (ours and prom-client's process defaults), with its type. */
async function registeredFamilies(): Promise<Map<string, string>> {
  const metrics = new Metrics();
  return new Map((await metrics.registry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]));
}

/** The series names those families expose (`_bucket`, `_sum`, `_count` for histograms and summaries). */
function seriesNames(families: Map<string, string>): Set<string> {
  const names = new Set<string>();
  for (const [name, type] of families) {
    names.add(name);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) names.add(name + suffix);
  }
  return names;
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/**
 * The metric names a PromQL expression reads (Grafana variables allowed):
 * identifiers left once strings, label matchers, ranges, grouping clauses and
 * function calls are set aside.
 */
function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = [...stripped.matchAll(/(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)].map((m) => m[1]!);
  return [...new Set(names.filter((n) => !PROMQL_WORDS.has(n.toLowerCase())))];
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  samples: Sample[];
  help: Map<string, string>;
  type: Map<string, string>;
}

/** Parses the Prometheus text format (enough of it for prom-client's output). */
function parseExposition(text: string): Exposition {
  const out: Exposition = { samples: [], help: new Map(), type: new Map() };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      (meta[1] === 'HELP' ? out.help : out.type).set(meta[2]!, meta[3]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line);
    if (!sample) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const m of (sample[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1]!] = m[2]!.replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
    }
    const raw = sample[3]!;
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    out.samples.push({ name: sample[1]!, labels, value });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels`. */
function valueOf(exposition: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const matches = exposition.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (matches.length > 1) throw new Error(`${name}${JSON.stringify(labels)} matches ${matches.length} samples`);
  return matches[0]?.value;
}

// ---------------------------------------------------------------------------
// The shipped files
// ---------------------------------------------------------------------------

interface AlertRule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function alertRules(): AlertRule[] {
  const file = parseYaml(readFileSync(ALERT_RULES, 'utf8')) as { groups: Array<{ name: string; rules: AlertRule[] }> };
  return file.groups.flatMap((g) => g.rules);
}

interface DashboardTarget {
  expr?: string;
  refId: string;
}

interface DashboardPanel {
  type: string;
  title: string;
  targets?: DashboardTarget[];
  panels?: DashboardPanel[];
}

interface Dashboard {
  uid: string;
  title: string;
  panels: DashboardPanel[];
  templating: { list: Array<{ name: string; type: string; query?: string | { query: string } }> };
}

function dashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
}

/** Every PromQL query of the dashboard's panels, with the panel's title. */
function dashboardQueries(d: Dashboard): Array<{ panel: string; expr: string }> {
  const panels = d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  return panels.flatMap((p) => (p.targets ?? []).filter((t) => t.expr !== undefined).map((t) => ({ panel: p.title, expr: t.expr! })));
}

/** A dashboard query as Prometheus would receive it from Grafana. */
function withGrafanaVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('$__range', '5m')
    .replaceAll('$job', JOB)
    .replaceAll('$instance', '.+');
}

// ---------------------------------------------------------------------------
// Processes and HTTP
// ---------------------------------------------------------------------------

interface Exited {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end with `stdin`; never throws on a non-zero exit. */
function run(command: string, args: readonly string[], stdin = ''): Promise<Exited> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value, or fails with `what` and `context()`. */
async function waitFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, context: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? `\nlast error: ${lastError.message}` : '';
      throw new Error(`timed out waiting for ${what}${cause}\n${context()}`);
    }
    await sleep(250);
  }
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
}

/** A child process this file started, with its output kept for error messages. */
interface Started {
  child: ChildProcess;
  pid: number;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function start(command: string, args: readonly string[], env: NodeJS.ProcessEnv, cwd?: string): Started {
  const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  if (child.pid === undefined) throw new Error(`could not start ${command}`);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return { child, pid: child.pid, output: () => output.split('\n').slice(-40).join('\n'), exited };
}

function running(p: Started | undefined): p is Started {
  return p !== undefined && p.child.exitCode === null && p.child.signalCode === null;
}

/** SIGTERM to the pid this file started, SIGKILL after `timeoutMs`. */
async function stopProcess(p: Started | undefined, timeoutMs = 15_000): Promise<void> {
  if (!running(p)) return;
  process.kill(p.pid, 'SIGTERM');
  const done = await Promise.race([p.exited.then(() => true), sleep(timeoutMs).then(() => false)]);
  if (!done && running(p)) {
    process.kill(p.pid, 'SIGKILL');
    await p.exited;
  }
}

interface PromVector {
  status: string;
  data: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

interface PromRules {
  status: string;
  data: { groups: Array<{ name: string; file: string; rules: Array<{ name: string; type: string; health: string; state?: string; query: string; lastError?: string }> }> };
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

describe('deploy/ files: dashboard and alert rules against the registered metrics', () => {
  let known: Set<string>;
  beforeAll(async () => {
    known = seriesNames(await registeredFamilies());
  });

  it('the PromQL name extractor finds metric names and nothing else', () => {
    expect(
      metricNamesIn('sum by (job, kind) (rate(deployer_actions_total{result="error", x=~"$job"}[$__rate_interval])) / on (job) group_left () max(up) > 0.5e3 and time() - foo:bar offset 5m'),
    ).toEqual(['deployer_actions_total', 'up', 'foo:bar']);
  });

  it('the Grafana dashboard parses and its queries read only metrics the daemon registers', () => {
    const d = dashboard();
    expect(d.uid).toBe('deployer-controller');
    expect(d.title).toBeTruthy();
    const queries = dashboardQueries(d);
    expect(queries.length).toBeGreaterThan(10);
    const used = new Set<string>();
    for (const { panel, expr } of queries) {
      const names = metricNamesIn(expr);
      expect(names.length, `${panel}: ${expr}`).toBeGreaterThan(0);
      for (const name of names) {
        expect(known.has(name), `${panel}: ${name} is not registered in src/controller/metrics.ts nor a process default`).toBe(true);
        used.add(name);
      }
    }
    for (const variable of d.templating.list.filter((v) => v.type === 'query')) {
      const query = typeof variable.query === 'string' ? variable.query : (variable.query?.query ?? '');
      const metric = /^label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(query)?.[1];
      expect(metric && known.has(metric), `variable ${variable.name}: ${query}`).toBe(true);
    }
    for (const name of [
      'deployer_sweep_duration_seconds_bucket',
      'deployer_last_sweep_timestamp_seconds',
      'deployer_drift',
      'deployer_actions_total',
      'deployer_deployments',
      'deployer_leader',
      'deployer_runtime_request_duration_seconds_bucket',
      'deployer_up',
      'deployer_workqueue_depth',
      'deployer_reconcile_total',
    ]) {
      expect(used.has(name), `the dashboard shows ${name}`).toBe(true);
    }
  });

  it('alerts.yml defines the alerts, each with a severity, a summary and a description, over registered metrics', () => {
    const rules = alertRules();
    expect(rules.map((r) => r.alert).sort()).toEqual(Object.keys(EXPECTED_ALERTS).sort());
    for (const rule of rules) {
      const name = rule.alert!;
      expect(['critical', 'warning'], name).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, name).toEqual(expect.stringMatching(/\S/));
      expect(rule.annotations?.description, name).toEqual(expect.stringMatching(/\S/));
      const names = metricNamesIn(rule.expr);
      expect(names, name).toContain(EXPECTED_ALERTS[name]);
      for (const metric of names) expect(known.has(metric) || metric === 'up', `${name} reads ${metric}`).toBe(true);
    }
  });

  it('prometheus.yml scrapes the daemon on its default address and loads alerts.yml', () => {
    const config = parseYaml(readFileSync(SCRAPE_CONFIG, 'utf8')) as {
      rule_files: string[];
      scrape_configs: Array<{ job_name: string; metrics_path?: string; static_configs: Array<{ targets: string[] }> }>;
    };
    expect(config.rule_files).toEqual(['alerts.yml']);
    const job = config.scrape_configs.find((c) => c.job_name === JOB);
    expect(job?.metrics_path ?? '/metrics').toBe('/metrics');
    expect(job?.static_configs.flatMap((s) => s.targets)).toEqual(['127.0.0.1:9797']);
  });
});

describe.skipIf(promUnavailable !== null && !inCi)('promtool accepts deploy/prometheus', () => {
  beforeAll(() => {
    if (promUnavailable !== null) throw new Error(`CI must have promtool: ${promUnavailable}`);
  });

  it('promtool check rules alerts.yml exits 0', async () => {
    const r = await run(PROMTOOL, ['check', 'rules', ALERT_RULES]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${Object.keys(EXPECTED_ALERTS).length} rules found`);
  });

  it('promtool check config prometheus.yml exits 0 and finds the rule file', async () => {
    const r = await run(PROMTOOL, ['check', 'config', SCRAPE_CONFIG]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('1 rule files found');
  });

  it('promtool check rules fails on a broken rule (the check can fail)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'deployer-rules-'));
    try {
      const broken = join(dir, 'broken.yml');
      writeFileSync(broken, 'groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum by (job (deployer_leader)\n');
      const r = await run(PROMTOOL, ['check', 'rules', broken]);
      expect(r.code).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(liveUnavailable !== null && !inCi)('the daemon scraped by promtool and a real Prometheus', { timeout: 120_000 }, () => {
  let dockerd: PrivateDockerd | undefined;
  let docker: Docker;
  let t: TestDatabase | undefined;
  let tmp: string | undefined;
  let daemon: Started | undefined;
  let prometheus: Started | undefined;
  let daemonPort: number;
  let promBase: string;
  let orphanContainer: string | undefined;
  let startedAt: number;
  const orphanId = `orphan-${randomBytes(4).toString('hex')}`;

  const context = () =>
    `--- daemon output ---\n${daemon?.output() ?? '(not started)'}\n--- prometheus output ---\n${prometheus?.output() ?? '(not started)'}`;

  beforeAll(async () => {
    if (liveUnavailable !== null) throw new Error(`CI must be able to run a private dockerd and Prometheus: ${liveUnavailable}`);
    dockerd = await startPrivateDockerd();
    docker = new Docker({ socketPath: dockerd.socketPath });
    const image = await importBusyboxImage(docker);
    t = await createTestDatabase('prometheus');
    tmp = mkdtempSync(join(tmpdir(), 'deployer-prometheus-'));

    // The orphan: a failed deployment whose container still runs.
    await t.db
      .insertInto('deployments')
      .values({ id: orphanId, project: 'shop', service: 'web', revision: 1, spec: JSON.stringify({ image }), spec_hash: 'h', status: 'failed' })
      .execute();
    const container = await docker.createContainer({
      Image: image,
      Cmd: ['sleep', '600'],
      Labels: {
        [LABELS.deploymentId]: orphanId,
        [LABELS.managedBy]: 'deployer-controller',
        [LABELS.project]: 'shop',
        [LABELS.service]: 'web',
        [LABELS.revision]: '1',
        [LABELS.replica]: '0',
      },
      HostConfig: { NetworkMode: 'none' },
    });
    orphanContainer = container.id;
    await container.start();

    daemonPort = await freePort();
    startedAt = Math.floor(Date.now() / 1000);
    daemon = start(process.execPath, [CLI, 'run'], {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      LC_ALL: 'C',
      DATABASE_URL: t.url,
      DOCKER_HOST: dockerd.dockerHost,
      DEPLOYER_STATE_DIR: join(tmp, 'unused-state'),
      DEPLOYER_METRICS_ADDRESS: `127.0.0.1:${daemonPort}`,
      DEPLOYER_RESYNC: '1s',
      DEPLOYER_LEASE_DURATION: '3s',
    });
  }, 180_000);

  afterAll(async () => {
    // Only what this file started, by pid.
    await stopProcess(prometheus);
    await stopProcess(daemon);
    if (orphanContainer) await docker.getContainer(orphanContainer).remove({ force: true }).catch(() => undefined);
    await t?.drop();
    await dockerd?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 90_000);

  /** Scrapes the daemon's /metrics. */
  async function scrape(): Promise<string> {
    if (!running(daemon)) throw new Error('the daemon is not running');
    const { status, body } = await get(`http://127.0.0.1:${daemonPort}/metrics`);
    if (status !== 200) throw new Error(`GET /metrics answered ${status}`);
    return body;
  }

  /** A scrape taken once a sweep after the removal saw no orphan left. */
  let afterRemoval: string;

  async function settled(): Promise<string> {
    afterRemoval ??= await waitFor(
      'a sweep that removed the orphan, then one that found no orphan',
      60_000,
      async () => {
        if (!running(daemon)) throw new Error('the daemon exited');
        const body = await scrape();
        const m = parseExposition(body);
        const removed = valueOf(m, 'deployer_actions_total', { action: 'remove_container', result: 'applied' }) === 1;
        return removed && valueOf(m, 'deployer_drift', { kind: 'orphan' }) === 0 ? body : undefined;
      },
      context,
    );
    return afterRemoval;
  }

  async function query(expr: string): Promise<PromVector['data']['result']> {
    const { status, body } = await get(`${promBase}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const parsed = JSON.parse(body) as PromVector & { error?: string };
    if (status !== 200 || parsed.status !== 'success') throw new Error(`query ${expr}: ${status} ${parsed.error ?? body}`);
    return parsed.data.result;
  }

  async function rules(): Promise<PromRules['data']['groups'][number]['rules']> {
    const { status, body } = await get(`${promBase}/api/v1/rules`);
    if (status !== 200) throw new Error(`GET /api/v1/rules answered ${status}`);
    return (JSON.parse(body) as PromRules).data.groups.flatMap((g) => g.rules);
  }

  it('after the sweep removed the orphan, /metrics has the series and values of DESIGN.md 3.6', async () => {
    const body = await settled();
    const m = parseExposition(body);

    await expect(docker.getContainer(orphanContainer!).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect(valueOf(m, 'deployer_actions_total', { action: 'remove_container', result: 'applied' })).toBe(1);
    for (const kind of ['orphan', 'zombie', 'missing', 'interrupted']) expect(valueOf(m, 'deployer_drift', { kind }), kind).toBe(0);
    expect(valueOf(m, 'deployer_last_sweep_timestamp_seconds')).toBeGreaterThanOrEqual(startedAt);
    expect(valueOf(m, 'deployer_sweep_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(valueOf(m, 'deployer_sweep_duration_seconds_bucket', { le: '+Inf' })).toBe(valueOf(m, 'deployer_sweep_duration_seconds_count'));
    expect(valueOf(m, 'deployer_leader')).toBe(1);
    expect(valueOf(m, 'deployer_up', { dependency: 'database' })).toBe(1);
    expect(valueOf(m, 'deployer_up', { dependency: 'docker' })).toBe(1);
    expect(valueOf(m, 'deployer_deployments', { status: 'failed' })).toBe(1);
    for (const status of DEPLOYMENT_STATUSES.filter((s) => s !== 'failed')) expect(valueOf(m, 'deployer_deployments', { status }), status).toBe(0);
    expect(valueOf(m, 'deployer_reconcile_total', { reconciler: 'sweep', result: 'success' })).toBeGreaterThanOrEqual(2);
    expect(valueOf(m, 'deployer_deletion_guard_trips_total')).toBe(0);
    expect(m.samples.filter((s) => s.name === 'deployer_runtime_request_duration_seconds_count').map((s) => s.labels.op)).toContain('list_containers');

    // Node's process defaults.
    for (const name of ['process_cpu_seconds_total', 'process_start_time_seconds', 'process_resident_memory_bytes', 'process_open_fds']) {
      expect(valueOf(m, name), name).toEqual(expect.any(Number));
    }

    // Every family the code registers is exposed, with HELP and the type it was registered with.
    const families = await registeredFamilies();
    for (const [name, type] of families) {
      if (!name.startsWith('deployer_')) continue;
      expect(m.help.get(name), `HELP ${name}`).toEqual(expect.stringMatching(/\S/));
      expect(m.type.get(name), `TYPE ${name}`).toBe(type);
    }
    for (const name of m.type.keys()) if (name.startsWith('deployer_')) expect(families.has(name), `${name} is registered in metrics.ts`).toBe(true);

    // Low cardinality: no deployment or container id anywhere, in label values or otherwise.
    expect(body).not.toContain(orphanId);
    expect(body).not.toContain(orphanContainer!.slice(0, 12));
    for (const s of m.samples) {
      for (const value of Object.values(s.labels)) expect(value === orphanId || value.startsWith(orphanContainer!.slice(0, 12)), `${s.name} ${value}`).toBe(false);
    }
  });

  it('promtool check metrics accepts the scraped text, the deployer_ families and the whole of it', async () => {
    const body = await settled();
    const ours = body
      .split('\n')
      .filter((line) => /^(# (HELP|TYPE) )?deployer_/.test(line))
      .join('\n');
    expect(ours).toContain('# TYPE deployer_drift gauge');
    const r = await run(PROMTOOL, ['check', 'metrics'], `${ours}\n`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((r.stdout + r.stderr).trim()).toBe('');

    // The whole scrape, process defaults included (the daemon drops prom-client's gauges named like counters).
    const whole = await run(PROMTOOL, ['check', 'metrics'], body);
    expect(whole.code, whole.stdout + whole.stderr).toBe(0);
    expect((whole.stdout + whole.stderr).trim()).toBe('');

    // And it does fail on a metric that breaks the conventions.
    const bad = await run(PROMTOOL, ['check', 'metrics'], '# HELP deployer_bad a counter without _total\n# TYPE deployer_bad counter\ndeployer_bad 1\n');
    expect(bad.code).not.toBe(0);
  });

  it('a real Prometheus on loopback scrapes the daemon and answers deployer_drift through its HTTP API', async () => {
    await settled();
    const shipped = parseYaml(readFileSync(SCRAPE_CONFIG, 'utf8')) as {
      global?: Record<string, unknown>;
      alerting?: unknown;
      scrape_configs: Array<Record<string, unknown> & { job_name: string }>;
    };
    // The shipped job, pointed at this daemon and sped up; the shipped rules.
    const job = shipped.scrape_configs.find((c) => c.job_name === JOB);
    if (!job) throw new Error(`no ${JOB} job in ${SCRAPE_CONFIG}`);
    const config = {
      global: { ...shipped.global, scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [ALERT_RULES],
      scrape_configs: [{ ...job, scrape_interval: '1s', scrape_timeout: '1s', static_configs: [{ targets: [`127.0.0.1:${daemonPort}`] }] }],
    };
    const configFile = join(tmp!, 'prometheus.yml');
    writeFileSync(configFile, stringifyYaml(config));

    const promPort = await freePort();
    promBase = `http://127.0.0.1:${promPort}`;
    prometheus = start(
      PROMETHEUS,
      [`--config.file=${configFile}`, `--storage.tsdb.path=${join(tmp!, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`],
      { PATH: '/usr/bin:/bin', LC_ALL: 'C' },
      tmp,
    );
    await waitFor('Prometheus to be ready', 30_000, async () => {
      if (!running(prometheus)) throw new Error('prometheus exited');
      return (await get(`${promBase}/-/ready`)).status === 200 ? true : undefined;
    }, context);

    const drift = await waitFor('deployer_drift with its kind label in Prometheus', 60_000, async () => {
      const result = await query('deployer_drift');
      return result.length > 0 && result.every((r) => r.metric.kind) ? result : undefined;
    }, context);
    const byKind = Object.fromEntries(drift.map((r) => [r.metric.kind, Number(r.value[1])]));
    expect(byKind).toEqual({ orphan: 0, zombie: 0, missing: 0, interrupted: 0 });
    for (const r of drift) expect(r.metric).toMatchObject({ __name__: 'deployer_drift', job: JOB, instance: `127.0.0.1:${daemonPort}` });

    const targets = JSON.parse((await get(`${promBase}/api/v1/targets`)).body) as { data: { activeTargets: Array<{ health: string; scrapeUrl: string }> } };
    expect(targets.data.activeTargets).toEqual([expect.objectContaining({ health: 'up', scrapeUrl: `http://127.0.0.1:${daemonPort}/metrics` })]);

    const one = async (expr: string) => (await query(expr)).map((r) => Number(r.value[1]));
    expect(await one('deployer_actions_total{action="remove_container",result="applied"}')).toEqual([1]);
    expect(await one('deployer_leader')).toEqual([1]);
    expect(await one('deployer_deployments{status="failed"}')).toEqual([1]);
    expect(await one('sum(deployer_up)')).toEqual([2]);
  });

  it('the alert rules load into that Prometheus, evaluate cleanly and stay inactive for a healthy daemon', async () => {
    if (!running(prometheus)) throw new Error('Prometheus is not running (the previous test starts it)');
    const loaded = await waitFor('every rule evaluated healthy with the outage alerts inactive', 60_000, async () => {
      const list = await rules();
      const healthy = list.length > 0 && list.every((r) => r.health === 'ok');
      const quiet = list.filter((r) => OUTAGE_ALERTS.includes(r.name)).every((r) => r.state === 'inactive');
      return healthy && quiet ? list : undefined;
    }, context);
    expect(loaded.map((r) => r.name).sort()).toEqual(Object.keys(EXPECTED_ALERTS).sort());
    for (const r of loaded) {
      expect(r.type, r.name).toBe('alerting');
      expect(r.lastError ?? '', r.name).toBe('');
    }
    const { body } = await get(`${promBase}/api/v1/rules`);
    expect((JSON.parse(body) as PromRules).data.groups.map((g) => g.file)).toEqual([ALERT_RULES]);
  });

  it('every dashboard query evaluates in that Prometheus, and those that are not about errors return data', async () => {
    if (!running(prometheus)) throw new Error('Prometheus is not running (the previous test starts it)');
    for (const { panel, expr } of dashboardQueries(dashboard())) {
      const promql = withGrafanaVariables(expr);
      // Syntax and evaluation: Prometheus answers `success` (query throws otherwise).
      await query(promql);
      // No reconcile failed, so the error series do not exist.
      if (/result="error"/.test(expr)) continue;
      await waitFor(`data for "${panel}": ${promql}`, 30_000, async () => ((await query(promql)).length > 0 ? true : undefined), context);
    }
  });

  it('when the daemon stops, the target-down and no-leader alerts go pending', async () => {
    if (!running(prometheus)) throw new Error('Prometheus is not running (the previous test starts it)');
    const stopping = daemon!;
    process.kill(stopping.pid, 'SIGTERM');
    const result = await Promise.race([stopping.exited, sleep(30_000).then(() => 'timeout' as const)]);
    expect(result, context()).toEqual({ code: 0, signal: null });

    const expressions = Object.fromEntries(alertRules().map((r) => [r.alert!, r.expr]));
    const down = await waitFor('DeployerControllerDown and DeployerNoLeader to leave inactive', 60_000, async () => {
      const list = await rules();
      const state = (name: string) => list.find((r) => r.name === name)?.state;
      return ['pending', 'firing'].includes(state('DeployerControllerDown') ?? '') && ['pending', 'firing'].includes(state('DeployerNoLeader') ?? '') ? list : undefined;
    }, context);
    expect(down.find((r) => r.name === 'DeployerDockerDown')?.state).toBe('inactive');
    expect(await query(expressions.DeployerControllerDown!)).toEqual([expect.objectContaining({ metric: expect.objectContaining({ job: JOB, instance: `127.0.0.1:${daemonPort}` }) })]);
    expect(await query(expressions.DeployerNoLeader!)).toEqual([expect.objectContaining({ metric: { job: JOB } })]);
  });
});
