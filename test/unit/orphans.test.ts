import { describe, expect, it } from 'vitest';
import { planOrphans, type OrphanPlan } from '../../src/reconcilers/orphans.js';
import { LABELS, type DeploymentStatus } from '../../src/types.js';
import { ago, container, deployment, HOUR, MINUTE, NOW, policy, rollback, snapshot, volume } from './fixtures.js';

/** What happened to one container: removed, stopped, noted, or left alone. */
function fate(plan: OrphanPlan, containerId: string): 'remove' | 'stop' | 'note' | 'keep' {
  if (plan.removals.some((a) => a.containerId === containerId)) return 'remove';
  if (plan.stops.some((a) => a.containerId === containerId)) return 'stop';
  if (plan.notes.some((n) => n.subject === `container ${containerId}`)) return 'note';
  return 'keep';
}

function removedVolumes(plan: OrphanPlan): string[] {
  return plan.volumeRemovals.map((a) => a.volumeName);
}

describe('planOrphans: unknown deployments and the grace period', () => {
  const grace = 2 * MINUTE;
  it.each([
    { age: grace + 1, expected: 'remove' },
    { age: grace + HOUR, expected: 'remove' },
    { age: grace, expected: 'note' }, // strictly older than orphanGrace
    { age: grace - 1, expected: 'note' },
    { age: 0, expected: 'note' },
  ] as const)('a container of an unknown deployment created $age ms ago: $expected', ({ age, expected }) => {
    const c = container('gone', { id: 'c1', createdAt: ago(age) });
    const plan = planOrphans(snapshot({ containers: [c] }), policy({ orphanGraceMs: grace }));
    expect(fate(plan, 'c1')).toBe(expected);
    expect(plan.managed).toBe(1);
    if (expected === 'remove') {
      expect(plan.removals[0]).toMatchObject({ kind: 'remove_container', deploymentId: 'gone', containerId: 'c1', containerName: 'c1', cause: 'unknown' });
      expect(plan.removals[0]?.reason).toContain('gone');
    } else {
      expect(plan.notes[0]?.reason).toMatch(/orphanGrace/);
    }
  });

  it('honours the configured grace rather than a fixed one', () => {
    const c = container('gone', { id: 'c1', createdAt: ago(10 * MINUTE) });
    expect(fate(planOrphans(snapshot({ containers: [c] }), policy({ orphanGraceMs: 15 * MINUTE })), 'c1')).toBe('note');
    expect(fate(planOrphans(snapshot({ containers: [c] }), policy({ orphanGraceMs: 5 * MINUTE })), 'c1')).toBe('remove');
  });
});

describe('planOrphans: by deployment status', () => {
  it.each([
    { status: 'failed', expected: 'remove' },
    { status: 'cancelled', expected: 'remove' },
    { status: 'superseded', expected: 'remove' },
    { status: 'pending', expected: 'keep' },
    { status: 'deploying', expected: 'keep' },
    { status: 'active', expected: 'keep' },
  ] as const satisfies readonly { status: DeploymentStatus; expected: string }[])('$status: $expected', ({ status, expected }) => {
    const d = deployment('d1', { status, revision: 4 });
    const c = container('d1', { id: 'c1' });
    const plan = planOrphans(snapshot({ deployments: [d], containers: [c] }), policy());
    expect(fate(plan, 'c1')).toBe(expected);
    expect(plan.stops).toEqual([]);
    expect(plan.managed).toBe(1);
    if (expected === 'remove') {
      expect(plan.removals).toEqual([
        { kind: 'remove_container', deploymentId: 'd1', containerId: 'c1', containerName: 'c1', cause: status, reason: `deployment shop/web r4 is ${status}` },
      ]);
    } else {
      expect(plan.notes).toEqual([]);
    }
  });

  it('removes a status-based orphan at once, however young (the grace is for unknown ids only)', () => {
    const d = deployment('d1', { status: 'cancelled' });
    const c = container('d1', { id: 'c1', createdAt: ago(1) });
    expect(fate(planOrphans(snapshot({ deployments: [d], containers: [c] }), policy()), 'c1')).toBe('remove');
  });

  it('removes every container of an orphaned deployment, whatever its state', () => {
    const d = deployment('d1', { status: 'superseded' });
    const states = ['running', 'exited', 'created', 'dead', 'paused', 'restarting'];
    const containers = states.map((state) => container('d1', { id: `c-${state}`, state }));
    const plan = planOrphans(snapshot({ deployments: [d], containers }), policy());
    expect(plan.removals.map((a) => a.containerId).sort()).toEqual(containers.map((c) => c.id).sort());
  });
});

describe('planOrphans: ownership', () => {
  it.each([
    { owner: 'ours', managedBy: undefined, managed: 1, expected: 'remove' },
    { owner: 'legacy (no managed-by label)', managedBy: null, managed: 1, expected: 'remove' },
    { owner: 'foreign', managedBy: 'other-controller', managed: 0, expected: 'keep' },
    { owner: 'foreign with our name as a prefix', managedBy: 'deployer-controller-2', managed: 0, expected: 'keep' },
    { owner: 'foreign with an empty name', managedBy: '', managed: 0, expected: 'keep' },
  ] as const)('$owner: $expected, managed $managed', ({ managedBy, managed, expected }) => {
    const cases = [
      snapshot({ deployments: [deployment('d1', { status: 'failed' })], containers: [container('d1', { id: 'c1', managedBy })] }),
      snapshot({ containers: [container('gone', { id: 'c1', managedBy, createdAt: ago(HOUR) })] }),
    ];
    for (const snap of cases) {
      const plan = planOrphans(snap, policy());
      expect(fate(plan, 'c1')).toBe(expected);
      expect(plan.managed).toBe(managed);
      if (expected === 'keep') {
        expect(plan).toEqual({ removals: [], stops: [], volumeRemovals: [], notes: [], managed: 0 });
      }
    }
  });

  it('uses the configured controller name', () => {
    const c = container('d1', { id: 'c1', managedBy: 'blue' });
    const snap = snapshot({ deployments: [deployment('d1', { status: 'failed' })], containers: [c] });
    expect(fate(planOrphans(snap, policy({ controllerName: 'blue' })), 'c1')).toBe('remove');
    expect(fate(planOrphans(snap, policy({ controllerName: 'green' })), 'c1')).toBe('keep');
  });

  it('ignores containers without the deployment label (and does not count them)', () => {
    const plain = container(null, { id: 'c1', managedBy: null });
    const ourNameOnly = container(null, { id: 'c2' });
    const emptyId = container('', { id: 'c3' });
    const plan = planOrphans(snapshot({ containers: [plain, ourNameOnly, emptyId] }), policy({ orphanGraceMs: 0 }));
    expect(plan).toEqual({ removals: [], stops: [], volumeRemovals: [], notes: [], managed: 0 });
  });

  it('counts managed containers of every verdict, and only those', () => {
    const plan = planOrphans(
      snapshot({
        deployments: [deployment('a', { status: 'active' }), deployment('f', { status: 'failed' })],
        containers: [
          container('a', { id: 'a1' }),
          container('a', { id: 'a2', managedBy: null }),
          container('f', { id: 'f1' }),
          container('f', { id: 'f2', managedBy: 'someone-else' }),
          container('young', { id: 'y1', createdAt: ago(1) }),
          container(null, { id: 'n1' }),
        ],
      }),
      policy(),
    );
    expect(plan.managed).toBe(4);
    expect(plan.removals.map((a) => a.containerId)).toEqual(['f1']);
  });
});

describe('planOrphans: retention of failed revisions', () => {
  /** Failed revisions 1..n of shop/web, finished `finishedAgo` ago, one running container each. */
  function failedRevisions(n: number, finishedAgo = HOUR) {
    const deployments = Array.from({ length: n }, (_, i) =>
      deployment(`r${i + 1}`, { status: 'failed', revision: i + 1, finishedAt: ago(finishedAgo), updatedAt: ago(finishedAgo) }),
    );
    const containers = deployments.map((d) => container(d.id, { id: `c-${d.id}` }));
    return { deployments, containers };
  }

  it.each([
    { retainFailed: 0, kept: [] },
    { retainFailed: 1, kept: ['r4'] },
    { retainFailed: 2, kept: ['r3', 'r4'] },
    { retainFailed: 4, kept: ['r1', 'r2', 'r3', 'r4'] },
    { retainFailed: 10, kept: ['r1', 'r2', 'r3', 'r4'] },
  ])('retainFailed $retainFailed keeps the newest failed revisions $kept', ({ retainFailed, kept }) => {
    const { deployments, containers } = failedRevisions(4);
    const plan = planOrphans(snapshot({ deployments, containers }), policy({ retainFailed }));
    const stopped = plan.stops.map((a) => a.deploymentId).sort();
    const removed = plan.removals.map((a) => a.deploymentId).sort();
    expect(stopped).toEqual(kept);
    expect(removed).toEqual(deployments.map((d) => d.id).filter((id) => !kept.includes(id)));
    for (const a of plan.removals) expect(a.cause).toBe('failed');
  });

  it('picks the newest by revision, not by the order rows arrive in', () => {
    const { deployments, containers } = failedRevisions(3);
    const plan = planOrphans(snapshot({ deployments: [...deployments].reverse(), containers }), policy({ retainFailed: 1 }));
    expect(plan.stops.map((a) => a.deploymentId)).toEqual(['r3']);
  });

  it('counts per service: each service keeps its own newest failed revisions', () => {
    const deployments = [
      deployment('web1', { status: 'failed', service: 'web', revision: 1 }),
      deployment('web2', { status: 'failed', service: 'web', revision: 2 }),
      deployment('api1', { status: 'failed', service: 'api', revision: 1 }),
      deployment('other-web1', { status: 'failed', project: 'blog', service: 'web', revision: 1 }),
    ];
    const containers = deployments.map((d) => container(d.id, { id: `c-${d.id}` }));
    const plan = planOrphans(snapshot({ deployments, containers }), policy({ retainFailed: 1 }));
    expect(plan.stops.map((a) => a.deploymentId).sort()).toEqual(['api1', 'other-web1', 'web2']);
    expect(plan.removals.map((a) => a.deploymentId)).toEqual(['web1']);
  });

  it('counts failed revisions only: newer active, cancelled and superseded revisions do not take a slot', () => {
    const deployments = [
      deployment('f1', { status: 'failed', revision: 1 }),
      deployment('s2', { status: 'superseded', revision: 2 }),
      deployment('c3', { status: 'cancelled', revision: 3 }),
      deployment('a4', { status: 'active', revision: 4 }),
    ];
    const containers = deployments.map((d) => container(d.id, { id: `c-${d.id}` }));
    const plan = planOrphans(snapshot({ deployments, containers }), policy({ retainFailed: 1 }));
    expect(plan.stops.map((a) => a.deploymentId)).toEqual(['f1']);
    expect(plan.removals.map((a) => a.deploymentId).sort()).toEqual(['c3', 's2']);
  });

  it.each([
    { state: 'running', expected: 'stop' },
    { state: 'restarting', expected: 'stop' },
    { state: 'paused', expected: 'stop' },
    { state: 'exited', expected: 'note' },
    { state: 'created', expected: 'note' },
    { state: 'dead', expected: 'note' },
  ] as const)('a retained $state container: $expected', ({ state, expected }) => {
    const d = deployment('f1', { status: 'failed', revision: 7, finishedAt: ago(HOUR) });
    const c = container('f1', { id: 'c1', state });
    const plan = planOrphans(snapshot({ deployments: [d], containers: [c] }), policy({ retainFailed: 1 }));
    expect(fate(plan, 'c1')).toBe(expected);
    expect(plan.removals).toEqual([]);
    const reason = expected === 'stop' ? plan.stops[0]?.reason : plan.notes[0]?.reason;
    // failedRetention 24h, finished 1h ago: 23h left.
    expect(reason).toBe('failed revision 7 retained for debugging (23h0m left)');
    if (expected === 'stop') {
      expect(plan.stops[0]).toMatchObject({ kind: 'stop_container', deploymentId: 'f1', containerId: 'c1', containerName: 'c1' });
    }
  });

  it.each([
    { finishedAgo: 24 * HOUR - 1, expected: 'stop' },
    { finishedAgo: 24 * HOUR, expected: 'remove' }, // expired at exactly failedRetention
    { finishedAgo: 24 * HOUR + 1, expected: 'remove' },
    { finishedAgo: 7 * 24 * HOUR, expected: 'remove' },
  ] as const)('retention expiry: finished $finishedAgo ms ago -> $expected', ({ finishedAgo, expected }) => {
    const { deployments, containers } = failedRevisions(1, finishedAgo);
    const plan = planOrphans(snapshot({ deployments, containers }), policy({ retainFailed: 1, failedRetentionMs: 24 * HOUR }));
    expect(fate(plan, 'c-r1')).toBe(expected);
  });

  it('counts retention from finishedAt, not from when the row was created or last written', () => {
    const d = deployment('f1', { status: 'failed', createdAt: ago(48 * HOUR), updatedAt: ago(MINUTE), finishedAt: ago(30 * HOUR) });
    const plan = planOrphans(snapshot({ deployments: [d], containers: [container('f1', { id: 'c1' })] }), policy({ retainFailed: 1 }));
    expect(fate(plan, 'c1')).toBe('remove');

    const fresh = deployment('f1', { status: 'failed', createdAt: ago(48 * HOUR), updatedAt: ago(30 * HOUR), finishedAt: ago(MINUTE) });
    const kept = planOrphans(snapshot({ deployments: [fresh], containers: [container('f1', { id: 'c1' })] }), policy({ retainFailed: 1 }));
    expect(fate(kept, 'c1')).toBe('stop');
  });

  it('falls back to updatedAt when finishedAt is missing', () => {
    const old = deployment('f1', { status: 'failed', finishedAt: null, updatedAt: ago(25 * HOUR) });
    const recent = deployment('f1', { status: 'failed', finishedAt: null, updatedAt: ago(HOUR) });
    const c = container('f1', { id: 'c1' });
    expect(fate(planOrphans(snapshot({ deployments: [old], containers: [c] }), policy({ retainFailed: 1 })), 'c1')).toBe('remove');
    expect(fate(planOrphans(snapshot({ deployments: [recent], containers: [c] }), policy({ retainFailed: 1 })), 'c1')).toBe('stop');
  });

  it('an expired newest revision does not hand its slot to an older one', () => {
    const deployments = [
      deployment('r1', { status: 'failed', revision: 1, finishedAt: ago(HOUR) }),
      deployment('r2', { status: 'failed', revision: 2, finishedAt: ago(48 * HOUR) }),
    ];
    const containers = deployments.map((d) => container(d.id, { id: `c-${d.id}` }));
    const plan = planOrphans(snapshot({ deployments, containers }), policy({ retainFailed: 1 }));
    expect(plan.stops).toEqual([]);
    expect(plan.removals.map((a) => a.deploymentId).sort()).toEqual(['r1', 'r2']);
  });
});

describe('planOrphans: rollbacks in progress', () => {
  it.each([
    { rollbackStatus: 'in_progress', expected: 'note' },
    { rollbackStatus: 'completed', expected: 'remove' },
    { rollbackStatus: 'failed', expected: 'remove' },
  ] as const)('a $rollbackStatus rollback: its from and to deployments -> $expected', ({ rollbackStatus, expected }) => {
    const from = deployment('from', { status: 'failed', revision: 2 });
    const to = deployment('to', { status: 'superseded', revision: 1 });
    const snap = snapshot({
      deployments: [from, to],
      containers: [container('from', { id: 'c-from' }), container('to', { id: 'c-to' })],
      volumes: [volume('from', { name: 'v-from' }), volume('to', { name: 'v-to' })],
      rollbacks: [rollback('from', 'to', rollbackStatus)],
    });
    const plan = planOrphans(snap, policy());
    expect(fate(plan, 'c-from')).toBe(expected);
    expect(fate(plan, 'c-to')).toBe(expected);
    expect(removedVolumes(plan).sort()).toEqual(expected === 'remove' ? ['v-from', 'v-to'] : []);
    if (expected === 'note') {
      expect(plan.notes.map((n) => n.reason)).toEqual(['referenced by a rollback in progress', 'referenced by a rollback in progress']);
    }
  });

  it('protects even an unknown deployment past its grace, and a retained one from being stopped', () => {
    const snap = snapshot({
      deployments: [deployment('f', { status: 'failed', finishedAt: ago(HOUR) })],
      containers: [container('gone', { id: 'c-gone', createdAt: ago(HOUR) }), container('f', { id: 'c-f', state: 'running' })],
      rollbacks: [rollback('gone', 'f')],
    });
    const plan = planOrphans(snap, policy({ retainFailed: 1 }));
    expect(fate(plan, 'c-gone')).toBe('note');
    expect(fate(plan, 'c-f')).toBe('note');
    expect(plan.stops).toEqual([]);
  });

  it('protects only the deployments the rollback names', () => {
    const snap = snapshot({
      deployments: ['a', 'b', 'c'].map((id) => deployment(id, { status: 'cancelled' })),
      containers: ['a', 'b', 'c'].map((id) => container(id, { id: `c-${id}` })),
      rollbacks: [rollback('a', 'b')],
    });
    const plan = planOrphans(snap, policy());
    expect(plan.removals.map((r) => r.containerId)).toEqual(['c-c']);
  });
});

describe('planOrphans: volumes', () => {
  it.each([
    { status: 'failed', expected: true },
    { status: 'cancelled', expected: true },
    { status: 'superseded', expected: true },
    { status: 'pending', expected: false },
    { status: 'deploying', expected: false },
    { status: 'active', expected: false },
  ] as const)('a deployment-scoped volume of a $status deployment removed: $expected', ({ status, expected }) => {
    const d = deployment('d1', { status, revision: 3 });
    const plan = planOrphans(snapshot({ deployments: [d], containers: [container('d1', { id: 'c1' })], volumes: [volume('d1', { name: 'v1' })] }), policy());
    expect(removedVolumes(plan)).toEqual(expected ? ['v1'] : []);
    expect(fate(plan, 'c1')).toBe(expected ? 'remove' : 'keep');
    if (expected) {
      expect(plan.volumeRemovals[0]).toEqual({ kind: 'remove_volume', deploymentId: 'd1', volumeName: 'v1', cause: status, reason: `deployment shop/web r3 is ${status}` });
    }
  });

  it.each([
    { age: 2 * MINUTE + 1, expected: true },
    { age: 2 * MINUTE, expected: false },
    { age: 0, expected: false },
  ])('a volume of an unknown deployment created $age ms ago removed: $expected', ({ age, expected }) => {
    const plan = planOrphans(snapshot({ volumes: [volume('gone', { name: 'v1', createdAt: ago(age) })] }), policy());
    expect(removedVolumes(plan)).toEqual(expected ? ['v1'] : []);
    if (expected) expect(plan.volumeRemovals[0]?.cause).toBe('unknown');
  });

  it('follows retention: a retained failed deployment keeps its volume', () => {
    const d = deployment('f1', { status: 'failed', finishedAt: ago(HOUR) });
    const snap = snapshot({ deployments: [d], containers: [container('f1', { id: 'c1', state: 'exited' })], volumes: [volume('f1', { name: 'v1' })] });
    expect(removedVolumes(planOrphans(snap, policy({ retainFailed: 1 })))).toEqual([]);
    expect(removedVolumes(planOrphans(snap, policy({ retainFailed: 0 })))).toEqual(['v1']);
  });

  it.each([
    { kind: 'shared', options: { shared: true } },
    { kind: 'foreign', options: { managedBy: 'other-controller' } },
    { kind: 'shared and legacy', options: { shared: true, managedBy: null } },
    { kind: 'without the deployment label', options: {} as const, unlabelled: true },
  ])('never removes a $kind volume', ({ options, unlabelled }) => {
    for (const status of ['failed', 'cancelled', 'superseded'] as const) {
      const snap = snapshot({
        deployments: [deployment('d1', { status })],
        volumes: [volume(unlabelled ? null : 'd1', { name: 'v1', ...options })],
      });
      expect(removedVolumes(planOrphans(snap, policy()))).toEqual([]);
    }
    const unknown = snapshot({ volumes: [volume(unlabelled ? null : 'gone', { name: 'v1', createdAt: ago(HOUR), ...options })] });
    expect(removedVolumes(planOrphans(unknown, policy({ orphanGraceMs: 0 })))).toEqual([]);
  });

  it('only "true" marks a volume shared', () => {
    const snap = snapshot({ deployments: [deployment('d1', { status: 'failed' })], volumes: [volume('d1', { name: 'v1', labels: { [LABELS.shared]: 'false' } })] });
    expect(removedVolumes(planOrphans(snap, policy()))).toEqual(['v1']);
  });

  it('removes a legacy volume (no managed-by label) of an orphaned deployment', () => {
    const snap = snapshot({ deployments: [deployment('d1', { status: 'cancelled' })], volumes: [volume('d1', { name: 'v1', managedBy: null })] });
    expect(removedVolumes(planOrphans(snap, policy()))).toEqual(['v1']);
  });

  it('does not count volumes as managed containers', () => {
    const snap = snapshot({ deployments: [deployment('d1', { status: 'cancelled' })], volumes: [volume('d1'), volume('d1')] });
    expect(planOrphans(snap, policy()).managed).toBe(0);
  });
});

describe('planOrphans: removal order', () => {
  it('puts status-based removals before unknown ones, each oldest first', () => {
    const snap = snapshot({
      deployments: [deployment('failed', { status: 'failed' }), deployment('cancelled', { status: 'cancelled' }), deployment('sup', { status: 'superseded' })],
      containers: [
        container('gone1', { id: 'unknown-new', createdAt: ago(10 * MINUTE) }),
        container('failed', { id: 'failed-new', createdAt: ago(MINUTE) }),
        container('gone2', { id: 'unknown-old', createdAt: ago(5 * HOUR) }),
        container('cancelled', { id: 'cancelled-mid', createdAt: ago(2 * HOUR) }),
        container('sup', { id: 'superseded-old', createdAt: ago(9 * HOUR) }),
        container('gone3', { id: 'unknown-mid', createdAt: ago(HOUR) }),
      ],
    });
    const plan = planOrphans(snap, policy());
    expect(plan.removals.map((a) => a.containerId)).toEqual([
      'superseded-old',
      'cancelled-mid',
      'failed-new',
      'unknown-old',
      'unknown-mid',
      'unknown-new',
    ]);
  });

  it('is pure: planning twice gives the same plan and leaves the snapshot alone', () => {
    const snap = snapshot({
      now: NOW,
      deployments: [deployment('a', { status: 'failed' }), deployment('b', { status: 'failed', revision: 2 })],
      containers: [container('a', { id: 'ca' }), container('b', { id: 'cb' }), container('gone', { id: 'cg' })],
      volumes: [volume('a', { name: 'va' })],
    });
    const before = structuredClone({ ...snap, deployments: [...snap.deployments.values()] });
    const first = planOrphans(snap, policy({ retainFailed: 1 }));
    expect(planOrphans(snap, policy({ retainFailed: 1 }))).toEqual(first);
    expect({ ...snap, deployments: [...snap.deployments.values()] }).toEqual(before);
  });
});
