import { stringify } from 'yaml';
import { API_VERSION, KIND } from '../../manifest/manifest.js';
import { displaySpec } from '../../manifest/spec-diff.js';
import { toRowJson } from '../../store/store.js';
import type { ObservedContainer } from '../../types.js';
import type { DeploymentView, EventView } from './deployments-query.js';
import { paint, type ANSI } from './io.js';

/**
 * How `get deployments` and `describe deployment` print rows. Pure: the
 * clock (`now`, the database's) and colour are passed in, so the output is
 * reproducible and golden files can pin it.
 */

/**
 * Ages as kubectl prints them (`45s`, `5m3s`, `40m`, `7h12m`, `20h`, `3d4h`,
 * `30d`, `2y10d`): precise when recent, coarse when old.
 */
export function humanAge(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (hours < 24 * 8) return hours % 24 === 0 ? `${days}d` : `${days}d${hours % 24}h`;
  if (days < 365 * 2) return `${days}d`;
  const years = Math.floor(days / 365);
  if (days < 365 * 8) return days % 365 === 0 ? `${years}y` : `${years}y${days % 365}d`;
  return `${years}y`;
}

/**
 * How long a rollout has been stuck: its age (from `started_at`, or
 * `created_at` when it never started, as the zombie rule counts) when it is
 * `pending` or `deploying` past `stuckTimeoutMs`; undefined otherwise.
 */
export function stuckFor(d: Pick<DeploymentView, 'status' | 'startedAt' | 'createdAt'>, now: Date, stuckTimeoutMs: number): number | undefined {
  if (d.status !== 'pending' && d.status !== 'deploying') return undefined;
  const age = now.getTime() - (d.startedAt ?? d.createdAt).getTime();
  return age > stuckTimeoutMs ? age : undefined;
}

/** Options of the formatters. */
export interface ViewOptions {
  /** The database's clock. */
  now: Date;
  stuckTimeoutMs: number;
  color: boolean;
}

/** A table cell, optionally coloured. */
interface Cell {
  text: string;
  color?: keyof typeof ANSI | undefined;
}

/** Aligned columns, two spaces apart; widths count the text, not the colour codes. */
function table(rows: readonly (readonly Cell[])[], color: boolean, indent = ''): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.text.length)));
  return rows
    .map((row) => {
      // Trailing empty cells are left out, and the last cell is not padded: no trailing blanks, coloured or not.
      let last = row.length - 1;
      while (last > 0 && row[last]!.text === '') last--;
      const cells = row.slice(0, last + 1).map((cell, i) => {
        const padded = i === last ? cell.text : cell.text.padEnd(widths[i]!);
        return cell.color ? paint(padded, cell.color, color) : padded;
      });
      return indent + cells.join('  ') + '\n';
    })
    .join('');
}

function percent(d: Pick<DeploymentView, 'progress'>): string {
  return d.progress ? `${d.progress.percent}%` : '-';
}

/**
 * The `get deployments` table: id, service, revision, status, phase,
 * progress, age and a STUCK marker with how long for rollouts past
 * `stuckTimeout`. On a terminal, active rows are green and the marker red.
 */
export function formatDeploymentTable(rows: readonly DeploymentView[], options: ViewOptions): string {
  if (rows.length === 0) return 'No deployments found.\n';
  const header: Cell[] = ['ID', 'SERVICE', 'REV', 'STATUS', 'PHASE', 'PROGRESS', 'AGE', 'STUCK'].map((text) => ({ text }));
  const body = rows.map((d): Cell[] => {
    const rowColor = d.status === 'active' ? ('green' as const) : undefined;
    const stuck = stuckFor(d, options.now, options.stuckTimeoutMs);
    return [
      { text: d.id, color: rowColor },
      { text: `${d.project}/${d.service}`, color: rowColor },
      { text: String(d.revision), color: rowColor },
      { text: d.status, color: rowColor },
      { text: d.phase ?? '-', color: rowColor },
      { text: percent(d), color: rowColor },
      { text: humanAge(options.now.getTime() - d.createdAt.getTime()), color: rowColor },
      stuck === undefined ? { text: '' } : { text: `STUCK ${humanAge(stuck)}`, color: 'red' },
    ];
  });
  return table([header, ...body], options.color);
}

/** `get deployments -o json`: the rows with the columns' names, plus whether each is stuck. */
export function formatDeploymentJson(rows: readonly DeploymentView[], options: Omit<ViewOptions, 'color'>): string {
  const list = rows.map((d) => {
    const stuck = stuckFor(d, options.now, options.stuckTimeoutMs);
    return {
      ...toRowJson(d),
      stuck: stuck !== undefined,
      stuck_seconds: stuck === undefined ? null : Math.floor(stuck / 1000),
    };
  });
  return JSON.stringify(list, null, 2) + '\n';
}

/**
 * `get deployments -o yaml`: one manifest document per row, so the output of
 * `--status active` can be applied again as it is (export = backup). The
 * `status` block is read-only: apply ignores it.
 */
export function formatDeploymentYaml(rows: readonly DeploymentView[]): string {
  return rows
    .map((d) => {
      const status: Record<string, unknown> = { id: d.id, revision: d.revision, status: d.status };
      if (d.phase) status.phase = d.phase;
      if (d.progress) status.progress = d.progress;
      if (d.statusReason) status.statusReason = d.statusReason;
      status.specHash = d.specHash;
      status.createdAt = d.createdAt.toISOString();
      const doc = { apiVersion: API_VERSION, kind: KIND, metadata: { project: d.project, name: d.service }, spec: displaySpec(d.spec), status };
      return `---\n${stringify(doc, { lineWidth: 0 })}`;
    })
    .join('');
}

/** `step 3/6 (33%) starting: message`, or `-` without progress. */
export function progressText(d: Pick<DeploymentView, 'progress'>): string {
  if (!d.progress) return '-';
  const p = d.progress;
  return `step ${p.step}/${p.total} (${p.percent}%)${p.message ? ` ${p.message}` : ''}`;
}

/** What `describe` found of the deployment's containers. */
export type ContainersFound = { ok: true; containers: readonly ObservedContainer[] } | { ok: false; error: string } | { ok: 'skipped' };

/** Everything `describe deployment` prints. */
export interface DeploymentDetail {
  deployment: DeploymentView;
  events: readonly EventView[];
  /** All events of the deployment, of which `events` are the newest. */
  totalEvents: number;
  containers: ContainersFound;
  /** The last lines of `output`. */
  outputTail: readonly string[];
  /** Lines of `output` before the tail. */
  outputSkipped: number;
}

function when(date: Date | null, now: Date): string {
  return date ? `${date.toISOString()} (${humanAge(now.getTime() - date.getTime())} ago)` : '-';
}

function indentBlock(text: string, indent = '  '): string {
  return text
    .replace(/\n$/, '')
    .split('\n')
    .map((line) => (indent + line).trimEnd())
    .join('\n') + '\n';
}

/**
 * `describe deployment`: the spec, status with reason, phase and progress,
 * the containers found with their state, and the event rows, newest last.
 */
export function formatDeploymentDetail(detail: DeploymentDetail, options: ViewOptions): string {
  const d = detail.deployment;
  const { now, color } = options;
  const stuck = stuckFor(d, now, options.stuckTimeoutMs);
  const statusColor = d.status === 'active' ? 'green' : d.status === 'failed' ? 'red' : undefined;
  const fields: [string, string][] = [
    ['Id', d.id],
    ['Service', `${d.project}/${d.service}`],
    ['Revision', String(d.revision)],
    ['Status', statusColor ? paint(d.status, statusColor, color) : d.status],
    ['Reason', d.statusReason ?? '-'],
    ['Phase', d.phase ?? '-'],
    ['Progress', progressText(d)],
  ];
  if (stuck !== undefined) fields.push(['Stuck', paint(`STUCK ${humanAge(stuck)} in ${d.phase ?? d.status} (stuckTimeout ${humanAge(options.stuckTimeoutMs)})`, 'red', color)]);
  fields.push(
    ['Executor', d.executor],
    ['Owner', d.owner ?? '-'],
    ['Attempts', String(d.attempts)],
    ['Created', when(d.createdAt, now)],
    ['Started', when(d.startedAt, now)],
    ['Heartbeat', when(d.heartbeatAt, now)],
    ['Finished', when(d.finishedAt, now)],
    ['Updated', `${when(d.updatedAt, now)}, version ${d.version}`],
    ['Spec hash', d.specHash],
  );
  const width = Math.max(...fields.map(([k]) => k.length)) + 2;
  let out = fields.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}\n`).join('');

  out += 'Spec:\n' + indentBlock(stringify(displaySpec(d.spec), { lineWidth: 0 }));

  out += 'Containers:';
  const found = detail.containers;
  if (found.ok === 'skipped') out += ' not looked up (--no-containers)\n';
  else if (!found.ok) out += ` unknown: ${found.error}\n`;
  else if (found.containers.length === 0) out += ' none\n';
  else {
    out += '\n';
    const rows = [...found.containers]
      .sort((a, b) => Number(a.labels['deployer.replica'] ?? 0) - Number(b.labels['deployer.replica'] ?? 0) || (a.name < b.name ? -1 : 1))
      .map((c): Cell[] => [
        { text: c.name },
        { text: c.id.slice(0, 12) },
        { text: c.labels['deployer.replica'] ?? '-' },
        { text: c.state, color: c.state === 'running' ? 'green' : c.state === 'exited' || c.state === 'dead' ? 'red' : undefined },
        { text: c.health ?? '-', color: c.health === 'unhealthy' ? 'red' : undefined },
        { text: humanAge(now.getTime() - c.createdAt.getTime()) },
      ]);
    out += table([['NAME', 'ID', 'REPLICA', 'STATE', 'HEALTH', 'AGE'].map((text) => ({ text })), ...rows], color, '  ');
  }

  out += 'Events:';
  if (detail.events.length === 0) out += ' none\n';
  else {
    out += '\n';
    if (detail.totalEvents > detail.events.length) out += `  (${detail.totalEvents - detail.events.length} older events not shown)\n`;
    const rows = detail.events.map((e): Cell[] => [
      { text: e.at.toISOString() },
      { text: e.type, color: e.type === 'Warning' ? 'yellow' : undefined },
      { text: e.reason },
      { text: e.actor },
      { text: e.message },
    ]);
    out += table([['AT', 'TYPE', 'REASON', 'ACTOR', 'MESSAGE'].map((text) => ({ text })), ...rows], color, '  ');
  }

  out += 'Output:';
  if (detail.outputTail.length === 0) out += ' none\n';
  else {
    out += '\n';
    if (detail.outputSkipped > 0) out += `  (${detail.outputSkipped} earlier lines not shown)\n`;
    out += detail.outputTail.map((line) => `  ${line}`.trimEnd() + '\n').join('');
  }
  return out;
}
