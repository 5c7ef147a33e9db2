import { describe, expect, it } from 'vitest';
import { planSweep } from '../../src/reconcilers/plan.js';
import { planSelfHeal } from '../../src/reconcilers/selfheal.js';
import { LABELS, PHASES, type Deployment, type ObservedContainer } from '../../src/types.js';
import { container, deployment, policy, snapshot, type ContainerOptions } from './fixtures.js';

/** An active, fully rolled-out controller deployment with `replicas` replicas. */
function live(id: string, replicas: number, overrides: Partial<Omit<Deployment, 'id'>> = {}): Deployment {
  return deployment(id, { status: 'active', phase: null, executor: 'controller', replicas, ...overrides });
}

/** Container `<deploymentId>.<replica>` of a replica. */
function replica(deploymentId: string, n: number, options: ContainerOptions = {}): ObservedContainer {
  return container(deploymentId, { id: `${deploymentId}.${n}`, ...options, labels: { [LABELS.replica]: String(n), ...options.labels } });
}

function heal(deployments: Deployment[], containers: ObservedContainer[] = []) {
  return planSelfHeal(snapshot({ deployments, containers }), policy());
}

describe('planSelfHeal: which deployments', () => {
  it('recreates the missing replicas of an active controller deployment', () => {
    expect(heal([live('a', 3)], [replica('a', 1)])).toEqual([
      { kind: 'recreate_replica', deploymentId: 'a', replica: 0, reason: 'replica 0 of shop/web r1 has no container' },
      { kind: 'recreate_replica', deploymentId: 'a', replica: 2, reason: 'replica 2 of shop/web r1 has no container' },
    ]);
  });

  it.each(['pending', 'deploying', 'failed', 'cancelled', 'superseded'] as const)('leaves a %s deployment alone', (status) => {
    expect(heal([live('a', 2, { status })])).toEqual([]);
  });

  it.each(PHASES)('leaves an active deployment alone while its rollout is in phase %s', (phase) => {
    expect(heal([live('a', 2, { phase })])).toEqual([]);
  });

  it('leaves a deployment of another executor alone', () => {
    expect(heal([live('a', 2, { executor: 'platform-worker' })])).toEqual([]);
  });

  it('leaves a deployment alone when its replica count was not read', () => {
    const { replicas: _, ...unread } = live('a', 2);
    expect(heal([unread])).toEqual([]);
  });

  it('takes the replica count from the row', () => {
    expect(heal([live('a', 0)])).toEqual([]);
    expect(heal([live('a', 1)]).map((a) => a.replica)).toEqual([0]);
    expect(heal([live('a', 4)], [replica('a', 0), replica('a', 2)]).map((a) => a.replica)).toEqual([1, 3]);
  });

  it('heals each deployment from its own containers', () => {
    const actions = heal([live('a', 1), live('b', 1, { service: 'api' })], [replica('a', 0)]);
    expect(actions.map((a) => [a.deploymentId, a.replica])).toEqual([['b', 0]]);
  });
});

describe('planSelfHeal: which containers', () => {
  it.each(['running', 'restarting', 'paused'])('does nothing for a %s replica', (state) => {
    expect(heal([live('a', 1)], [replica('a', 0, { state })])).toEqual([]);
  });

  it.each(['exited', 'dead', 'created'])('replaces a %s replica, naming its container', (state) => {
    expect(heal([live('a', 2)], [replica('a', 0, { state }), replica('a', 1)])).toEqual([
      {
        kind: 'recreate_replica',
        deploymentId: 'a',
        replica: 0,
        replaceContainerId: 'a.0',
        replaceContainerName: 'a.0',
        reason: `replica 0 of shop/web r1: container a.0 is ${state}`,
      },
    ]);
  });

  it('keeps a replica that has a live container next to a dead one', () => {
    const containers = [replica('a', 0, { id: 'old', state: 'exited' }), replica('a', 0, { id: 'new', state: 'running' })];
    expect(heal([live('a', 1)], containers)).toEqual([]);
  });

  it('ignores foreign containers: they neither count as a replica nor get replaced', () => {
    const foreign = replica('a', 0, { managedBy: 'someone-else' });
    const deadForeign = replica('a', 1, { managedBy: 'someone-else', state: 'exited', id: 'foreign-dead' });
    const actions = heal([live('a', 2)], [foreign, deadForeign]);
    expect(actions.map((a) => [a.replica, a.replaceContainerId])).toEqual([
      [0, undefined],
      [1, undefined],
    ]);
  });

  it('counts legacy containers (no managed-by label) as ours', () => {
    expect(heal([live('a', 1)], [replica('a', 0, { managedBy: null })])).toEqual([]);
    expect(heal([live('a', 1)], [replica('a', 0, { managedBy: null, state: 'exited' })]).map((a) => a.replaceContainerId)).toEqual(['a.0']);
  });

  it('does not count a container of another deployment, or one without a replica label', () => {
    const containers = [replica('b', 0), container('a', { id: 'no-replica' })];
    expect(heal([live('a', 1)], containers).map((a) => [a.replica, a.replaceContainerId])).toEqual([[0, undefined]]);
  });
});

describe('planSweep: self-heal', () => {
  it('includes the recreate actions and counts them as missing drift', () => {
    const deployments = [live('a', 3)];
    const containers = [replica('a', 0), replica('a', 1, { state: 'exited' })];
    const plan = planSweep(snapshot({ deployments, containers }), policy());
    expect(plan.actions.filter((a) => a.kind === 'recreate_replica').map((a) => a.kind === 'recreate_replica' && a.replica)).toEqual([1, 2]);
    expect(plan.drift.missing).toBe(2);
    expect(plan.drift.orphan).toBe(0);
  });

  it('reports no missing drift when every replica is live', () => {
    const plan = planSweep(snapshot({ deployments: [live('a', 2)], containers: [replica('a', 0), replica('a', 1)] }), policy());
    expect(plan.actions).toEqual([]);
    expect(plan.drift.missing).toBe(0);
  });

  it('applies self-heal after removals, so a freed name can be taken again', () => {
    const deployments = [live('a', 1), deployment('old', { status: 'superseded', service: 'web', revision: 0 })];
    const containers = [container('old', { id: 'old-1' })];
    const kinds = planSweep(snapshot({ deployments, containers }), policy()).actions.map((a) => a.kind);
    expect(kinds).toEqual(['remove_container', 'recreate_replica']);
  });
});
