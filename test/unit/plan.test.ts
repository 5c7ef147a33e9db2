import { describe, expect, it } from 'vitest';
import { hasDrift, planSweep } from '../../src/reconcilers/plan.js';
import type { Action, Policy } from '../../src/reconcilers/snapshot.js';
import type { Deployment, ObservedContainer, ObservedVolume } from '../../src/types.js';
import { ago, container, deployment, HOUR, MINUTE, policy, snapshot, volume } from './fixtures.js';

/**
 * A world of `managed` containers, one per deployment: the first `orphans`
 * belong to cancelled deployments (created oldest first), the rest to active ones.
 */
function world(managed: number, orphans: number, extra: { volumes?: boolean } = {}) {
  const deployments: Deployment[] = [];
  const containers: ObservedContainer[] = [];
  const volumes: ObservedVolume[] = [];
  for (let i = 0; i < managed; i++) {
    const id = `d${String(i).padStart(3, '0')}`;
    deployments.push(deployment(id, { status: i < orphans ? 'cancelled' : 'active', service: `svc${i}` }));
    containers.push(container(id, { id: `c-${id}`, createdAt: ago(HOUR - i * MINUTE) }));
    if (extra.volumes) volumes.push(volume(id, { name: `v-${id}` }));
  }
  return { deployments, containers, volumes };
}

const kinds = (actions: readonly Action[]) => actions.map((a) => a.kind);
const ids = (actions: readonly Action[]) => actions.map((a) => (a.kind === 'remove_container' || a.kind === 'stop_container' ? a.containerId : a.kind === 'remove_volume' ? a.volumeName : a.deploymentId));

/** Guard off by default (fraction 1), so the budget tests see only the budget. */
const noGuard: Partial<Policy> = { guardFraction: 1 };

describe('planSweep: per-sweep deletion budget', () => {
  it.each([
    { orphans: 5, budget: 10, applied: 5, deferred: 0 },
    { orphans: 5, budget: 5, applied: 5, deferred: 0 },
    { orphans: 5, budget: 3, applied: 3, deferred: 2 },
    { orphans: 5, budget: 1, applied: 1, deferred: 4 },
    { orphans: 5, budget: 0, applied: 0, deferred: 5 },
  ])('$orphans orphans, budget $budget: $applied applied, $deferred deferred', ({ orphans, budget, applied, deferred }) => {
    const w = world(orphans, orphans);
    const plan = planSweep(snapshot(w), policy({ ...noGuard, maxDeletionsPerSweep: budget }));
    const removals = plan.actions.filter((a) => a.kind === 'remove_container');
    expect(removals).toHaveLength(applied);
    expect(plan.deferred).toHaveLength(deferred);
    // The budget takes the oldest first, the rest waits, nothing is lost or repeated.
    const all = w.containers.map((c) => c.id);
    expect(ids(removals)).toEqual(all.slice(0, applied));
    expect(ids(plan.deferred)).toEqual(all.slice(applied));
    expect(plan.blocked).toEqual([]);
    expect(plan.guard).toBeNull();
  });

  it('defers the volumes of a deployment whose containers wait, applies the others', () => {
    const deployments = [deployment('a', { status: 'cancelled' }), deployment('b', { status: 'cancelled' }), deployment('c', { status: 'cancelled' })];
    const containers = [
      container('a', { id: 'a1', createdAt: ago(3 * HOUR) }),
      container('b', { id: 'b1', createdAt: ago(2 * HOUR) }),
      container('b', { id: 'b2', createdAt: ago(HOUR) }),
    ];
    // c has no containers left: its volume is not waiting for anything.
    const volumes = [volume('a', { name: 'va' }), volume('b', { name: 'vb' }), volume('c', { name: 'vc' })];
    const plan = planSweep(snapshot({ deployments, containers, volumes }), policy({ ...noGuard, maxDeletionsPerSweep: 2 }));
    expect(ids(plan.actions)).toEqual(['a1', 'b1', 'va', 'vc']);
    expect(ids(plan.deferred)).toEqual(['b2', 'vb']);
  });

  it('applies in order: status changes, stops, container removals, then volumes', () => {
    const deployments = [
      deployment('zombie', { status: 'deploying', executor: 'w', startedAt: ago(HOUR), heartbeatAt: ago(HOUR) }),
      deployment('retained', { status: 'failed', revision: 2, finishedAt: ago(HOUR) }),
      deployment('old', { status: 'failed', revision: 1, finishedAt: ago(HOUR) }),
    ];
    const containers = [container('old', { id: 'c-old' }), container('retained', { id: 'c-retained' })];
    const volumes = [volume('old', { name: 'v-old' })];
    const plan = planSweep(snapshot({ deployments, containers, volumes }), policy({ ...noGuard, retainFailed: 1 }));
    expect(kinds(plan.actions)).toEqual(['mark_failed', 'stop_container', 'remove_container', 'remove_volume']);
    expect(ids(plan.actions)).toEqual(['zombie', 'c-retained', 'c-old', 'v-old']);
  });

  it('does not spend the budget on stops or status changes', () => {
    const deployments = [
      deployment('z', { status: 'deploying', executor: 'w', startedAt: ago(HOUR), heartbeatAt: ago(HOUR) }),
      deployment('f2', { status: 'failed', revision: 2, finishedAt: ago(HOUR) }),
      deployment('f1', { status: 'failed', revision: 1, finishedAt: ago(HOUR) }),
    ];
    const containers = [container('f2', { id: 'c-f2' }), container('f1', { id: 'c-f1' })];
    const plan = planSweep(snapshot({ deployments, containers }), policy({ ...noGuard, retainFailed: 1, maxDeletionsPerSweep: 1 }));
    expect(ids(plan.actions)).toEqual(['z', 'c-f2', 'c-f1']);
    expect(plan.deferred).toEqual([]);
  });
});

describe('planSweep: mass-deletion guard', () => {
  it.each([
    // managed, removals, min, blocked
    { managed: 10, orphans: 6, min: 10, blocked: true },
    { managed: 20, orphans: 20, min: 10, blocked: true },
    { managed: 10, orphans: 5, min: 10, blocked: false }, // exactly half: allowed
    { managed: 10, orphans: 4, min: 10, blocked: false },
    { managed: 9, orphans: 9, min: 10, blocked: false }, // below guardMinContainers
    { managed: 3, orphans: 2, min: 3, blocked: true },
    { managed: 3, orphans: 2, min: 4, blocked: false },
  ])('$orphans of $managed managed (min $min): blocked $blocked', ({ managed, orphans, min, blocked }) => {
    const w = world(managed, orphans, { volumes: true });
    const plan = planSweep(snapshot(w), policy({ guardFraction: 0.5, guardMinContainers: min }));
    expect(plan.managed).toBe(managed);
    const deletions = plan.actions.filter((a) => a.kind === 'remove_container' || a.kind === 'remove_volume');
    if (blocked) {
      expect(plan.guard?.reason).toContain(`remove ${orphans} of ${managed} managed containers`);
      expect(deletions).toEqual([]);
      expect(plan.deferred).toEqual([]);
      // Containers and their volumes alike.
      expect(plan.blocked.filter((a) => a.kind === 'remove_container')).toHaveLength(orphans);
      expect(plan.blocked.filter((a) => a.kind === 'remove_volume')).toHaveLength(orphans);
    } else {
      expect(plan.guard).toBeNull();
      expect(plan.blocked).toEqual([]);
      expect(deletions).toHaveLength(orphans * 2);
    }
  });

  it('honours guardFraction', () => {
    const w = world(10, 3);
    expect(planSweep(snapshot(w), policy({ guardFraction: 0.25 })).guard).not.toBeNull();
    expect(planSweep(snapshot(w), policy({ guardFraction: 0.3 })).guard).toBeNull();
  });

  it('counts only managed containers: foreign ones do not dilute the fraction', () => {
    const w = world(10, 6);
    const foreign = Array.from({ length: 100 }, (_, i) => container(`x${i}`, { managedBy: 'other', createdAt: ago(HOUR) }));
    const plan = planSweep(snapshot({ ...w, containers: [...w.containers, ...foreign] }), policy());
    expect(plan.managed).toBe(10);
    expect(plan.guard).not.toBeNull();
  });

  it.each([
    { managed: 1, min: 10 },
    { managed: 30, min: 10 },
  ])('refuses to act on an empty desired state with $managed managed containers', ({ managed, min }) => {
    const containers = Array.from({ length: managed }, (_, i) => container(`gone${i}`, { id: `c${i}`, createdAt: ago(HOUR) }));
    const plan = planSweep(snapshot({ containers, volumes: [volume('gone0', { name: 'v0' })] }), policy({ guardMinContainers: min, guardFraction: 1 }));
    expect(plan.guard?.reason).toMatch(/desired state is empty/);
    expect(plan.actions).toEqual([]);
    expect(ids(plan.blocked).sort()).toEqual([...containers.map((c) => c.id), 'v0'].sort());
  });

  it('does not trip on an empty desired state when nothing would be removed', () => {
    const containers = [container('young', { createdAt: ago(1) })];
    const plan = planSweep(snapshot({ containers }), policy());
    expect(plan.guard).toBeNull();
    expect(plan.notes).toHaveLength(1);
  });

  it.each([
    { label: 'over the fraction', parts: () => snapshot(world(10, 10)) },
    { label: 'empty desired state', parts: () => snapshot({ containers: [container('gone', { id: 'c0', createdAt: ago(HOUR) })] }) },
  ])('force bypasses the guard ($label); the budget still applies', ({ parts }) => {
    const snap = parts();
    const unforced = planSweep(snap, policy());
    expect(unforced.guard).not.toBeNull();
    const forced = planSweep(snap, policy({ force: true, maxDeletionsPerSweep: 3 }));
    expect(forced.guard).toBeNull();
    expect(forced.blocked).toEqual([]);
    const removals = unforced.blocked.filter((a) => a.kind === 'remove_container');
    expect(forced.actions.filter((a) => a.kind === 'remove_container')).toEqual(removals.slice(0, 3));
    expect(forced.deferred).toEqual(removals.slice(3));
  });

  it('judges the guard on all removals, before the budget cuts them', () => {
    // 6 of 10 would go: blocked even though the budget would let only 2 through.
    const plan = planSweep(snapshot(world(10, 6)), policy({ maxDeletionsPerSweep: 2 }));
    expect(plan.guard).not.toBeNull();
    expect(plan.blocked.filter((a) => a.kind === 'remove_container')).toHaveLength(6);
    expect(plan.deferred).toEqual([]);
  });

  it('still fails zombies and stops retained containers when the guard trips', () => {
    const w = world(10, 8);
    const zombie = deployment('z', { status: 'deploying', executor: 'w', startedAt: ago(HOUR), heartbeatAt: ago(HOUR) });
    const retained = deployment('f', { status: 'failed', service: 'svc-f', finishedAt: ago(HOUR) });
    const plan = planSweep(
      snapshot({ ...w, deployments: [...w.deployments, zombie, retained], containers: [...w.containers, container('f', { id: 'c-f' })] }),
      policy({ retainFailed: 1 }),
    );
    expect(plan.guard).not.toBeNull();
    expect(kinds(plan.actions)).toEqual(['mark_failed', 'stop_container']);
    expect(ids(plan.actions)).toEqual(['z', 'c-f']);
    expect(plan.drift.zombie).toBe(1);
  });
});

describe('planSweep: drift', () => {
  it('an agreeing world has no drift', () => {
    const plan = planSweep(snapshot(world(4, 0, { volumes: true })), policy());
    expect(plan.actions).toEqual([]);
    expect(hasDrift(plan)).toBe(false);
    expect(plan.drift).toEqual({ orphan: 0, zombie: 0, missing: 0, interrupted: 0 });
  });

  it('notes alone (grace period, retained and already stopped) are not drift', () => {
    const plan = planSweep(
      snapshot({
        deployments: [deployment('a'), deployment('f', { status: 'failed', finishedAt: ago(HOUR) })],
        containers: [container('a'), container('young', { createdAt: ago(1) }), container('f', { state: 'exited' })],
      }),
      policy({ retainFailed: 1 }),
    );
    expect(plan.notes).toHaveLength(2);
    expect(hasDrift(plan)).toBe(false);
    expect(plan.drift).toEqual({ orphan: 0, zombie: 0, missing: 0, interrupted: 0 });
  });

  it.each([
    { label: 'an applied removal', pol: {}, w: () => world(4, 1) },
    { label: 'a deferred removal only', pol: { maxDeletionsPerSweep: 0 }, w: () => world(4, 1) },
    { label: 'a blocked removal only', pol: {}, w: () => world(10, 10) },
  ])('$label is drift', ({ pol, w }) => {
    const plan = planSweep(snapshot(w()), policy(pol));
    expect(hasDrift(plan)).toBe(true);
  });

  it('counts orphans (removals and stops, applied or not) and zombies', () => {
    const w = world(10, 2);
    const deployments = [
      ...w.deployments,
      deployment('z1', { status: 'deploying', executor: 'w', startedAt: ago(HOUR), heartbeatAt: ago(HOUR) }),
      deployment('z2', { status: 'pending', startedAt: null, createdAt: ago(7 * HOUR) }),
      deployment('f', { status: 'failed', service: 'svc-f', finishedAt: ago(HOUR) }),
    ];
    const containers = [...w.containers, container('f', { id: 'c-f', state: 'running' }), container('gone', { createdAt: ago(HOUR) })];
    const plan = planSweep(snapshot({ deployments, containers }), policy({ retainFailed: 1, maxDeletionsPerSweep: 1 }));
    // 2 cancelled + 1 unknown removals (1 applied, 2 deferred) and 1 stop.
    expect(plan.drift).toEqual({ orphan: 4, zombie: 2, missing: 0, interrupted: 0 });
    expect(plan.deferred).toHaveLength(2);
    expect(hasDrift(plan)).toBe(true);
  });
});
