/**
 * How get, describe and watch print deployments: ages, the STUCK marker,
 * colour only when asked for, the progress bar and watch lines, filters.
 */
import { describe, expect, it } from 'vitest';
import { deploymentFilter, parseStatuses } from '../../src/cli/commands/deployments.js';
import type { DeploymentView } from '../../src/cli/commands/deployments-query.js';
import { formatDeploymentDetail, formatDeploymentTable, formatDeploymentYaml, humanAge, stuckFor } from '../../src/cli/commands/deployments-view.js';
import { colorEnabled, type CommandIo } from '../../src/cli/commands/io.js';
import { finalLine, progressBar, watchBar, watchLine } from '../../src/cli/commands/watch.js';
import { parseManifests } from '../../src/manifest/manifest.js';

const NOW = new Date('2025-06-01T12:00:00.000Z');
const HOUR = 3_600_000;
const ago = (ms: number) => new Date(NOW.getTime() - ms);

function row(overrides: Partial<DeploymentView> = {}): DeploymentView {
  return {
    id: 'shop.web.r1',
    project: 'shop',
    service: 'web',
    revision: 1,
    spec: { image: 'web:1', replicas: 2 },
    specHash: 'abc',
    status: 'active',
    phase: null,
    progress: { step: 6, total: 6, percent: 100, message: 'rollout complete' },
    executor: 'controller',
    owner: 'host:1',
    attempts: 1,
    heartbeatAt: null,
    startedAt: ago(3 * HOUR),
    finishedAt: null,
    statusReason: null,
    version: 9,
    createdAt: ago(3 * HOUR),
    updatedAt: ago(HOUR),
    ...overrides,
  };
}

describe('humanAge', () => {
  it.each([
    [-5_000, '<invalid>'],
    [0, '0s'],
    [45_000, '45s'],
    [119_000, '119s'],
    [5 * 60_000 + 3_000, '5m3s'],
    [5 * 60_000, '5m'],
    [40 * 60_000 + 59_000, '40m'],
    [7 * HOUR + 12 * 60_000, '7h12m'],
    [7 * HOUR, '7h'],
    [20 * HOUR + 30 * 60_000, '20h'],
    [3 * 24 * HOUR + 4 * HOUR, '3d4h'],
    [30 * 24 * HOUR, '30d'],
    [(2 * 365 + 10) * 24 * HOUR, '2y10d'],
  ])('%d ms -> %s', (ms, text) => {
    expect(humanAge(ms)).toBe(text);
  });
});

describe('stuckFor', () => {
  it('counts from started_at, or created_at when it never started, past stuckTimeout only', () => {
    expect(stuckFor(row({ status: 'deploying', startedAt: ago(7 * HOUR), createdAt: ago(8 * HOUR) }), NOW, 6 * HOUR)).toBe(7 * HOUR);
    expect(stuckFor(row({ status: 'pending', startedAt: null, createdAt: ago(6 * HOUR + 1) }), NOW, 6 * HOUR)).toBe(6 * HOUR + 1);
    expect(stuckFor(row({ status: 'deploying', startedAt: ago(5 * HOUR) }), NOW, 6 * HOUR)).toBeUndefined();
    expect(stuckFor(row({ status: 'active', startedAt: ago(70 * HOUR) }), NOW, 6 * HOUR)).toBeUndefined();
    expect(stuckFor(row({ status: 'failed', startedAt: ago(70 * HOUR) }), NOW, 6 * HOUR)).toBeUndefined();
  });
});

describe('formatDeploymentTable', () => {
  const rows = [
    row(),
    row({ id: 'shop.web.r2', revision: 2, status: 'deploying', phase: 'health_check', progress: { step: 4, total: 6, percent: 50, message: 'waiting' }, startedAt: ago(7 * HOUR), createdAt: ago(7 * HOUR) }),
    row({ id: 'shop.api.r1', service: 'api', status: 'pending', phase: null, progress: null, startedAt: null, createdAt: ago(120_000) }),
  ];

  it('aligns columns and marks rollouts past stuckTimeout, without colour', () => {
    expect(formatDeploymentTable(rows, { now: NOW, stuckTimeoutMs: 6 * HOUR, color: false })).toBe(
      [
        'ID           SERVICE   REV  STATUS     PHASE         PROGRESS  AGE  STUCK',
        'shop.web.r1  shop/web  1    active     -             100%      3h',
        'shop.web.r2  shop/web  2    deploying  health_check  50%       7h   STUCK 7h',
        'shop.api.r1  shop/api  1    pending    -             -         2m',
        '',
      ].join('\n'),
    );
  });

  it('paints active rows green and the STUCK marker red when colour is on', () => {
    const text = formatDeploymentTable(rows, { now: NOW, stuckTimeoutMs: 6 * HOUR, color: true });
    const lines = text.split('\n');
    expect(lines[1]).toContain('\x1b[32mshop.web.r1\x1b[0m');
    expect(lines[2]).toContain('\x1b[31mSTUCK 7h\x1b[0m');
    expect(lines[2]).not.toContain('\x1b[32m');
    expect(lines[3]).not.toContain('\x1b[');
    // The colour codes do not shift the columns.
    expect(text.replace(new RegExp(`${String.fromCharCode(27)}\\[\\d+m`, 'g'), '')).toBe(formatDeploymentTable(rows, { now: NOW, stuckTimeoutMs: 6 * HOUR, color: false }));
  });

  it('says when there is nothing', () => {
    expect(formatDeploymentTable([], { now: NOW, stuckTimeoutMs: HOUR, color: false })).toBe('No deployments found.\n');
  });
});

describe('formatDeploymentYaml', () => {
  it('writes manifests that parse back to the same spec', () => {
    const text = formatDeploymentYaml([row({ spec: { replicas: 2, image: 'web:1', env: { B: '1', A: 'x' } } })]);
    expect(text.startsWith('---\napiVersion: deployer/v1\nkind: Service\nmetadata:\n  project: shop\n  name: web\nspec:\n  image: web:1\n')).toBe(true);
    const back = parseManifests('export.yaml', text);
    expect(back.problems).toEqual([]);
    expect(back.services[0]!.spec).toEqual({ image: 'web:1', replicas: 2, env: { A: 'x', B: '1' }, rollout: { progressDeadline: '10m', minReadySeconds: 0 } });
  });
});

describe('formatDeploymentDetail', () => {
  it('says why containers are unknown rather than showing none', () => {
    const text = formatDeploymentDetail(
      { deployment: row(), events: [], totalEvents: 0, containers: { ok: false, error: 'docker list_containers: connect ENOENT' }, outputTail: [], outputSkipped: 0 },
      { now: NOW, stuckTimeoutMs: 6 * HOUR, color: false },
    );
    expect(text).toContain('\nContainers: unknown: docker list_containers: connect ENOENT\n');
    expect(text).toContain('\nEvents: none\n');
  });
});

describe('watch lines', () => {
  it('draws a bar of the percentage', () => {
    expect(progressBar(0)).toBe('[....................]');
    expect(progressBar(50)).toBe('[##########..........]');
    expect(progressBar(100)).toBe('[####################]');
    expect(progressBar(250)).toBe('[####################]');
  });

  it('prints one line per state, a bar on a terminal, and how it ended', () => {
    const d = row({ id: 'shop.web.r2', status: 'deploying', phase: 'starting', progress: { step: 3, total: 6, percent: 33, message: 'starting 2 containers' } });
    expect(watchLine(d)).toBe('shop.web.r2 deploying starting step 3/6 33%: starting 2 containers');
    expect(watchBar(d)).toBe('shop.web.r2 deploying [#######.............] step 3/6  33% starting: starting 2 containers');
    expect(watchLine(row({ id: 'shop.web.r2', status: 'pending', progress: null }))).toBe('shop.web.r2 pending');
    expect(finalLine(row({ id: 'shop.web.r2', revision: 2 }))).toBe('shop.web.r2 is active: revision 2 is serving');
    expect(finalLine(row({ id: 'shop.web.r2', status: 'failed', statusReason: 'health check failed' }))).toBe('shop.web.r2 ended failed: health check failed');
  });
});

describe('options', () => {
  it('parses statuses and refuses unknown ones', () => {
    expect(parseStatuses('pending, deploying')).toEqual(['pending', 'deploying']);
    expect(() => parseStatuses('running')).toThrow(/--status: expected pending, deploying, active, failed, cancelled, superseded .*got "running"/);
  });

  it('takes --service as SERVICE or PROJECT/SERVICE', () => {
    expect(deploymentFilter({ service: 'shop/web' })).toEqual({ project: 'shop', service: 'web' });
    expect(deploymentFilter({ project: 'shop', service: 'web', status: 'active' })).toEqual({ project: 'shop', service: 'web', statuses: ['active'] });
    expect(() => deploymentFilter({ project: 'blog', service: 'shop/web' })).toThrow(/names project shop/);
  });

  it('colours only a terminal, and never with NO_COLOR or TERM=dumb', () => {
    const io = (isTTY: boolean, env: NodeJS.ProcessEnv = {}): CommandIo => ({ stdout: { isTTY } as CommandIo['stdout'], stderr: process.stderr, stdin: process.stdin, env });
    expect(colorEnabled(io(true))).toBe(true);
    expect(colorEnabled(io(false))).toBe(false);
    expect(colorEnabled(io(true, { NO_COLOR: '1' }))).toBe(false);
    expect(colorEnabled(io(true, { TERM: 'dumb' }))).toBe(false);
  });
});
