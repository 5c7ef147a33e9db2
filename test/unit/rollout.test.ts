import { describe, expect, it } from 'vitest';
import { formatDuration } from '../../src/duration.js';
import {
  containerName,
  missingReplicas,
  planRollout,
  progressAt,
  TOTAL_STEPS,
  type RolloutDeployment,
  type RolloutInput,
  type RolloutStep,
} from '../../src/reconcilers/rollout.js';
import { LABELS, PHASES, type ContainerDetail, type Deployment, type Phase } from '../../src/types.js';
import { ago, containerDetail, deployment, MINUTE, NOW, SECOND } from './fixtures.js';

/** This controller instance, and another one. */
const ME = 'deployer-controller/host-a/100/aaaaaa';
const OTHER = 'deployer-controller/host-b/200/bbbbbb';
const HEARTBEAT = 60 * SECOND;
const IMAGE = 'shop-web:1.4.2';
/** Far past every timeout. */
const HOUR_AGO = 60 * MINUTE;
/** Two replicas, default rollout options (progressDeadline 10m, minReadySeconds 0), no healthcheck. */
const SPEC = { image: IMAGE, replicas: 2 };
const WITH_HEALTHCHECK = { ...SPEC, healthcheck: { test: ['CMD', '/app/health'], interval: '5s', retries: 3 } };

/** Revision 2 of shop/web, deploying in `pulling`, driven by this instance, started a minute ago. */
function row(overrides: Partial<Omit<Deployment, 'id'>> = {}, spec: unknown = SPEC, id = 'd2'): RolloutDeployment {
  return {
    ...deployment(id, {
      revision: 2,
      status: 'deploying',
      phase: 'pulling',
      owner: ME,
      attempts: 1,
      startedAt: ago(MINUTE),
      heartbeatAt: ago(SECOND),
      createdAt: ago(2 * MINUTE),
      updatedAt: ago(SECOND),
      ...overrides,
    }),
    spec,
  };
}

function input(overrides: Partial<RolloutInput> = {}): RolloutInput {
  return {
    now: NOW,
    deployment: row(),
    me: ME,
    ownerAlive: true,
    heartbeatTimeoutMs: HEARTBEAT,
    maxAttempts: 3,
    containers: [],
    imagePresent: true,
    siblings: [],
    ...overrides,
  };
}

/** The next step of `d` in a world of `containers` (image present). */
function step(d: RolloutDeployment, containers: readonly ContainerDetail[] = [], extra: Partial<RolloutInput> = {}): RolloutStep {
  return planRollout(input({ deployment: d, containers, ...extra }));
}

/** Containers for replicas 0..n-1 of d2, all in the given shape. */
function replicas(n: number, options: Parameters<typeof containerDetail>[2] = {}): ContainerDetail[] {
  return Array.from({ length: n }, (_, i) => containerDetail('d2', i, options));
}

/** A never-started container (Docker reports `0001-01-01` as its start, which the runtime reads as null). */
const created = { state: 'created', startedAt: null } as const;

describe('planRollout: pulling', () => {
  it('advances to creating when the image is present, without pulling', () => {
    expect(step(row({ phase: 'pulling' }), [], { imagePresent: true })).toEqual({ kind: 'advance', to: 'creating' });
  });

  it('pulls the spec image when it is absent', () => {
    expect(step(row({ phase: 'pulling' }), [], { imagePresent: false })).toEqual({ kind: 'pull', image: IMAGE });
  });

  it('treats a deploying row without a phase as pulling', () => {
    expect(step(row({ phase: null }), [], { imagePresent: false })).toEqual({ kind: 'pull', image: IMAGE });
    expect(step(row({ phase: null }), [], { imagePresent: true })).toEqual({ kind: 'advance', to: 'creating' });
  });

  it('looks at the image only in pulling', () => {
    // In later phases the reconciler does not check the image (and passes false).
    expect(step(row({ phase: 'creating' }), [], { imagePresent: false })).toEqual({ kind: 'create', replicas: [0, 1] });
  });
});

describe('planRollout: creating', () => {
  const three = { image: IMAGE, replicas: 3 };
  it.each([
    { name: 'no containers', have: [] as number[], want: { kind: 'create', replicas: [0, 1, 2] } },
    { name: 'replica 1 only', have: [1], want: { kind: 'create', replicas: [0, 2] } },
    { name: 'replicas 0 and 2', have: [0, 2], want: { kind: 'create', replicas: [1] } },
    { name: 'all three', have: [0, 1, 2], want: { kind: 'advance', to: 'starting' } },
  ])('$name -> $want.kind', ({ have, want }) => {
    const containers = have.map((r) => containerDetail('d2', r, created));
    expect(step(row({ phase: 'creating' }, three), containers)).toEqual(want);
  });

  it('counts a container of a replica whatever its state (a repeated phase creates nothing twice)', () => {
    const containers = [
      containerDetail('d2', 0, { state: 'exited', startedAt: ago(SECOND), exitCode: 1 }),
      containerDetail('d2', 1, { state: 'running' }),
    ];
    expect(step(row({ phase: 'creating' }), containers)).toEqual({ kind: 'advance', to: 'starting' });
  });

  it('ignores containers whose replica label is missing, negative, fractional, not a number or out of range', () => {
    const containers = [
      containerDetail('d2', null, { id: 'none' }),
      containerDetail('d2', null, { id: 'neg', labels: { 'deployer.replica': '-1' } }),
      containerDetail('d2', null, { id: 'frac', labels: { 'deployer.replica': '0.5' } }),
      containerDetail('d2', null, { id: 'nan', labels: { 'deployer.replica': 'one' } }),
      containerDetail('d2', 7),
    ];
    expect(step(row({ phase: 'creating' }), containers)).toEqual({ kind: 'create', replicas: [0, 1] });
  });

  it('with replicas 0 has nothing to create', () => {
    expect(step(row({ phase: 'creating' }, { image: IMAGE, replicas: 0 }))).toEqual({ kind: 'advance', to: 'starting' });
  });
});

describe('planRollout: starting', () => {
  it('starts every created, never-started container, and only those', () => {
    const containers = [containerDetail('d2', 0, created), containerDetail('d2', 1, { state: 'running' })];
    expect(step(row({ phase: 'starting' }), containers)).toEqual({ kind: 'start', containerIds: ['d2.0'] });
  });

  it('starts all of them when none runs yet', () => {
    expect(step(row({ phase: 'starting' }), replicas(2, created))).toEqual({ kind: 'start', containerIds: ['d2.0', 'd2.1'] });
  });

  it('starts an exited container that never ran', () => {
    const containers = [containerDetail('d2', 0, { state: 'exited', startedAt: null }), containerDetail('d2', 1)];
    expect(step(row({ phase: 'starting' }), containers)).toEqual({ kind: 'start', containerIds: ['d2.0'] });
  });

  it.each([
    { state: 'exited', exitCode: 137, reason: 'container d2.1 exited with code 137' },
    { state: 'exited', exitCode: 0, reason: 'container d2.1 exited with code 0' },
    { state: 'dead', exitCode: 1, reason: 'container d2.1 exited with code 1' },
    { state: 'exited', exitCode: null, reason: 'container d2.1 exited with code unknown' },
  ])('fails when a container ran and is now $state (exit code $exitCode)', ({ state, exitCode, reason }) => {
    const containers = [containerDetail('d2', 0, created), containerDetail('d2', 1, { state, exitCode, startedAt: ago(5 * SECOND) })];
    expect(step(row({ phase: 'starting' }), containers)).toEqual({ kind: 'fail', reason });
  });

  it('advances to health_check when all are running', () => {
    expect(step(row({ phase: 'starting' }), replicas(2))).toEqual({ kind: 'advance', to: 'health_check' });
  });

  it('creates a missing replica first (removed between phases)', () => {
    const containers = [containerDetail('d2', 1, created)];
    expect(step(row({ phase: 'starting' }), containers)).toEqual({ kind: 'create', replicas: [0] });
  });

  it('does not start running, restarting or paused containers again', () => {
    const containers = [containerDetail('d2', 0, { state: 'restarting' }), containerDetail('d2', 1, { state: 'paused' })];
    // Nothing to start: the health check decides about them.
    expect(step(row({ phase: 'starting' }), containers)).toEqual({ kind: 'advance', to: 'health_check' });
  });
});

describe('planRollout: health_check with a healthcheck', () => {
  const at = row({ phase: 'health_check' }, WITH_HEALTHCHECK);

  it('advances to activating when every container is healthy', () => {
    expect(step(at, replicas(2, { health: 'healthy' }))).toEqual({ kind: 'advance', to: 'activating' });
  });

  it('waits while a container is still starting its health checks', () => {
    const containers = [containerDetail('d2', 0, { health: 'healthy' }), containerDetail('d2', 1, { health: 'starting' })];
    expect(step(at, containers)).toEqual({ kind: 'wait', ms: 500, message: '1/2 containers ready' });
  });

  it('fails naming the unhealthy container', () => {
    const containers = [containerDetail('d2', 0, { health: 'healthy' }), containerDetail('d2', 1, { health: 'unhealthy' })];
    expect(step(at, containers)).toEqual({ kind: 'fail', reason: 'container d2.1 is unhealthy' });
  });

  it('fails when a container has restarted, even if it is healthy now', () => {
    const containers = [containerDetail('d2', 0, { health: 'healthy', restartCount: 2, exitCode: 3 }), containerDetail('d2', 1, { health: 'healthy' })];
    expect(step(at, containers)).toEqual({ kind: 'fail', reason: 'container d2.0 restarted 2 time(s) (last exit code 3)' });
  });

  it.each(['exited', 'dead'])('fails when a container is %s', (state) => {
    const containers = [containerDetail('d2', 0, { health: 'healthy' }), containerDetail('d2', 1, { state, exitCode: 2, health: 'unhealthy' })];
    expect(step(at, containers)).toEqual({ kind: 'fail', reason: 'container d2.1 exited with code 2' });
  });

  it('fails when a container is missing', () => {
    expect(step(at, [containerDetail('d2', 0, { health: 'healthy' })])).toEqual({ kind: 'fail', reason: 'only 1 of 2 containers exist in phase health_check' });
  });

  it.each(['created', 'restarting', 'paused'])('waits for a container that is %s (not running)', (state) => {
    const containers = [containerDetail('d2', 0, { health: 'healthy' }), containerDetail('d2', 1, { state, health: 'healthy' })];
    expect(step(at, containers)).toEqual({ kind: 'wait', ms: 500, message: '1/2 containers ready' });
  });

  it('does not count minReadySeconds when there is a healthcheck', () => {
    const spec = { ...WITH_HEALTHCHECK, rollout: { minReadySeconds: 600 } };
    expect(step(row({ phase: 'health_check' }, spec), replicas(2, { health: 'healthy', startedAt: ago(SECOND) }))).toEqual({ kind: 'advance', to: 'activating' });
  });
});

describe('planRollout: health_check without a healthcheck (minReadySeconds)', () => {
  const at = (minReadySeconds: number) => row({ phase: 'health_check' }, { ...SPEC, rollout: { minReadySeconds } });

  it.each([
    { minReady: 0, up: 0, want: { kind: 'advance', to: 'activating' } },
    { minReady: 0, up: 5 * SECOND, want: { kind: 'advance', to: 'activating' } },
    { minReady: 10, up: 10 * SECOND, want: { kind: 'advance', to: 'activating' } },
    { minReady: 10, up: 11 * SECOND, want: { kind: 'advance', to: 'activating' } },
    // Not yet: wait the remaining time...
    { minReady: 10, up: 7 * SECOND, want: { kind: 'wait', ms: 3 * SECOND, message: '0/2 containers ready' } },
    { minReady: 5, up: 1500, want: { kind: 'wait', ms: 3500, message: '0/2 containers ready' } },
    // ...but at least 200 ms and at most 5 s per wait.
    { minReady: 10, up: 10 * SECOND - 50, want: { kind: 'wait', ms: 200, message: '0/2 containers ready' } },
    { minReady: 60, up: SECOND, want: { kind: 'wait', ms: 5 * SECOND, message: '0/2 containers ready' } },
  ])('minReadySeconds $minReady, running for $up ms -> $want.kind', ({ minReady, up, want }) => {
    expect(step(at(minReady), replicas(2, { startedAt: ago(up) }))).toEqual(want);
  });

  it('waits for the container that needs longest', () => {
    const containers = [containerDetail('d2', 0, { startedAt: ago(9 * SECOND) }), containerDetail('d2', 1, { startedAt: ago(6 * SECOND) })];
    expect(step(at(10), containers)).toEqual({ kind: 'wait', ms: 4 * SECOND, message: '0/2 containers ready' });
  });

  it('counts the ready ones in the message', () => {
    const containers = [containerDetail('d2', 0, { startedAt: ago(20 * SECOND) }), containerDetail('d2', 1, { startedAt: ago(8 * SECOND) })];
    expect(step(at(10), containers)).toEqual({ kind: 'wait', ms: 2 * SECOND, message: '1/2 containers ready' });
  });

  it('still fails a container that Docker reports unhealthy (a healthcheck baked into the image)', () => {
    const containers = [containerDetail('d2', 0), containerDetail('d2', 1, { health: 'unhealthy' })];
    expect(step(at(0), containers)).toEqual({ kind: 'fail', reason: 'container d2.1 is unhealthy' });
  });

  it('fails a container that restarted or exited', () => {
    expect(step(at(0), [containerDetail('d2', 0), containerDetail('d2', 1, { restartCount: 1, exitCode: 1 })])).toEqual({
      kind: 'fail',
      reason: 'container d2.1 restarted 1 time(s) (last exit code 1)',
    });
    expect(step(at(0), [containerDetail('d2', 0), containerDetail('d2', 1, { state: 'exited', exitCode: 0 })])).toEqual({
      kind: 'fail',
      reason: 'container d2.1 exited with code 0',
    });
  });
});

describe('planRollout: activating and retiring', () => {
  it('activates in activating', () => {
    expect(step(row({ phase: 'activating' }))).toEqual({ kind: 'activate' });
  });

  /** Revision 2, just activated, with siblings of the same service. */
  const activated = row({ status: 'active', phase: 'retiring' });
  const r1 = deployment('d1', { revision: 1, status: 'active' });
  const r3 = deployment('d3', { revision: 3, status: 'active' });

  it('retires the older active revisions of the service', () => {
    const newest = row({ status: 'active', phase: 'retiring', revision: 5 }, SPEC, 'd5');
    const r4 = deployment('d4', { revision: 4, status: 'active' });
    expect(step(newest, [], { siblings: [r1, activated, r3, r4, newest] })).toEqual({ kind: 'retire', supersede: [r1, activated, r3, r4] });
    expect(step(activated, [], { siblings: [r1, activated] })).toEqual({ kind: 'retire', supersede: [r1] });
  });

  it('never retires a newer revision, itself, or revisions that are not active', () => {
    const siblings = [
      activated,
      r3,
      deployment('d-failed', { revision: 1, status: 'failed' }),
      deployment('d-cancelled', { revision: 1, status: 'cancelled' }),
      deployment('d-superseded', { revision: 1, status: 'superseded' }),
      deployment('d-pending', { revision: 1, status: 'pending' }),
      deployment('d-deploying', { revision: 1, status: 'deploying' }),
    ];
    expect(step(activated, [], { siblings })).toEqual({ kind: 'complete' });
    expect(step(activated, [], { siblings: [...siblings, r1] })).toEqual({ kind: 'retire', supersede: [r1] });
  });

  it('completes when nothing older is active (first revision, or after a crash mid-retire)', () => {
    expect(step(activated, [], { siblings: [] })).toEqual({ kind: 'complete' });
    expect(step(activated, [], { siblings: [{ ...r1, status: 'superseded' }] })).toEqual({ kind: 'complete' });
  });

  it('finishes the retirement of an active revision whatever its owner (resume from retiring)', () => {
    const orphaned = row({ status: 'active', phase: 'retiring', owner: OTHER, heartbeatAt: ago(HEARTBEAT + SECOND) });
    expect(step(orphaned, [], { siblings: [r1], ownerAlive: false })).toEqual({ kind: 'retire', supersede: [r1] });
    expect(step(orphaned, [], { siblings: [] })).toEqual({ kind: 'complete' });
  });

  it('does nothing more for an active revision whose rollout is complete', () => {
    expect(step(row({ status: 'active', phase: null }), [], { siblings: [r1] })).toEqual({ kind: 'none', why: 'active' });
  });

  it('activating does not make an older revision active beside a newer active one: it is superseded', () => {
    expect(step(row({ phase: 'activating' }), [], { siblings: [r3] })).toEqual({ kind: 'supersede', reason: `revision 3 (${r3.id}) is already active` });
  });
});

describe('planRollout: claim', () => {
  it('claims a pending controller deployment', () => {
    expect(step(row({ status: 'pending', phase: null, owner: null, attempts: 0, startedAt: null, heartbeatAt: null }))).toEqual({ kind: 'claim' });
  });

  it('claims a pending deployment with an invalid spec (the next step fails it, as the owner)', () => {
    expect(step(row({ status: 'pending', phase: null, owner: null }, { image: IMAGE, replicas: 'two' }))).toEqual({ kind: 'claim' });
  });
});

/** Phases a `deploying` row can be in (retiring is recorded together with `active`). */
const DEPLOYING_PHASES = ['pulling', 'creating', 'starting', 'health_check', 'activating'] as const satisfies readonly Phase[];

/** The world a rollout would find in each phase after a crash, and the step it must take once resumed. */
const RESUMED: Record<(typeof DEPLOYING_PHASES)[number], { containers: ContainerDetail[]; imagePresent: boolean; next: RolloutStep }> = {
  pulling: { containers: [], imagePresent: false, next: { kind: 'pull', image: IMAGE } },
  // Crashed half-way: replica 0 exists.
  creating: { containers: [containerDetail('d2', 0, created)], imagePresent: false, next: { kind: 'create', replicas: [1] } },
  // Crashed half-way: replica 0 was started.
  starting: { containers: [containerDetail('d2', 0), containerDetail('d2', 1, created)], imagePresent: false, next: { kind: 'start', containerIds: ['d2.1'] } },
  health_check: { containers: replicas(2, { startedAt: ago(30 * SECOND) }), imagePresent: false, next: { kind: 'advance', to: 'activating' } },
  activating: { containers: replicas(2), imagePresent: false, next: { kind: 'activate' } },
};

describe('planRollout: resume of an interrupted rollout', () => {
  describe.each(DEPLOYING_PHASES)('in phase %s', (phase) => {
    const world = RESUMED[phase];

    it('resumes when the owner stopped heart-beating', () => {
      const d = row({ phase, owner: OTHER, heartbeatAt: ago(HEARTBEAT + 1) });
      expect(step(d, world.containers, { imagePresent: world.imagePresent })).toEqual({ kind: 'resume', why: `owner ${OTHER} is gone` });
    });

    it('resumes at once when the owner is known dead, heartbeat fresh or not', () => {
      const d = row({ phase, owner: OTHER, heartbeatAt: ago(SECOND) });
      expect(step(d, world.containers, { ownerAlive: false })).toEqual({ kind: 'resume', why: `owner ${OTHER} is gone` });
    });

    it('resumes a rollout that has no owner', () => {
      expect(step(row({ phase, owner: null }))).toEqual({ kind: 'resume', why: 'no owner' });
    });

    it('leaves a rollout alone while its other owner is live', () => {
      const d = row({ phase, owner: OTHER, heartbeatAt: ago(SECOND) });
      expect(step(d, world.containers)).toEqual({ kind: 'none', why: `driven by ${OTHER}` });
    });

    it('once claimed, takes up the phase where it stopped, from the world as it is', () => {
      // The reconciler writes owner = me and attempts + 1 on resume, then plans again.
      const d = row({ phase, owner: ME, attempts: 2, heartbeatAt: ago(SECOND) });
      expect(step(d, world.containers, { imagePresent: world.imagePresent })).toEqual(world.next);
    });

    it('fails with the attempts exhausted instead of resuming', () => {
      const d = row({ phase, owner: OTHER, attempts: 3, heartbeatAt: ago(HEARTBEAT + 1) });
      expect(step(d, world.containers, { maxAttempts: 3 })).toEqual({ kind: 'fail', reason: `gave up after 3 attempts in phase ${phase}` });
    });
  });

  it.each([
    { silentMs: HEARTBEAT - 1, want: 'none' },
    { silentMs: HEARTBEAT, want: 'none' },
    { silentMs: HEARTBEAT + 1, want: 'resume' },
  ])('heartbeat $silentMs ms old (timeout 60s) -> $want', ({ silentMs, want }) => {
    expect(step(row({ owner: OTHER, heartbeatAt: ago(silentMs) })).kind).toBe(want);
  });

  it('judges liveness by started_at, then updated_at, when there is no heartbeat', () => {
    const fresh = ago(SECOND);
    const stale = ago(HEARTBEAT + SECOND);
    expect(step(row({ owner: OTHER, heartbeatAt: null, startedAt: fresh, updatedAt: stale })).kind).toBe('none');
    expect(step(row({ owner: OTHER, heartbeatAt: null, startedAt: stale, updatedAt: fresh })).kind).toBe('resume');
    expect(step(row({ owner: OTHER, heartbeatAt: null, startedAt: null, updatedAt: fresh })).kind).toBe('none');
    expect(step(row({ owner: OTHER, heartbeatAt: null, startedAt: null, updatedAt: stale })).kind).toBe('resume');
  });

  it.each([
    { attempts: 1, max: 3, want: { kind: 'resume', why: `owner ${OTHER} is gone` } },
    { attempts: 2, max: 3, want: { kind: 'resume', why: `owner ${OTHER} is gone` } },
    { attempts: 3, max: 3, want: { kind: 'fail', reason: 'gave up after 3 attempts in phase creating' } },
    { attempts: 5, max: 3, want: { kind: 'fail', reason: 'gave up after 5 attempts in phase creating' } },
    { attempts: 1, max: 1, want: { kind: 'fail', reason: 'gave up after 1 attempts in phase creating' } },
  ])('attempts $attempts of $max -> $want.kind', ({ attempts, max, want }) => {
    expect(step(row({ phase: 'creating', owner: OTHER, attempts, heartbeatAt: ago(2 * HEARTBEAT) }), [], { maxAttempts: max })).toEqual(want);
  });

  it('names pulling when a row with attempts exhausted has no phase', () => {
    expect(step(row({ phase: null, owner: null, attempts: 3 }))).toEqual({ kind: 'fail', reason: 'gave up after 3 attempts in phase pulling' });
  });

  it('does not give up on a rollout whose live owner used up its attempts, nor on our own', () => {
    expect(step(row({ owner: OTHER, attempts: 3, heartbeatAt: ago(SECOND) }))).toEqual({ kind: 'none', why: `driven by ${OTHER}` });
    expect(step(row({ phase: 'activating', owner: ME, attempts: 3 }))).toEqual({ kind: 'activate' });
  });
});

describe('planRollout: progressDeadline', () => {
  const DEADLINE = 10 * MINUTE;

  it('matches formatDuration for the default deadline', () => {
    expect(formatDuration(DEADLINE)).toBe('10m0s');
  });

  it.each(DEPLOYING_PHASES)('fails a rollout past the deadline in phase %s', (phase) => {
    const d = row({ phase, startedAt: ago(DEADLINE + 1) });
    expect(step(d, RESUMED[phase].containers)).toEqual({ kind: 'fail', reason: `progress deadline 10m0s exceeded in phase ${phase}` });
  });

  it.each(DEPLOYING_PHASES)('does not fail exactly at the deadline in phase %s', (phase) => {
    const d = row({ phase, startedAt: ago(DEADLINE) });
    expect(step(d, RESUMED[phase].containers, { imagePresent: RESUMED[phase].imagePresent })).toEqual(RESUMED[phase].next);
  });

  it.each([
    { deadline: '90s', text: '1m30s' },
    { deadline: '1h30m', text: '1h30m' },
    { deadline: '45s', text: '45s' },
  ])('uses the spec deadline $deadline', ({ deadline, text }) => {
    const d = row({ phase: 'health_check', startedAt: ago(5 * 3_600_000) }, { ...SPEC, rollout: { progressDeadline: deadline } });
    expect(step(d, replicas(2))).toEqual({ kind: 'fail', reason: `progress deadline ${text} exceeded in phase health_check` });
  });

  it('counts from created_at when the row has no started_at', () => {
    expect(step(row({ startedAt: null, createdAt: ago(DEADLINE + 1) }))).toEqual({ kind: 'fail', reason: 'progress deadline 10m0s exceeded in phase pulling' });
    expect(step(row({ startedAt: null, createdAt: ago(DEADLINE) })).kind).toBe('advance');
  });

  it('names pulling when the row has no phase', () => {
    expect(step(row({ phase: null, startedAt: ago(DEADLINE + 1) }))).toEqual({ kind: 'fail', reason: 'progress deadline 10m0s exceeded in phase pulling' });
  });

  it('is judged by the owner: a stale rollout past its deadline is resumed first, then failed', () => {
    expect(step(row({ owner: OTHER, heartbeatAt: ago(2 * HEARTBEAT), startedAt: ago(DEADLINE + 1) })).kind).toBe('resume');
  });

  it('never fails an active revision that is retiring', () => {
    const d = row({ status: 'active', phase: 'retiring', startedAt: ago(DEADLINE * 10) });
    expect(step(d)).toEqual({ kind: 'complete' });
  });
});

describe('planRollout: rows that are not ours to drive', () => {
  const PHASES_AND_NULL = [null, ...PHASES] as const;

  describe.each(['failed', 'cancelled', 'superseded'] as const)('%s (cancel or failure during a phase)', (status) => {
    it.each(PHASES_AND_NULL)('does nothing in phase %s', (phase) => {
      // Even when it is ours, its world is in mid-phase, and its deadline and attempts are spent.
      const d = row({ status, phase, owner: ME, attempts: 9, startedAt: ago(60 * MINUTE) });
      const world = { imagePresent: false, siblings: [deployment('d1', { revision: 1, status: 'active' })] };
      expect(step(d, replicas(2, created), world)).toEqual({ kind: 'none', why: status });
      expect(step({ ...d, owner: OTHER }, [], { ...world, ownerAlive: false })).toEqual({ kind: 'none', why: status });
    });
  });

  it.each([
    { status: 'pending', phase: null },
    ...PHASES.filter((p) => p !== 'retiring').map((phase) => ({ status: 'deploying' as const, phase })),
    { status: 'deploying', phase: null },
    { status: 'active', phase: 'retiring' },
    { status: 'active', phase: null },
  ] as const)('leaves a $status row in phase $phase of another executor alone', ({ status, phase }) => {
    const d = row({ status, phase, executor: 'platform-worker', owner: null, heartbeatAt: ago(HOUR_AGO), attempts: 9 }, { nonsense: true });
    expect(step(d, [], { ownerAlive: false, siblings: [deployment('d1', { revision: 1, status: 'active' })] })).toEqual({
      kind: 'none',
      why: 'driven by executor platform-worker',
    });
  });
});

describe('planRollout: invalid spec', () => {
  it.each([
    { spec: { image: IMAGE, replicas: 'two' }, field: 'spec.replicas', reason: 'invalid spec: spec.replicas: expected a whole number from 0 to 1000, got "two"' },
    { spec: { image: IMAGE, replicas: -1 }, field: 'spec.replicas', reason: 'invalid spec: spec.replicas: expected a whole number from 0 to 1000, got -1' },
    { spec: { replicas: 1 }, field: 'spec.image', reason: 'invalid spec: spec.image: required' },
    { spec: { image: IMAGE, replica: 2 }, field: 'spec.replica', reason: 'invalid spec: spec.replica: unknown field' },
    { spec: { image: IMAGE, rollout: { progressDeadline: 'soon' } }, field: 'spec.rollout.progressDeadline', reason: undefined },
    { spec: { image: IMAGE, healthcheck: { test: [] } }, field: 'spec.healthcheck.test', reason: undefined },
  ])('fails naming $field', ({ spec, field, reason }) => {
    const result = step(row({ phase: 'creating' }, spec));
    expect(result.kind).toBe('fail');
    const text = result.kind === 'fail' ? result.reason : '';
    expect(text.startsWith(`invalid spec: ${field}: `)).toBe(true);
    if (reason) expect(text).toBe(reason);
  });

  it('fails a spec that is not an object', () => {
    const result = step(row({}, null));
    expect(result).toMatchObject({ kind: 'fail' });
    expect(result.kind === 'fail' && result.reason.startsWith('invalid spec: spec')).toBe(true);
  });

  it.each(DEPLOYING_PHASES)('fails it in phase %s before looking at the world', (phase) => {
    expect(step(row({ phase }, { image: IMAGE, replicas: 'two' }), RESUMED[phase].containers).kind).toBe('fail');
  });

  it('leaves the failing to the owner while it is live', () => {
    expect(step(row({ owner: OTHER }, { image: IMAGE, replicas: 'two' }))).toEqual({ kind: 'none', why: `driven by ${OTHER}` });
  });
});

describe('containerName', () => {
  it.each([
    { project: 'shop', service: 'web', revision: 3, replica: 0, name: 'shop.web.r3.0' },
    { project: 'shop', service: 'web', revision: 12, replica: 4, name: 'shop.web.r12.4' },
    { project: 'My Shop', service: 'Web_API', revision: 1, replica: 0, name: 'my-shop.web_api.r1.0' },
    { project: '--edge--', service: 'a/b.c', revision: 1, replica: 1, name: 'edge.a-b-c.r1.1' },
    { project: '!!!', service: '', revision: 1, replica: 0, name: 'x.x.r1.0' },
  ])('$project/$service r$revision replica $replica -> $name', ({ project, service, revision, replica, name }) => {
    expect(containerName({ project, service, revision }, replica)).toBe(name);
  });

  it('is deterministic and distinct per revision and replica', () => {
    const d = { project: 'shop', service: 'web', revision: 2 };
    expect(containerName(d, 0)).toBe(containerName({ ...d }, 0));
    const names = new Set([containerName(d, 0), containerName(d, 1), containerName({ ...d, revision: 3 }, 0), containerName({ ...d, service: 'api' }, 0)]);
    expect(names.size).toBe(4);
  });

  // BUG (reported, src/reconcilers/rollout.ts `slug`): a project or service starting with `_` keeps it, and
  // Docker refuses names that do not start with [a-zA-Z0-9] (400 "Invalid container name", checked on a
  // private dockerd). Manifests only allow DNS labels, but rows inserted with plain SQL (DESIGN.md 3.2) are
  // not checked: their rollout retries `creating` until the progress deadline fails it with a reason that
  // does not name the cause. Expected to pass once `slug` also trims leading `_` and `.`.
  it.each([
    { project: 'shop', service: 'web' },
    { project: 'My Shop', service: 'Web_API' },
    { project: '_internal', service: 'web' },
    { project: 'shop', service: '_worker' },
    { project: '.hidden', service: '-x' },
  ])('gives a name Docker accepts for $project/$service', ({ project, service }) => {
    expect(containerName({ project, service, revision: 1 }, 0)).toMatch(/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/);
  });
});

describe('missingReplicas', () => {
  const at = (...labels: (string | undefined)[]): { labels: Record<string, string> }[] =>
    labels.map((value) => ({ labels: value === undefined ? ({} as Record<string, string>) : { [LABELS.replica]: value } }));

  it.each([
    { have: at(), replicas: 3, missing: [0, 1, 2] },
    { have: at('0', '1', '2'), replicas: 3, missing: [] },
    { have: at('2', '0'), replicas: 3, missing: [1] },
    { have: at('1', '1'), replicas: 2, missing: [0] },
    { have: at('5'), replicas: 2, missing: [0, 1] },
    { have: at(undefined, 'x', '-1', '1.5'), replicas: 2, missing: [0, 1] },
    { have: at('0'), replicas: 0, missing: [] },
    { have: at('3'), replicas: 4, missing: [0, 1, 2] },
  ])('$replicas replicas -> missing $missing', ({ have, replicas: n, missing }) => {
    expect(missingReplicas(have, n)).toEqual(missing);
  });
});

describe('progressAt', () => {
  it('has one step per phase', () => {
    expect(TOTAL_STEPS).toBe(6);
    expect(PHASES).toHaveLength(TOTAL_STEPS);
  });

  it.each([
    { phase: 'pulling', step: 1, percent: 0 },
    { phase: 'creating', step: 2, percent: 17 },
    { phase: 'starting', step: 3, percent: 33 },
    { phase: 'health_check', step: 4, percent: 50 },
    { phase: 'activating', step: 5, percent: 67 },
    { phase: 'retiring', step: 6, percent: 83 },
  ] as const)('$phase is step $step of 6 at $percent%', ({ phase, step: n, percent }) => {
    expect(progressAt(phase, `phase ${phase}`)).toEqual({ step: n, total: 6, percent, message: `phase ${phase}` });
  });

  it('percent is the share of phases done before this one, rounded', () => {
    for (const [i, phase] of PHASES.entries()) expect(progressAt(phase, '').percent).toBe(Math.round((i / 6) * 100));
  });
});

describe('planRollout: a newer revision is already active', () => {
  const newer = deployment('d3', { revision: 3, status: 'active', phase: null });
  const older = deployment('d1', { revision: 1, status: 'active', phase: null });

  it('supersedes a pending revision instead of claiming it', () => {
    expect(step(row({ status: 'pending', phase: null, owner: null, attempts: 0 }), [], { siblings: [older, newer] })).toEqual({
      kind: 'supersede',
      reason: 'revision 3 (d3) is already active',
    });
  });

  it.each(PHASES.filter((p) => p !== 'retiring'))('supersedes its own rollout in phase %s', (phase) => {
    expect(step(row({ phase }), replicas(2), { siblings: [newer] })).toMatchObject({ kind: 'supersede' });
  });

  it('supersedes a rollout whose owner is gone, without resuming it', () => {
    expect(step(row({ owner: OTHER, heartbeatAt: ago(HOUR_AGO) }), [], { siblings: [newer], ownerAlive: false })).toMatchObject({ kind: 'supersede' });
  });

  it("leaves a live other owner's rollout to that owner", () => {
    expect(step(row({ owner: OTHER }), [], { siblings: [newer] })).toMatchObject({ kind: 'none' });
  });

  it('goes on as usual when only older revisions are active', () => {
    expect(step(row({ status: 'pending', phase: null, owner: null, attempts: 0 }), [], { siblings: [older] })).toEqual({ kind: 'claim' });
    expect(step(row({ phase: 'pulling' }), [], { siblings: [older] })).toEqual({ kind: 'advance', to: 'creating' });
  });
});
