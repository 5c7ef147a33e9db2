/**
 * Manifests: parsing, validation and the messages people see for each kind
 * of mistake (file:line:column, field path, what was expected and what was
 * given), hostile input, directories, stdin, and the JSON Schema for editors.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manifestJsonSchema, NAME_PATTERN, parseManifests } from '../../src/manifest/manifest.js';
import { loadManifests, MAX_MANIFEST_BYTES } from '../../src/manifest/sources.js';
import { specHash, validateSpec } from '../../src/manifest/spec.js';

const EXAMPLES = join(import.meta.dirname, '..', '..', 'manifests');

/** A Service document; `spec` is the indented body of `spec:`. */
function service(spec: string, metadata = 'metadata: { project: shop, name: web }'): string {
  return `apiVersion: deployer/v1\nkind: Service\n${metadata}\nspec:\n${spec}`;
}

function problems(text: string, file = 'web.yaml'): string[] {
  return parseManifests(file, text).problems;
}

describe('the example manifests', () => {
  it('all load, validate and have distinct services', async () => {
    const set = await loadManifests([EXAMPLES]);
    expect(set.problems).toEqual([]);
    expect(set.notes).toEqual([]);
    expect(set.services.map((s) => `${s.project}/${s.name}`)).toEqual(['blog/db', 'blog/app', 'shop/web', 'shop/worker', 'shop/cache']);
  });

  it('hold the spec with defaults applied, and its hash', async () => {
    const set = await loadManifests([join(EXAMPLES, 'shop.yaml')]);
    const web = set.services.find((s) => s.name === 'web')!;
    expect(web.origin).toBe(`${join(EXAMPLES, 'shop.yaml')}:9:1`);
    expect(web.spec.replicas).toBe(2);
    expect(web.spec.env).toEqual({ LOG_LEVEL: 'info', PORT: '8080', CACHE_URL: 'redis://shop-cache:6379/0' });
    expect(web.spec.volumes).toEqual(['shop-uploads:/app/uploads', '/app/tmp']);
    expect(web.specHash).toBe(specHash(validateSpec(web.spec)));
    const worker = set.services.find((s) => s.name === 'worker')!;
    expect(worker.spec.replicas).toBe(1);
    expect(worker.spec.rollout).toEqual({ progressDeadline: '5m', minReadySeconds: 0 });
  });
});

describe('parseManifests', () => {
  it('reads several documents, skipping empty ones', () => {
    const text = [
      '---',
      '# nothing here',
      '---',
      service('  image: a:1\n').trimEnd(),
      '---',
      '',
      '---',
      service('  image: b:1\n', 'metadata: { project: shop, name: api }').trimEnd(),
      '...',
    ].join('\n');
    const result = parseManifests('two.yaml', text);
    expect(result.problems).toEqual([]);
    expect(result.services.map((s) => [s.name, s.origin])).toEqual([
      ['web', 'two.yaml:4:1'],
      ['api', 'two.yaml:12:1'],
    ]);
    expect(result.services[0]!.spec).toEqual({ image: 'a:1', replicas: 1, rollout: { progressDeadline: '10m', minReadySeconds: 0 } });
  });

  it('ignores the read-only status block that get -o yaml writes', () => {
    const result = parseManifests('x.yaml', service('  image: a:1\n') + 'status:\n  id: shop.web.r1\n  status: active\n');
    expect(result.problems).toEqual([]);
    expect(result.services).toHaveLength(1);
  });

  it('accepts YAML merge keys for shared defaults', () => {
    const text = [
      'apiVersion: deployer/v1',
      'kind: Service',
      'metadata: { project: shop, name: web }',
      'spec:',
      '  image: a:1',
      '  env:',
      '    <<: { LOG_LEVEL: info, REGION: eu }',
      '    REGION: us',
    ].join('\n');
    const result = parseManifests('m.yaml', text);
    expect(result.problems).toEqual([]);
    expect(result.services[0]!.spec.env).toEqual({ LOG_LEVEL: 'info', REGION: 'us' });
  });

  it('names project and service as lowercase DNS labels only', () => {
    for (const ok of ['a', 'web', 'web-1', '0day', 'a'.repeat(63)]) expect(NAME_PATTERN.test(ok), ok).toBe(true);
    for (const bad of ['', 'Web', 'web_1', '-web', 'web-', 'a.b', 'a'.repeat(64)]) expect(NAME_PATTERN.test(bad), bad).toBe(false);
  });
});

describe('each kind of mistake: one line naming file:line:column, the field and the problem', () => {
  const cases: { label: string; text: string; expected: string[] }[] = [
    {
      label: 'replicas not a number',
      text: service('  image: a:1\n  replicas: two\n'),
      expected: ['web.yaml:6:13 spec.replicas: expected a whole number from 0 to 1000, got "two"'],
    },
    {
      label: 'replicas not whole',
      text: service('  image: a:1\n  replicas: 1.5\n'),
      expected: ['web.yaml:6:13 spec.replicas: expected a whole number from 0 to 1000, got 1.5'],
    },
    {
      label: 'replicas out of range',
      text: service('  image: a:1\n  replicas: 1001\n'),
      expected: ['web.yaml:6:13 spec.replicas: expected a whole number from 0 to 1000, got 1001'],
    },
    {
      label: 'a misspelt spec field',
      text: service('  image: a:1\n  replicsa: 2\n'),
      expected: ['web.yaml:6:3 spec.replicsa: unknown field'],
    },
    {
      label: 'an unknown top-level field',
      text: service('  image: a:1\n') + 'specs: {}\n',
      expected: ['web.yaml:6:1 specs: unknown field'],
    },
    {
      label: 'an unknown metadata field',
      text: service('  image: a:1\n', 'metadata:\n  project: shop\n  name: web\n  namespace: prod'),
      expected: ['web.yaml:6:3 metadata.namespace: unknown field'],
    },
    {
      label: 'a missing image',
      text: service('  replicas: 2\n'),
      expected: ['web.yaml:5:3 spec.image: required'],
    },
    {
      label: 'a missing spec',
      text: 'apiVersion: deployer/v1\nkind: Service\nmetadata: { project: shop, name: web }\n',
      expected: ['web.yaml:1:1 spec: required'],
    },
    {
      label: 'a missing service name',
      text: service('  image: a:1\n', 'metadata: { project: shop }'),
      expected: ['web.yaml:3:11 metadata.name: required'],
    },
    {
      label: 'a name that is not a DNS label',
      text: service('  image: a:1\n', 'metadata: { project: shop, name: Web_1 }'),
      expected: [
        'web.yaml:3:34 metadata.name: expected a lowercase DNS label (a-z, 0-9 and "-", 1 to 63 characters, starting and ending with a letter or digit), got "Web_1"',
      ],
    },
    {
      label: 'a project that is a number',
      text: service('  image: a:1\n', 'metadata: { project: 42, name: web }'),
      expected: [
        'web.yaml:3:22 metadata.project: expected a lowercase DNS label (a-z, 0-9 and "-", 1 to 63 characters, starting and ending with a letter or digit), got 42',
      ],
    },
    {
      label: 'another apiVersion',
      text: service('  image: a:1\n').replace('deployer/v1', 'apps/v1'),
      expected: ['web.yaml:1:13 apiVersion: expected "deployer/v1", got "apps/v1"'],
    },
    {
      label: 'another kind',
      text: service('  image: a:1\n').replace('kind: Service', 'kind: Deployment'),
      expected: ['web.yaml:2:7 kind: expected "Service", got "Deployment"'],
    },
    {
      label: 'no apiVersion and no kind (not a manifest at all)',
      text: 'name: web\nimage: a:1\n',
      expected: ['web.yaml:1:1 not a Service manifest: apiVersion and kind are missing (expected apiVersion: deployer/v1 and kind: Service)'],
    },
    {
      label: 'a list instead of a mapping',
      text: '- apiVersion: deployer/v1\n',
      expected: ['web.yaml:1:1 expected a Service manifest (a mapping with apiVersion, kind, metadata and spec), got a list'],
    },
    {
      label: 'a bad environment variable name',
      text: service('  image: a:1\n  env:\n    LOG-LEVEL: info\n'),
      expected: ['web.yaml:7:5 spec.env["LOG-LEVEL"]: expected an environment variable name, got "LOG-LEVEL"'],
    },
    {
      label: 'an environment value that is a mapping',
      text: service('  image: a:1\n  env:\n    OPTS: { a: 1 }\n'),
      expected: ['web.yaml:7:11 spec.env.OPTS: expected a string, number or boolean, got {"a":1}'],
    },
    {
      label: 'env as a list',
      text: service('  image: a:1\n  env: [A=1]\n'),
      expected: ['web.yaml:6:8 spec.env: expected a mapping, got ["A=1"]'],
    },
    {
      label: 'a bad volume entry',
      text: service('  image: a:1\n  volumes:\n    - data:/data\n    - data\n'),
      expected: ['web.yaml:8:7 spec.volumes[1]: expected name:/path or /path, with an optional :ro or :rw, got "data"'],
    },
    {
      label: 'a bad duration',
      text: service('  image: a:1\n  healthcheck:\n    test: ["CMD", "true"]\n    interval: soon\n'),
      expected: ['web.yaml:8:15 spec.healthcheck.interval: expected a duration such as 30s, 2m, 6h or 1h30m, got "soon"'],
    },
    {
      label: 'a duration written as a number',
      text: service('  image: a:1\n  rollout: { progressDeadline: 600 }\n'),
      expected: ['web.yaml:6:32 spec.rollout.progressDeadline: expected a string, got 600'],
    },
    {
      label: 'a reserved label',
      text: service('  image: a:1\n  labels: { deployer.project: other }\n'),
      expected: ['web.yaml:6:13 spec.labels["deployer.project"]: labels under deployer. are reserved, got "deployer.project"'],
    },
    {
      label: 'a command as a string',
      text: service('  image: a:1\n  command: /app/server --port 80\n'),
      expected: ['web.yaml:6:12 spec.command: expected a list, got "/app/server --port 80"'],
    },
    {
      label: 'a healthcheck test that is a number',
      text: service('  image: a:1\n  healthcheck: { test: 5 }\n'),
      expected: ['web.yaml:6:24 spec.healthcheck.test: expected a list of strings (["CMD", "/app/health"]) or a shell command string, got 5'],
    },
    {
      label: 'an empty healthcheck test',
      text: service('  image: a:1\n  healthcheck: { test: [] }\n'),
      expected: ['web.yaml:6:24 spec.healthcheck.test: expected at least one element'],
    },
    {
      label: 'a YAML syntax error',
      text: service('  image: a:1\n  env: { A: 1\n'),
      expected: ['web.yaml:7:1 Flow map in block collection must be sufficiently indented and end with a }'],
    },
  ];

  it.each(cases)('$label', ({ text, expected }) => {
    const result = parseManifests('web.yaml', text);
    expect(result.problems).toEqual(expected);
    expect(result.services).toEqual([]);
  });

  it('reports every problem of a document, in the order of the file', () => {
    const text = service('  image: 7\n  replicas: -1\n  extra: true\n', 'metadata: { project: Shop, name: web }');
    expect(problems(text)).toEqual([
      'web.yaml:3:22 metadata.project: expected a lowercase DNS label (a-z, 0-9 and "-", 1 to 63 characters, starting and ending with a letter or digit), got "Shop"',
      'web.yaml:5:10 spec.image: expected a string, got 7',
      'web.yaml:6:13 spec.replicas: expected a whole number from 0 to 1000, got -1',
      'web.yaml:7:3 spec.extra: unknown field',
    ]);
  });

  it('reports problems of several documents and keeps the valid ones out of nothing', () => {
    const text = `${service('  image: a:1\n')}---\n${service('  image: b:1\n  replicas: many\n', 'metadata: { project: shop, name: api }')}`;
    const result = parseManifests('two.yaml', text);
    expect(result.services.map((s) => s.name)).toEqual(['web']);
    expect(result.problems).toEqual(['two.yaml:12:13 spec.replicas: expected a whole number from 0 to 1000, got "many"']);
  });

  it('names a service defined twice, with both places', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'manifest-dup-'));
    try {
      await writeFile(join(dir, 'a.yaml'), service('  image: a:1\n'));
      await writeFile(join(dir, 'b.yaml'), `# again\n${service('  image: a:2\n')}`);
      const set = await loadManifests([dir]);
      expect(set.problems).toEqual([`${join(dir, 'b.yaml')}:2:1 metadata: service shop/web is already defined at ${join(dir, 'a.yaml')}:1:1`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('hostile input', () => {
  it('refuses an alias bomb ("billion laughs") without expanding it', () => {
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 10; i++) {
      const name = String.fromCharCode(97 + i);
      const prev = String.fromCharCode(96 + i);
      lines.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    expect(problems(lines.join('\n'), 'bomb.yaml')).toEqual(['bomb.yaml:1:1 aliases expand too much (over 100 expansions): refusing a possible alias bomb']);
  });

  it('refuses an alias bomb made of merge keys', () => {
    const lines = ['x0: &x0 { a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8 }'];
    for (let i = 1; i < 12; i++) lines.push(`x${i}: &x${i} [${Array(8).fill(`*x${i - 1}`).join(', ')}]`);
    lines.push('spec: { <<: *x11 }');
    const found = problems(lines.join('\n'), 'bomb.yaml');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^bomb\.yaml:1:1 aliases expand too much/);
  });

  it('names duplicate keys, with their path and the first occurrence', () => {
    const text = service('  image: a:1\n  replicas: 1\n  env:\n    A: 1\n    A: 2\n  replicas: 2\n');
    expect(problems(text)).toEqual([
      'web.yaml:9:5 spec.env.A: duplicate key, keys must be unique (first on line 8)',
      'web.yaml:10:3 spec.replicas: duplicate key, keys must be unique (first on line 6)',
    ]);
  });

  it('finds a duplicate key at the end of a huge mapping (checked in one pass)', () => {
    const keys = Array.from({ length: 30_000 }, (_, i) => `    K${i}: v`);
    const text = service(`  image: a:1\n  env:\n${keys.join('\n')}\n    K7: again\n`);
    expect(problems(text)).toEqual([`web.yaml:${30_007}:5 spec.env.K7: duplicate key, keys must be unique (first on line 14)`]);
  });

  it('refuses nesting deep enough to exhaust the stack, as a problem rather than a crash', () => {
    const found = problems(`spec: ${'['.repeat(100_000)}`, 'deep.yaml');
    expect(found.length).toBeGreaterThan(0);
    expect(found[0]).toMatch(/^deep\.yaml:\d+:\d+ /);
  });

  it('takes __proto__ as an unknown field, without touching prototypes', () => {
    const text = service('  image: a:1\n  __proto__: { polluted: true }\n');
    expect(problems(text)).toEqual(['web.yaml:6:3 spec.__proto__: unknown field']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('refuses unknown tags rather than guessing', () => {
    expect(problems(service('  image: !Ref WebImage\n'))).toEqual(['web.yaml:5:10 Unresolved tag: !Ref']);
  });

  describe('files', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'manifest-files-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('refuses a 10 MB file before parsing it, naming the file and the limit', async () => {
      const big = join(dir, 'big.yaml');
      await writeFile(big, `# ${'x'.repeat(10 * 1024 * 1024)}\n`);
      const set = await loadManifests([big]);
      expect(set.problems).toEqual([`${big}: 10.0 MiB is larger than 2.0 MiB, the limit for a manifest file; split it`]);
      expect(set.services).toEqual([]);
    });

    it('refuses 10 MB on stdin too', async () => {
      const set = await loadManifests(['-'], { readStdin: async (max) => Buffer.alloc(Math.min(10 * 1024 * 1024, max + 1), 0x20) });
      expect(set.problems).toEqual([`<stdin>: larger than 2.0 MiB, the limit for a manifest file; split it`]);
      expect(MAX_MANIFEST_BYTES).toBe(2 * 1024 * 1024);
    });

    it('reads manifests from stdin with -', async () => {
      const set = await loadManifests(['-'], { readStdin: async () => Buffer.from(service('  image: a:1\n')) });
      expect(set.problems).toEqual([]);
      expect(set.services.map((s) => s.origin)).toEqual(['<stdin>:1:1']);
    });

    it('refuses bytes that are not UTF-8', async () => {
      const file = join(dir, 'latin1.yaml');
      await writeFile(file, Buffer.from([0x6b, 0x3a, 0x20, 0xe9, 0x0a]));
      expect((await loadManifests([file])).problems).toEqual([`${file}: not UTF-8 text`]);
    });

    it('names a missing file', async () => {
      const file = join(dir, 'missing.yaml');
      expect((await loadManifests([file])).problems).toEqual([`${file}: no such file or directory`]);
    });

    it('reads a directory: YAML files in name order, everything else skipped with a note', async () => {
      const tree = join(dir, 'tree');
      await mkdir(join(tree, 'nested'), { recursive: true });
      await writeFile(join(tree, 'b.yml'), service('  image: b:1\n', 'metadata: { project: shop, name: b }'));
      await writeFile(join(tree, 'a.YAML'), service('  image: a:1\n', 'metadata: { project: shop, name: a }'));
      await writeFile(join(tree, 'README.md'), '# not a manifest\n');
      await writeFile(join(tree, 'notes.txt'), 'kind: Service\n');
      await writeFile(join(tree, '.a.yaml.swp'), '\0\0\0');
      await writeFile(join(tree, 'empty.yaml'), '---\n# nothing yet\n---\n');
      await writeFile(join(tree, 'nested', 'c.yaml'), service('  image: c:1\n', 'metadata: { project: shop, name: c }'));
      await symlink(join(tree, 'b.yml'), join(tree, 'link.yaml'));
      const set = await loadManifests([tree]);
      expect(set.notes).toEqual([
        `skipped ${join(tree, '.a.yaml.swp')}: hidden file`,
        `skipped ${join(tree, 'README.md')}: not a .yaml or .yml file`,
        `${join(tree, 'empty.yaml')} holds no manifests`,
        `skipped ${join(tree, 'nested')}/: subdirectories are not read`,
        `skipped ${join(tree, 'notes.txt')}: not a .yaml or .yml file`,
      ]);
      // The symlink names the same service as b.yml: that is a duplicate, not silently merged.
      expect(set.services.map((s) => s.name)).toEqual(['a', 'b', 'b']);
      expect(set.problems).toEqual([`${join(tree, 'link.yaml')}:1:1 metadata: service shop/b is already defined at ${join(tree, 'b.yml')}:1:1`]);
    });

    it('says so when there is nothing to read', async () => {
      const empty = join(dir, 'empty-dir');
      await mkdir(empty);
      await writeFile(join(empty, 'blank.yaml'), '\n');
      const set = await loadManifests([empty]);
      expect(set.problems).toEqual([`no manifests found in ${empty}`]);
      expect(set.notes).toEqual([`${join(empty, 'blank.yaml')} holds no manifests`]);
    });
  });
});

describe('manifestJsonSchema', () => {
  const schema = manifestJsonSchema() as {
    $schema: string;
    required: string[];
    additionalProperties: boolean;
    properties: Record<string, Record<string, unknown> & { properties?: Record<string, Record<string, unknown>> }>;
  };

  it('is draft-07 (what YAML editors implement) and closed to unknown fields', () => {
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schema.required).toEqual(['apiVersion', 'kind', 'metadata', 'spec']);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.apiVersion).toEqual({ const: 'deployer/v1' });
    expect(schema.properties.kind).toEqual({ const: 'Service' });
    expect(schema.properties.spec!.additionalProperties).toBe(false);
  });

  it('carries the name rule, the spec fields with their defaults, and duration patterns', () => {
    const metadata = schema.properties.metadata!.properties!;
    expect(metadata.name!.pattern).toBe(NAME_PATTERN.source);
    const spec = schema.properties.spec!.properties!;
    expect(Object.keys(spec)).toEqual(['image', 'replicas', 'command', 'env', 'ports', 'volumes', 'healthcheck', 'rollout', 'labels']);
    expect(spec.replicas).toMatchObject({ type: 'integer', minimum: 0, maximum: 1000, default: 1 });
    const rollout = spec.rollout as { properties: Record<string, Record<string, unknown>> };
    expect(rollout.properties.progressDeadline).toMatchObject({ type: 'string', default: '10m' });
    expect(new RegExp(rollout.properties.progressDeadline!.pattern as string).test('1h30m')).toBe(true);
    expect(new RegExp(rollout.properties.progressDeadline!.pattern as string).test('soon')).toBe(false);
    expect(spec.image!.description).toMatch(/Image reference/);
  });
});
