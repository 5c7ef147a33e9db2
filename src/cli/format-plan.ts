import type { ActionOutcome } from '../controller/executor.js';
import type { Plan } from '../reconcilers/plan.js';
import type { Action } from '../reconcilers/snapshot.js';

function target(action: Action): string {
  switch (action.kind) {
    case 'remove_container':
    case 'stop_container':
      return `container ${action.containerName} (${action.containerId.slice(0, 12)})`;
    case 'remove_volume':
      return `volume ${action.volumeName}`;
    case 'mark_failed':
      return `deployment ${action.deploymentId}`;
    case 'recreate_replica':
      return `replica ${action.replica}` + (action.replaceContainerName ? ` (replacing ${action.replaceContainerName})` : '');
    case 'finish_rollback':
      return `rollback ${action.rollbackId}`;
  }
}

const VERB: Record<Action['kind'], string> = {
  remove_container: 'remove',
  stop_container: 'stop',
  remove_volume: 'remove',
  mark_failed: 'fail',
  recreate_replica: 'recreate',
  finish_rollback: 'settle',
};

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

/**
 * A plan as people read it: one row per action with its target and reason,
 * then what the budget deferred, what the guard blocked, and what is kept.
 * With `applied`, each row also says how it ended.
 */
export function formatPlan(plan: Plan, options: { applied?: readonly ActionOutcome[] | undefined } = {}): string {
  const out: string[] = [];
  const results = new Map(options.applied?.map((o) => [o.action, o]));
  const rows = (actions: readonly Action[], state: (a: Action) => string) =>
    actions.map((a) => [state(a), VERB[a.kind], target(a), a.deploymentId, a.reason]);

  if (plan.guard) out.push(`DELETION GUARD TRIPPED: ${plan.guard.reason}\n`);
  const all = [
    ...rows(plan.actions, (a) => {
      const o = results.get(a);
      return o ? o.result + (o.detail ? ` (${o.detail})` : '') : 'planned';
    }),
    ...rows(plan.deferred, () => 'deferred (budget)'),
    ...rows(plan.blocked, () => 'blocked (guard)'),
  ];
  if (all.length === 0) {
    out.push(`No drift: ${plan.managed} managed containers, nothing to do.\n`);
  } else {
    out.push(table([['STATE', 'ACTION', 'TARGET', 'DEPLOYMENT', 'REASON'], ...all]));
  }
  if (plan.notes.length > 0) {
    out.push('\nKept:\n');
    out.push(table([['SUBJECT', 'DEPLOYMENT', 'WHY'], ...plan.notes.map((n) => [n.subject, n.deploymentId, n.reason])]));
  }
  out.push(`\n${plan.drift.orphan} orphan(s), ${plan.drift.zombie} zombie(s), ${plan.managed} managed container(s).\n`);
  return out.join('');
}
