import { stringify } from 'yaml';
import type { ApplyPlan, LiveRevision } from './apply-plan.js';
import { serviceKey } from './manifest.js';
import { checkSpec } from './spec.js';

/**
 * Specs as people read them (YAML, fields in the manifest's order) and the
 * unified diff `deployerctl diff` prints between the stored and the wanted spec.
 */

/** Field order of a spec as written in manifests; unknown fields follow, sorted. */
const FIELD_ORDER: Record<string, readonly string[]> = {
  '': ['image', 'replicas', 'command', 'env', 'ports', 'volumes', 'healthcheck', 'rollout', 'labels'],
  healthcheck: ['test', 'interval', 'timeout', 'retries', 'startPeriod'],
  rollout: ['progressDeadline', 'minReadySeconds'],
};

function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A copy of `value` with its mapping keys in a stable order (jsonb does not keep the written one). */
function ordered(value: unknown, path: string): unknown {
  if (Array.isArray(value)) return value.map((v) => ordered(v, `${path}[]`));
  if (value === null || typeof value !== 'object') return value;
  const record = value as Record<string, unknown>;
  const order = FIELD_ORDER[path] ?? [];
  const keys = [...order.filter((k) => k in record), ...Object.keys(record).filter((k) => !order.includes(k)).sort(byName)];
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    if (record[key] !== undefined) out[key] = ordered(record[key], path === '' ? key : `${path}.${key}`);
  }
  return out;
}

/**
 * A spec in canonical form for display: validated with defaults applied when
 * it is valid (so a stored spec without defaults does not show spurious
 * differences), as stored otherwise; keys in manifest order.
 */
export function displaySpec(spec: unknown): unknown {
  const checked = checkSpec(spec);
  return ordered(checked.ok ? checked.spec : spec, '');
}

/** A spec as YAML text, in canonical form. */
export function specYaml(spec: unknown): string {
  return stringify(displaySpec(spec), { lineWidth: 0 });
}

type Edit = { op: ' ' | '-' | '+'; line: string };

/** Line edits from `a` to `b` by longest common subsequence (specs are short). */
function edits(a: readonly string[], b: readonly string[]): Edit[] {
  const n = a.length;
  const m = b.length;
  // Beyond this size the table is not worth it: show a replacement.
  if (n * m > 4_000_000) return [...a.map((line) => ({ op: '-' as const, line })), ...b.map((line) => ({ op: '+' as const, line }))];
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const out: Edit[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ op: ' ', line: a[i]! });
      i++;
      j++;
    } else if (lcs[i + 1]![j]! >= lcs[i]![j + 1]!) {
      out.push({ op: '-', line: a[i++]! });
    } else {
      out.push({ op: '+', line: b[j++]! });
    }
  }
  while (i < n) out.push({ op: '-', line: a[i++]! });
  while (j < m) out.push({ op: '+', line: b[j++]! });
  return out;
}

function lines(text: string): string[] {
  if (text === '') return [];
  return text.replace(/\n$/, '').split('\n');
}

function range(start: number, count: number): string {
  // Unified diff convention: an empty range starts at the line before it.
  if (count === 0) return `${start - 1},0`;
  return count === 1 ? `${start}` : `${start},${count}`;
}

/** Options of {@link unifiedDiff}. */
export interface DiffOptions {
  oldLabel: string;
  newLabel: string;
  /** Unchanged lines around each change (default 3). */
  context?: number;
}

/**
 * The unified diff of two texts (`---`/`+++` headers, `@@` hunks), or the
 * empty string when they are equal.
 */
export function unifiedDiff(oldText: string, newText: string, options: DiffOptions): string {
  if (oldText === newText) return '';
  const context = options.context ?? 3;
  const all = edits(lines(oldText), lines(newText));
  const out = [`--- ${options.oldLabel}`, `+++ ${options.newLabel}`];
  // Positions (1-based) of each edit in the old and new texts.
  const oldAt: number[] = [];
  const newAt: number[] = [];
  let o = 1;
  let n = 1;
  for (const e of all) {
    oldAt.push(o);
    newAt.push(n);
    if (e.op !== '+') o++;
    if (e.op !== '-') n++;
  }
  let index = 0;
  while (index < all.length) {
    while (index < all.length && all[index]!.op === ' ') index++;
    if (index >= all.length) break;
    const start = Math.max(0, index - context);
    let end = index;
    // Extend the hunk while the next change is within 2 * context unchanged lines.
    for (;;) {
      while (end < all.length && all[end]!.op !== ' ') end++;
      let gap = end;
      while (gap < all.length && all[gap]!.op === ' ') gap++;
      if (gap < all.length && gap - end <= 2 * context) end = gap;
      else {
        end = Math.min(all.length, end + context);
        break;
      }
    }
    const hunk = all.slice(start, end);
    const oldCount = hunk.filter((e) => e.op !== '+').length;
    const newCount = hunk.filter((e) => e.op !== '-').length;
    out.push(`@@ -${range(oldAt[start]!, oldCount)} +${range(newAt[start]!, newCount)} @@`);
    for (const e of hunk) out.push(`${e.op}${e.line}`);
    index = end;
  }
  return out.join('\n') + '\n';
}

function liveLabel(r: LiveRevision): string {
  return `${serviceKey(r.project, r.service)} (revision ${r.revision}, ${r.status})`;
}

/**
 * What an apply plan would change, as one unified diff per service: created
 * revisions against the newest live one (or nothing), pruned services against
 * nothing. Empty when the plan changes nothing.
 */
export function planDiff(plan: ApplyPlan): string {
  const parts: string[] = [];
  for (const step of plan.created) {
    const key = serviceKey(step.manifest.project, step.manifest.name);
    parts.push(
      unifiedDiff(step.current ? specYaml(step.current.spec) : '', specYaml(step.manifest.spec), {
        oldLabel: step.current ? liveLabel(step.current) : `${key} (none)`,
        newLabel: `${key} (${step.manifest.origin.replace(/:\d+:\d+$/, '')})`,
      }),
    );
  }
  for (const step of plan.pruned) {
    const newest = step.cancel[0]!;
    parts.push(unifiedDiff(specYaml(newest.spec), '', { oldLabel: liveLabel(newest), newLabel: `${serviceKey(step.project, step.service)} (pruned)` }));
  }
  return parts.join('');
}

/** Colours a unified diff for a terminal: removals red, additions green, hunk headers cyan. */
export function colorDiff(diff: string): string {
  return diff
    .split('\n')
    .map((line) => {
      if (line.startsWith('---') || line.startsWith('+++')) return `\x1b[1m${line}\x1b[0m`;
      if (line.startsWith('@@')) return `\x1b[36m${line}\x1b[0m`;
      if (line.startsWith('-')) return `\x1b[31m${line}\x1b[0m`;
      if (line.startsWith('+')) return `\x1b[32m${line}\x1b[0m`;
      return line;
    })
    .join('\n');
}
