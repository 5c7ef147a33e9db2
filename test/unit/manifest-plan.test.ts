/**
 * The apply and delete planners over plain data: what is unchanged, what
 * gets its next revision, what an apply replaces, what a prune cancels.
 */
import { describe, expect, it } from 'vitest';
import { planApply, planDelete, planWrites, revisionId, sameSpec, type LiveRevision, type StoredService } from '../../src/manifest/apply-plan.js';
import { parseManifests, serviceKey, type ServiceManifest } from '../../src/manifest/manifest.js';
import { specHash, validateSpec } from '../../src/manifest/spec.js';

function manifest(name: string, image: string, project = 'shop'): ServiceManifest {
  const result = parseManifests('m.yaml', `apiVersion: deployer/v1\nkind: Service\nmetadata: { project: ${project}, name: ${name} }\nspec: { image: "${image}" }\n`);
  expect(result.problems).toEqual([]);
  return result.services[0]!;
}

function revision(name: string, n: number, image: string, overrides: Partial<LiveRevision> = {}, project = 'shop'): LiveRevision {
  const spec = validateSpec({ image });
  return {
    id: revisionId(project, name, n),
    project,
    service: name,
    revision: n,
    status: 'active',
    executor: 'controller',
    specHash: specHash(spec),
    spec,
    version: 1,
    ...overrides,
  };
}

function state(...records: [string, StoredService][]): Map<string, StoredService> {
  return new Map(records);
}

describe('planApply', () => {
  it('creates revision 1 of a new service', () => {
    const plan = planApply([manifest('web', 'web:1')], state(), { prune: false });
    expect(plan.unchanged).toEqual([]);
    expect(plan.created).toHaveLength(1);
    expect(plan.created[0]).toMatchObject({ revision: 1, id: 'shop.web.r1', current: undefined, replaces: [] });
    expect(planWrites(plan)).toBe(true);
  });

  it('writes nothing when the newest live revision has the same spec', () => {
    const current = revision('web', 3, 'web:1');
    const plan = planApply([manifest('web', 'web:1')], state([serviceKey('shop', 'web'), { live: [current], maxRevision: 3 }]), { prune: true });
    expect(plan.created).toEqual([]);
    expect(plan.unchanged.map((u) => u.current.id)).toEqual(['shop.web.r3']);
    expect(planWrites(plan)).toBe(false);
  });

  it('counts a stored spec as the same when only its hash was written differently (a platform row)', () => {
    const current = revision('web', 1, 'web:1', { specHash: 'sha256:whatever', spec: { image: 'web:1' } });
    expect(sameSpec(current, manifest('web', 'web:1'))).toBe(true);
    expect(sameSpec(current, manifest('web', 'web:2'))).toBe(false);
    expect(sameSpec(revision('web', 1, 'x', { specHash: 'h', spec: { image: 'web:1', replicas: 'two' } }), manifest('web', 'web:1'))).toBe(false);
  });

  it('creates the next revision after the highest one, terminal revisions included', () => {
    const active = revision('web', 2, 'web:1');
    const plan = planApply([manifest('web', 'web:2')], state([serviceKey('shop', 'web'), { live: [active], maxRevision: 5 }]), { prune: false });
    expect(plan.created[0]).toMatchObject({ revision: 6, id: 'shop.web.r6', current: active, replaces: [] });
  });

  it('compares with the newest live revision, not with the active one', () => {
    const pending = revision('web', 3, 'web:2', { status: 'pending' });
    const active = revision('web', 2, 'web:1');
    const record: StoredService = { live: [pending, active], maxRevision: 3 };
    // Back to the active spec: the pending revision differs, so a new revision is made.
    const back = planApply([manifest('web', 'web:1')], state([serviceKey('shop', 'web'), record]), { prune: false });
    expect(back.created[0]).toMatchObject({ revision: 4, current: pending });
    // The pending spec again: nothing to do.
    const same = planApply([manifest('web', 'web:2')], state([serviceKey('shop', 'web'), record]), { prune: false });
    expect(same.unchanged[0]!.current).toBe(pending);
  });

  it('replaces unfinished controller rollouts, never the active revision or an outside executor', () => {
    const deploying = revision('web', 4, 'web:3', { status: 'deploying' });
    const pending = revision('web', 3, 'web:2', { status: 'pending' });
    const outside = revision('web', 2, 'web:2b', { status: 'deploying', executor: 'platform-worker' });
    const active = revision('web', 1, 'web:1');
    const record: StoredService = { live: [deploying, pending, outside, active], maxRevision: 4 };
    const plan = planApply([manifest('web', 'web:9')], state([serviceKey('shop', 'web'), record]), { prune: false });
    expect(plan.created[0]!.replaces.map((r) => r.id)).toEqual(['shop.web.r4', 'shop.web.r3']);
  });

  it('prunes, in the manifests projects only, the live services no longer named', () => {
    const stored = state(
      [serviceKey('shop', 'web'), { live: [revision('web', 1, 'web:1')], maxRevision: 1 }],
      [serviceKey('shop', 'old'), { live: [revision('old', 2, 'old:1', { status: 'pending' }), revision('old', 1, 'old:1')], maxRevision: 2 }],
      [serviceKey('shop', 'gone'), { live: [], maxRevision: 7 }],
      [serviceKey('blog', 'app'), { live: [revision('app', 1, 'app:1', {}, 'blog')], maxRevision: 1 }],
    );
    const manifests = [manifest('web', 'web:1')];
    expect(planApply(manifests, stored, { prune: false }).pruned).toEqual([]);
    const plan = planApply(manifests, stored, { prune: true });
    expect(plan.pruned.map((p) => [p.project, p.service, p.cancel.map((r) => r.id)])).toEqual([['shop', 'old', ['shop.old.r2', 'shop.old.r1']]]);
    expect(planWrites(plan)).toBe(true);
  });
});

describe('planDelete', () => {
  it('cancels every live revision of each named service and reports those with none', () => {
    const stored = state(
      [serviceKey('shop', 'web'), { live: [revision('web', 2, 'web:2', { status: 'pending' }), revision('web', 1, 'web:1')], maxRevision: 2 }],
      [serviceKey('shop', 'old'), { live: [], maxRevision: 3 }],
    );
    const plan = planDelete([manifest('web', 'web:1'), manifest('old', 'old:1'), manifest('new', 'new:1')], stored);
    expect(plan.deleted.map((d) => [d.service, d.cancel.map((r) => r.id)])).toEqual([['web', ['shop.web.r2', 'shop.web.r1']]]);
    expect(plan.notFound.map((m) => m.name)).toEqual(['old', 'new']);
  });
});
