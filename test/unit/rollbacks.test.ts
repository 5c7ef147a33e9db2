import { describe, expect, it } from 'vitest';
import { planSweep } from '../../src/reconcilers/plan.js';
import { planRollbacks } from '../../src/reconcilers/rollbacks.js';
import { LABELS, type Deployment, type Health, type ObservedContainer } from '../../src/types.js';
import { container, deployment, policy, rollback, snapshot } from './fixtures.js';

/** Revision 1 (`prev`) is what revision 2 (`bad`, failed) rolled back to. */
const RB = rollback('bad', 'prev');
const bad = deployment('bad', { revision: 2, status: 'failed' });

function target(overrides: Partial<Omit<Deployment, 'id'>> = {}): Deployment {
  return deployment('prev', { revision: 1, status: 'active', phase: null, replicas: 2, ...overrides });
}

/** Replicas 0..n-1 of `prev`, in `state`, with `health` as the listing reports it. */
function serving(n: number, state = 'running', health?: Health): ObservedContainer[] {
  return Array.from({ length: n }, (_, i) => ({
    ...container('prev', { id: `prev.${i}`, state, labels: { [LABELS.replica]: String(i) } }),
    ...(health ? { health } : {}),
  }));
}

function settle(deployments: Deployment[], containers: ObservedContainer[], rollbacks = [RB]) {
  return planRollbacks(snapshot({ deployments, containers, rollbacks }), policy().controllerName);
}

describe('planRollbacks: completed', () => {
  it('completes when the target is active, rolled out, and all its replicas run', () => {
    expect(settle([bad, target()], serving(2))).toEqual([
      { kind: 'finish_rollback', deploymentId: 'prev', rollbackId: RB.id, status: 'completed', reason: 'shop/web r1 serving with 2 healthy container(s)' },
    ]);
  });

  it.each(['healthy', 'none'] as const)('counts a running container with health %s as serving', (health) => {
    expect(settle([bad, target()], serving(2, 'running', health)).map((a) => a.status)).toEqual(['completed']);
  });

  it('reads one replica when the row did not say', () => {
    const { replicas: _, ...unread } = target();
    expect(settle([bad, unread], serving(1)).map((a) => a.status)).toEqual(['completed']);
  });

  it('settles the target with no replicas at once', () => {
    expect(settle([bad, target({ replicas: 0 })], []).map((a) => a.status)).toEqual(['completed']);
  });
});

describe('planRollbacks: waits', () => {
  it.each([
    { name: 'a replica is missing', containers: serving(1) },
    { name: 'a replica has exited', containers: [...serving(1), ...serving(2, 'exited').slice(1)] },
    { name: 'a replica is restarting', containers: [...serving(1), ...serving(2, 'restarting').slice(1)] },
    { name: 'a replica is unhealthy', containers: [...serving(1), ...serving(2, 'running', 'unhealthy').slice(1)] },
    { name: 'a replica is still starting its health checks', containers: [...serving(1), ...serving(2, 'running', 'starting').slice(1)] },
    { name: 'containers run for another deployment', containers: [container('other', { id: 'o1' }), container('other', { id: 'o2' })] },
    { name: 'a duplicate of one replica stands where the other is missing', containers: [...serving(1), { ...serving(1)[0]!, id: 'prev.dup' }] },
    {
      name: "the second replica's container is another controller's",
      containers: [...serving(1), container('prev', { id: 'foreign.1', labels: { [LABELS.replica]: '1', [LABELS.managedBy]: 'other-controller' } })],
    },
  ])('while $name', ({ containers }) => {
    expect(settle([bad, target()], containers)).toEqual([]);
  });

  it.each([
    { status: 'pending', phase: null },
    { status: 'deploying', phase: 'health_check' },
    { status: 'active', phase: 'retiring' },
  ] as const)('while the target is $status in phase $phase', ({ status, phase }) => {
    expect(settle([bad, target({ status, phase })], serving(2))).toEqual([]);
  });
});

describe('planRollbacks: failed', () => {
  it.each(['failed', 'cancelled', 'superseded'] as const)('fails when the target is %s', (status) => {
    expect(settle([bad, target({ status })], serving(2))).toEqual([
      { kind: 'finish_rollback', deploymentId: 'prev', rollbackId: RB.id, status: 'failed', reason: `revision rolled back to (prev) is ${status}` },
    ]);
  });

  it('fails when the target is gone', () => {
    expect(settle([bad], [])).toEqual([
      { kind: 'finish_rollback', deploymentId: 'prev', rollbackId: RB.id, status: 'failed', reason: 'revision rolled back to (prev) is gone' },
    ]);
  });
});

describe('planRollbacks: which rollbacks', () => {
  it.each(['completed', 'failed'] as const)('ignores a rollback already %s', (status) => {
    expect(settle([bad, target()], serving(2), [rollback('bad', 'prev', status)])).toEqual([]);
    expect(settle([bad], [], [rollback('bad', 'prev', status)])).toEqual([]);
  });

  it('settles each rollback in progress on its own', () => {
    const other = { ...rollback('x2', 'x1'), service: 'api' };
    const x1 = deployment('x1', { service: 'api', status: 'active', replicas: 1 });
    const actions = settle([bad, target(), x1], serving(1), [RB, other]);
    // prev has 1 of 2 replicas (waits); x1 has none running (waits).
    expect(actions).toEqual([]);
    const more = settle([bad, target(), x1], [...serving(2), container('x1', { id: 'x1.0', labels: { [LABELS.replica]: '0' } })], [RB, other]);
    expect(more.map((a) => [a.rollbackId, a.status])).toEqual([
      [RB.id, 'completed'],
      [other.id, 'completed'],
    ]);
  });
});

describe('planSweep: rollbacks', () => {
  it('includes the rollback settlements, last', () => {
    const plan = planSweep(snapshot({ deployments: [bad, target()], containers: serving(2), rollbacks: [RB] }), policy());
    expect(plan.actions.map((a) => a.kind)).toEqual(['finish_rollback']);
  });

  it('keeps what an in-progress rollback references while it waits', () => {
    // The failed revision's container would be an orphan; the rollback protects it.
    const containers = [...serving(1), container('bad', { id: 'bad.0' })];
    const plan = planSweep(snapshot({ deployments: [bad, target()], containers, rollbacks: [RB] }), policy());
    expect(plan.actions.filter((a) => a.kind === 'remove_container')).toEqual([]);
    expect(plan.actions.filter((a) => a.kind === 'finish_rollback')).toEqual([]);
  });
});
