import { describe, expect, it } from 'vitest';
import { planZombies } from '../../src/reconcilers/zombies.js';
import { DEPLOYMENT_STATUSES, type Deployment, type DeploymentStatus } from '../../src/types.js';
import { ago, deployment, HOUR, MINUTE, policy, SECOND, snapshot } from './fixtures.js';

const STUCK = 6 * HOUR;
const HEARTBEAT = 60 * SECOND;

/** A rollout started `startedAgo` ago that beat its heart just now, unless overridden. */
function rollout(overrides: Partial<Omit<Deployment, 'id'>> = {}, id = 'd1'): Deployment {
  return deployment(id, {
    status: 'deploying',
    phase: 'health_check',
    executor: 'controller',
    attempts: 1,
    startedAt: ago(HOUR),
    heartbeatAt: ago(SECOND),
    createdAt: ago(HOUR),
    updatedAt: ago(SECOND),
    ...overrides,
  });
}

function plan(...deployments: Deployment[]) {
  return planZombies(snapshot({ deployments }), policy({ stuckTimeoutMs: STUCK, heartbeatTimeoutMs: HEARTBEAT, maxAttempts: 3 }));
}

describe('planZombies: stuckTimeout', () => {
  it.each([
    { status: 'deploying', age: STUCK + 1, failed: true },
    { status: 'deploying', age: STUCK + 59 * SECOND, failed: true },
    { status: 'deploying', age: STUCK, failed: false },
    { status: 'deploying', age: STUCK - 1, failed: false },
    { status: 'pending', age: STUCK + 1, failed: true },
    { status: 'pending', age: STUCK, failed: false },
  ] as const)('$status for $age ms: failed $failed', ({ status, age, failed }) => {
    const d = rollout({ status, startedAt: ago(age) });
    const actions = plan(d);
    expect(actions.length).toBe(failed ? 1 : 0);
    if (failed) {
      expect(actions[0]).toEqual({
        kind: 'mark_failed',
        deploymentId: 'd1',
        expectVersion: d.version,
        expectStatus: status,
        cause: 'stuck',
        reason: 'timed out after 6h0m in phase health_check',
      });
    }
  });

  it.each([
    { age: 6 * HOUR + 30 * MINUTE + 10 * SECOND, phase: 'pulling', reason: 'timed out after 6h30m in phase pulling' },
    { age: 26 * HOUR + 5 * MINUTE, phase: 'retiring', reason: 'timed out after 26h5m in phase retiring' },
    { age: 7 * HOUR, phase: null, reason: 'timed out after 7h0m in phase deploying' },
  ] as const)('reason for $age ms in phase $phase: "$reason"', ({ age, phase, reason }) => {
    expect(plan(rollout({ startedAt: ago(age), phase }))[0]?.reason).toBe(reason);
  });

  it('counts from startedAt, or from createdAt when the rollout never started', () => {
    const startedRecently = rollout({ createdAt: ago(10 * HOUR), startedAt: ago(HOUR) });
    expect(plan(startedRecently)).toEqual([]);

    const neverStarted = rollout({ status: 'pending', phase: null, createdAt: ago(STUCK + SECOND), startedAt: null, heartbeatAt: null });
    expect(plan(neverStarted)).toEqual([
      expect.objectContaining({ cause: 'stuck', expectStatus: 'pending', reason: 'timed out after 6h0m in phase pending' }),
    ]);
  });

  it('honours a configured stuckTimeout', () => {
    const d = rollout({ startedAt: ago(2 * HOUR) });
    expect(planZombies(snapshot({ deployments: [d] }), policy({ stuckTimeoutMs: HOUR }))).toHaveLength(1);
    expect(planZombies(snapshot({ deployments: [d] }), policy({ stuckTimeoutMs: 3 * HOUR }))).toHaveLength(0);
  });

  it('takes precedence over a stale heartbeat (one action per deployment)', () => {
    const d = rollout({ executor: 'worker-7', startedAt: ago(7 * HOUR), heartbeatAt: ago(7 * HOUR) });
    expect(plan(d)).toEqual([expect.objectContaining({ cause: 'stuck' })]);
  });
});

describe('planZombies: outside executors and their heartbeat', () => {
  it.each([
    { silent: HEARTBEAT + 1, failed: true },
    { silent: 5 * MINUTE, failed: true },
    { silent: HEARTBEAT, failed: false }, // exactly at heartbeatTimeout: still alive
    { silent: HEARTBEAT - 1, failed: false },
  ])('no heartbeat for $silent ms: failed $failed', ({ silent, failed }) => {
    const d = rollout({ executor: 'platform-worker', heartbeatAt: ago(silent) });
    const actions = plan(d);
    expect(actions).toHaveLength(failed ? 1 : 0);
    if (failed) {
      expect(actions[0]).toMatchObject({ kind: 'mark_failed', deploymentId: 'd1', cause: 'no_heartbeat', expectStatus: 'deploying', expectVersion: d.version });
      expect(actions[0]?.reason).toMatch(/^no heartbeat from executor platform-worker for \S+ in phase health_check$/);
    }
  });

  it('formats the silence in the reason', () => {
    expect(plan(rollout({ executor: 'w', heartbeatAt: ago(5 * MINUTE + 7 * SECOND) }))[0]?.reason).toBe(
      'no heartbeat from executor w for 5m7s in phase health_check',
    );
  });

  it('without any heartbeat, counts from startedAt', () => {
    expect(plan(rollout({ executor: 'w', heartbeatAt: null, startedAt: ago(2 * MINUTE) }))).toHaveLength(1);
    expect(plan(rollout({ executor: 'w', heartbeatAt: null, startedAt: ago(30 * SECOND) }))).toHaveLength(0);
  });

  it('does not apply to pending rows (nobody has to beat for them yet)', () => {
    expect(plan(rollout({ status: 'pending', executor: 'w', heartbeatAt: ago(HOUR) }))).toEqual([]);
  });

  it('honours a configured heartbeatTimeout', () => {
    const d = rollout({ executor: 'w', heartbeatAt: ago(3 * MINUTE) });
    expect(planZombies(snapshot({ deployments: [d] }), policy({ heartbeatTimeoutMs: 2 * MINUTE }))).toHaveLength(1);
    expect(planZombies(snapshot({ deployments: [d] }), policy({ heartbeatTimeoutMs: 5 * MINUTE }))).toHaveLength(0);
  });
});

describe('planZombies: controller rollouts and maxAttempts', () => {
  it.each([
    { attempts: 3, stale: true, failed: true },
    { attempts: 5, stale: true, failed: true },
    { attempts: 2, stale: true, failed: false }, // left for the interrupted-phase rule to resume
    { attempts: 0, stale: true, failed: false },
    { attempts: 3, stale: false, failed: false }, // its owner is still beating
    { attempts: 9, stale: false, failed: false },
  ])('attempts $attempts of 3, heartbeat stale $stale: failed $failed', ({ attempts, stale, failed }) => {
    const d = rollout({ executor: 'controller', attempts, heartbeatAt: ago(stale ? HEARTBEAT + 1 : HEARTBEAT) });
    const actions = plan(d);
    expect(actions).toHaveLength(failed ? 1 : 0);
    if (failed) {
      expect(actions[0]).toEqual({
        kind: 'mark_failed',
        deploymentId: 'd1',
        expectVersion: d.version,
        expectStatus: 'deploying',
        cause: 'attempts_exhausted',
        reason: `gave up after ${attempts} attempts in phase health_check`,
      });
    }
  });

  it('honours a configured maxAttempts', () => {
    const d = rollout({ attempts: 4, heartbeatAt: ago(HOUR) });
    expect(planZombies(snapshot({ deployments: [d] }), policy({ maxAttempts: 4 }))).toHaveLength(1);
    expect(planZombies(snapshot({ deployments: [d] }), policy({ maxAttempts: 5 }))).toHaveLength(0);
  });
});

describe('planZombies: settled rows', () => {
  const settled = DEPLOYMENT_STATUSES.filter((s): s is Exclude<DeploymentStatus, 'pending' | 'deploying'> => s !== 'pending' && s !== 'deploying');
  it.each(settled)('never touches a %s row, however old or silent', (status) => {
    const d = rollout({ status, executor: 'w', attempts: 99, startedAt: ago(100 * HOUR), createdAt: ago(100 * HOUR), heartbeatAt: ago(100 * HOUR) });
    expect(plan(d)).toEqual([]);
  });
});

describe('planZombies: compare-and-set expectations', () => {
  it('carries each row’s own version and status', () => {
    const rows = [
      rollout({ status: 'pending', version: 17, startedAt: null, createdAt: ago(7 * HOUR) }, 'p'),
      rollout({ status: 'deploying', version: 42, executor: 'w', heartbeatAt: ago(HOUR) }, 'd'),
      rollout({ status: 'deploying', version: 3, attempts: 3, heartbeatAt: ago(HOUR) }, 'c'),
      rollout({ status: 'deploying', version: 8 }, 'healthy'),
    ];
    const actions = plan(...rows);
    expect(actions.map((a) => [a.deploymentId, a.expectVersion, a.expectStatus, a.cause])).toEqual([
      ['p', 17, 'pending', 'stuck'],
      ['d', 42, 'deploying', 'no_heartbeat'],
      ['c', 3, 'deploying', 'attempts_exhausted'],
    ]);
  });
});
