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
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsConstants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { Metrics } from '../../src/controller/metrics.js';
import { DEPLOYMENT_STATUSES, LABELS } from '../../src/types.js';
import type { PrivateDockerd } from '../support/dockerd.js';
import { startEngine } from '../support/engine.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import {
  cleanEnv,
  DOCKER_UNAVAILABLE,
  freePort,
  killChildren,
  requireAvailable,
  ROOT,
  runProcess,
  skipReason,
  startCli,
  startProcess,
  waitFor,
  type BackgroundProcess,
  type WaitOptions,
} from '../support/processes.js';

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

const promUnavailable = prometheusAvailable();
const liveUnavailable = DOCKER_UNAVAILABLE ?? promUnavailable;
const skipPromtool = skipReason('promtool checks of deploy/prometheus', promUnavailable);
const skipLive = skipReason('the daemon-scraped-by-Prometheus tests (they need a private dockerd and Prometheus)', liveUnavailable);

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

/** The environment of promtool and prometheus. */
const TOOL_ENV = { PATH: '/usr/bin:/bin', LC_ALL: 'C' };

/** Runs promtool to its end with `stdin`; never throws on a non-zero exit. */
function promtool(args: readonly string[], stdin?: string) {
  return runProcess(PROMTOOL, args, { env: TOOL_ENV, stdin });
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: await res.text() };
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

describe.skipIf(skipPromtool !== null)('promtool accepts deploy/prometheus', () => {
  beforeAll(() => {
    requireAvailable(promUnavailable, 'promtool');
  });

  it('promtool check rules alerts.yml exits 0', async () => {
    const r = await promtool(['check', 'rules', ALERT_RULES]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${Object.keys(EXPECTED_ALERTS).length} rules found`);
  });

  it('promtool check config prometheus.yml exits 0 and finds the rule file', async () => {
    const r = await promtool(['check', 'config', SCRAPE_CONFIG]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('1 rule files found');
  });

  it('promtool check rules fails on a broken rule (the check can fail)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'deployer-rules-'));
    try {
      const broken = join(dir, 'broken.yml');
      writeFileSync(broken, 'groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum by (job (deployer_leader)\n');
      const r = await promtool(['check', 'rules', broken]);
      expect(r.code).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(skipLive !== null)('the daemon scraped by promtool and a real Prometheus', { timeout: 120_000 }, () => {
  let dockerd: PrivateDockerd | undefined;
  let docker: Docker;
  let t: TestDatabase | undefined;
  let tmp: string | undefined;
  let daemon: BackgroundProcess | undefined;
  let prometheus: BackgroundProcess | undefined;
  let daemonPort: number;
  let promBase: string;
  let orphanContainer: string | undefined;
  let startedAt: number;
  const orphanId = `orphan-${randomBytes(4).toString('hex')}`;

  const context = () => `${daemon?.tail(40) ?? '(daemon not started)'}\n${prometheus?.tail(40) ?? '(prometheus not started)'}`;
  /** How long to wait for something, failing with both processes' output. */
  const within = (timeoutMs: number): WaitOptions => ({ timeoutMs, everyMs: 250, context });

  beforeAll(async () => {
    requireAvailable(liveUnavailable, 'a private dockerd and Prometheus');
    let image: string;
    ({ dockerd, docker, image } = await startEngine());
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
    daemon = startCli(
      ['run'],
      cleanEnv({
        DATABASE_URL: t.url,
        DOCKER_HOST: dockerd.dockerHost,
        DEPLOYER_STATE_DIR: join(tmp, 'unused-state'),
        DEPLOYER_METRICS_ADDRESS: `127.0.0.1:${daemonPort}`,
        DEPLOYER_RESYNC: '1s',
        DEPLOYER_LEASE_DURATION: '3s',
      }),
    );
  }, 180_000);

  afterAll(async () => {
    // Only what this file started, by pid.
    await prometheus?.stop(15_000);
    await daemon?.stop(15_000);
    killChildren();
    if (orphanContainer) await docker.getContainer(orphanContainer).remove({ force: true }).catch(() => undefined);
    await t?.drop();
    await dockerd?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 90_000);

  /** Scrapes the daemon's /metrics. */
  async function scrape(): Promise<string> {
    if (!daemon?.running()) throw new Error('the daemon is not running');
    const { status, body } = await get(`http://127.0.0.1:${daemonPort}/metrics`);
    if (status !== 200) throw new Error(`GET /metrics answered ${status}`);
    return body;
  }

  /** A scrape taken once a sweep after the removal saw no orphan left. */
  let afterRemoval: string;

  async function settled(): Promise<string> {
    afterRemoval ??= await waitFor(
      'a sweep that removed the orphan, then one that found no orphan',
      async () => {
        if (!daemon?.running()) throw new Error('the daemon exited');
        const body = await scrape();
        const m = parseExposition(body);
        const removed = valueOf(m, 'deployer_actions_total', { action: 'remove_container', result: 'applied' }) === 1;
        return removed && valueOf(m, 'deployer_drift', { kind: 'orphan' }) === 0 ? body : undefined;
      },
      within(60_000),
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
    const r = await promtool(['check', 'metrics'], `${ours}\n`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect((r.stdout + r.stderr).trim()).toBe('');

    // The whole scrape, process defaults included (the daemon drops prom-client's gauges named like counters).
    const whole = await promtool(['check', 'metrics'], body);
    expect(whole.code, whole.stdout + whole.stderr).toBe(0);
    expect((whole.stdout + whole.stderr).trim()).toBe('');

    // And it does fail on a metric that breaks the conventions.
    const bad = await promtool(['check', 'metrics'], '# HELP deployer_bad a counter without _total\n# TYPE deployer_bad counter\ndeployer_bad 1\n');
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
    prometheus = startProcess(
      PROMETHEUS,
      [`--config.file=${configFile}`, `--storage.tsdb.path=${join(tmp!, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`],
      TOOL_ENV,
      { cwd: tmp },
    );
    await waitFor('Prometheus to be ready', async () => {
      if (!prometheus?.running()) throw new Error('prometheus exited');
      return (await get(`${promBase}/-/ready`)).status === 200;
    }, within(30_000));

    const drift = await waitFor('deployer_drift with its kind label in Prometheus', async () => {
      const result = await query('deployer_drift');
      return result.length > 0 && result.every((r) => r.metric.kind) ? result : undefined;
    }, within(60_000));
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
    if (!prometheus?.running()) throw new Error('Prometheus is not running (the previous test starts it)');
    const loaded = await waitFor('every rule evaluated healthy with the outage alerts inactive', async () => {
      const list = await rules();
      const healthy = list.length > 0 && list.every((r) => r.health === 'ok');
      const quiet = list.filter((r) => OUTAGE_ALERTS.includes(r.name)).every((r) => r.state === 'inactive');
      return healthy && quiet ? list : undefined;
    }, within(60_000));
    expect(loaded.map((r) => r.name).sort()).toEqual(Object.keys(EXPECTED_ALERTS).sort());
    for (const r of loaded) {
      expect(r.type, r.name).toBe('alerting');
      expect(r.lastError ?? '', r.name).toBe('');
    }
    const { body } = await get(`${promBase}/api/v1/rules`);
    expect((JSON.parse(body) as PromRules).data.groups.map((g) => g.file)).toEqual([ALERT_RULES]);
  });

  it('every dashboard query evaluates in that Prometheus, and those that are not about errors return data', async () => {
    if (!prometheus?.running()) throw new Error('Prometheus is not running (the previous test starts it)');
    for (const { panel, expr } of dashboardQueries(dashboard())) {
      const promql = withGrafanaVariables(expr);
      // Syntax and evaluation: Prometheus answers `success` (query throws otherwise).
      await query(promql);
      // No reconcile failed, so the error series do not exist.
      if (/result="error"/.test(expr)) continue;
      await waitFor(`data for "${panel}": ${promql}`, async () => (await query(promql)).length > 0, within(30_000));
    }
  });

  it('when the daemon stops, the target-down and no-leader alerts go pending', async () => {
    if (!prometheus?.running()) throw new Error('Prometheus is not running (the previous test starts it)');
    // SIGTERM, and SIGKILL (which fails the expectation) if it has not exited within 30 s.
    const result = await daemon!.stop(30_000);
    expect(result, context()).toEqual({ code: 0, signal: null });

    const expressions = Object.fromEntries(alertRules().map((r) => [r.alert!, r.expr]));
    const down = await waitFor('DeployerControllerDown and DeployerNoLeader to leave inactive', async () => {
      const list = await rules();
      const state = (name: string) => list.find((r) => r.name === name)?.state;
      return ['pending', 'firing'].includes(state('DeployerControllerDown') ?? '') && ['pending', 'firing'].includes(state('DeployerNoLeader') ?? '') ? list : undefined;
    }, within(60_000));
    expect(down.find((r) => r.name === 'DeployerDockerDown')?.state).toBe('inactive');
    expect(await query(expressions.DeployerControllerDown!)).toEqual([expect.objectContaining({ metric: expect.objectContaining({ job: JOB, instance: `127.0.0.1:${daemonPort}` }) })]);
    expect(await query(expressions.DeployerNoLeader!)).toEqual([expect.objectContaining({ metric: { job: JOB } })]);
  });
});
