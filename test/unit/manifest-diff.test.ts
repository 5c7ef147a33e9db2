/**
 * What `deployerctl diff` prints: specs in canonical YAML and unified diffs
 * (the same hunks as GNU `diff -u`), per service.
 */
import { describe, expect, it } from 'vitest';
import type { ApplyPlan, LiveRevision } from '../../src/manifest/apply-plan.js';
import { parseManifests, type ServiceManifest } from '../../src/manifest/manifest.js';
import { colorDiff, planDiff, specYaml, unifiedDiff } from '../../src/manifest/spec-diff.js';

const numbered = (n: number) => Array.from({ length: n }, (_, i) => `line ${i + 1}\n`).join('');

function manifest(spec: string, name = 'web'): ServiceManifest {
  const result = parseManifests('web.yaml', `apiVersion: deployer/v1\nkind: Service\nmetadata: { project: shop, name: ${name} }\nspec:\n${spec}`);
  expect(result.problems).toEqual([]);
  return result.services[0]!;
}

function live(spec: unknown, overrides: Partial<LiveRevision> = {}): LiveRevision {
  return { id: 'shop.web.r1', project: 'shop', service: 'web', revision: 1, status: 'active', executor: 'controller', specHash: 'old', spec, version: 3, ...overrides };
}

describe('unifiedDiff', () => {
  it('is empty for equal texts', () => {
    expect(unifiedDiff('a\nb\n', 'a\nb\n', { oldLabel: 'x', newLabel: 'y' })).toBe('');
  });

  it('prints hunks with three lines of context, as diff -u does', () => {
    const before = numbered(20);
    const after = before.replace('line 3\n', 'line three\n').replace('line 18\n', '').replace('line 20\n', 'line 20\nline 21\n');
    expect(unifiedDiff(before, after, { oldLabel: 'old', newLabel: 'new' })).toBe(
      [
        '--- old',
        '+++ new',
        '@@ -1,6 +1,6 @@',
        ' line 1',
        ' line 2',
        '-line 3',
        '+line three',
        ' line 4',
        ' line 5',
        ' line 6',
        '@@ -15,6 +15,6 @@',
        ' line 15',
        ' line 16',
        ' line 17',
        '-line 18',
        ' line 19',
        ' line 20',
        '+line 21',
        '',
      ].join('\n'),
    );
  });

  it('joins changes closer than twice the context into one hunk', () => {
    const before = numbered(12);
    const after = before.replace('line 3\n', 'LINE 3\n').replace('line 9\n', 'LINE 9\n');
    const diff = unifiedDiff(before, after, { oldLabel: 'a', newLabel: 'b' });
    expect(diff.match(/^@@/gm)).toHaveLength(1);
    expect(diff).toContain('@@ -1,12 +1,12 @@\n');
  });

  it('shows a new text as all additions and a removed one as all removals', () => {
    expect(unifiedDiff('', 'x\ny\n', { oldLabel: 'a', newLabel: 'b' })).toBe('--- a\n+++ b\n@@ -0,0 +1,2 @@\n+x\n+y\n');
    expect(unifiedDiff('x\n', '', { oldLabel: 'a', newLabel: 'b' })).toBe('--- a\n+++ b\n@@ -1 +0,0 @@\n-x\n');
  });

  it('colours removals red and additions green for a terminal', () => {
    const coloured = colorDiff('--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n');
    expect(coloured).toContain('\x1b[31m-x\x1b[0m');
    expect(coloured).toContain('\x1b[32m+y\x1b[0m');
    expect(coloured).toContain('\x1b[36m@@ -1 +1 @@\x1b[0m');
  });
});

describe('specYaml', () => {
  it('writes fields in manifest order and maps sorted, whatever order jsonb kept', () => {
    const stored = { labels: { b: '1', a: '2' }, rollout: { minReadySeconds: 3, progressDeadline: '1m' }, image: 'x', env: { Z: '1', A: '2' } };
    expect(specYaml(stored)).toBe(
      ['image: x', 'replicas: 1', 'env:', '  A: "2"', '  Z: "1"', 'rollout:', '  progressDeadline: 1m', '  minReadySeconds: 3', 'labels:', '  a: "2"', '  b: "1"', ''].join('\n'),
    );
  });

  it('applies the defaults to a stored spec written without them, so they show no difference', () => {
    expect(specYaml({ image: 'x' })).toBe(specYaml(manifest('  image: x\n').spec));
  });

  it('shows an invalid stored spec as it is', () => {
    expect(specYaml({ image: 'x', replicas: 'two' })).toBe('image: x\nreplicas: two\n');
  });
});

describe('planDiff', () => {
  it('diffs a changed spec against the newest live revision', () => {
    const next = manifest('  image: shop-web:1.5.0\n  replicas: 2\n');
    const plan: ApplyPlan = {
      created: [{ manifest: next, revision: 2, id: 'shop.web.r2', current: live({ image: 'shop-web:1.4.2', replicas: 2 }), replaces: [] }],
      unchanged: [],
      pruned: [],
    };
    expect(planDiff(plan)).toBe(
      [
        '--- shop/web (revision 1, active)',
        '+++ shop/web (web.yaml)',
        '@@ -1,4 +1,4 @@',
        '-image: shop-web:1.4.2',
        '+image: shop-web:1.5.0',
        ' replicas: 2',
        ' rollout:',
        '   progressDeadline: 10m',
        '',
      ].join('\n'),
    );
  });

  it('diffs a new service against nothing, and a pruned one to nothing', () => {
    const plan: ApplyPlan = {
      created: [{ manifest: manifest('  image: api:1\n', 'api'), revision: 1, id: 'shop.api.r1', current: undefined, replaces: [] }],
      unchanged: [],
      pruned: [{ project: 'shop', service: 'old', cancel: [live({ image: 'old:1' }, { id: 'shop.old.r4', service: 'old', revision: 4 })] }],
    };
    expect(planDiff(plan)).toBe(
      [
        '--- shop/api (none)',
        '+++ shop/api (web.yaml)',
        '@@ -0,0 +1,5 @@',
        '+image: api:1',
        '+replicas: 1',
        '+rollout:',
        '+  progressDeadline: 10m',
        '+  minReadySeconds: 0',
        '--- shop/old (revision 4, active)',
        '+++ shop/old (pruned)',
        '@@ -1,5 +0,0 @@',
        '-image: old:1',
        '-replicas: 1',
        '-rollout:',
        '-  progressDeadline: 10m',
        '-  minReadySeconds: 0',
        '',
      ].join('\n'),
    );
  });

  it('is empty when nothing changes', () => {
    const same = manifest('  image: x\n');
    expect(planDiff({ created: [], unchanged: [{ manifest: same, current: live(same.spec) }], pruned: [] })).toBe('');
  });
});
