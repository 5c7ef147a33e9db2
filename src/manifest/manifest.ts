import { z } from 'zod';
import { locate, locateKey, parseYamlSource, toPlain, type SourceDocument } from '../yaml-source.js';
import { checkSpec, formatPath, specHash, specSchema, type Spec } from './spec.js';

/**
 * Manifests: the declarative form of desired state (DESIGN.md 3.4). A file
 * holds one or more YAML documents, each a `deployer/v1` `Service`:
 *
 * ```yaml
 * apiVersion: deployer/v1
 * kind: Service
 * metadata: { project: shop, name: web }
 * spec: { image: shop-web:1.4.2, replicas: 2 }
 * ```
 *
 * Every problem is reported as one line, `file:line:column path: message`,
 * and all of them are collected (not only the first), so one run of
 * `deployerctl validate` shows everything to fix.
 */

export const API_VERSION = 'deployer/v1';
export const KIND = 'Service';

/**
 * Project and service names: lowercase DNS labels. Revision ids are
 * `project.service.rN`, and neither part may contain a dot, so ids never collide.
 */
export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const NAME_RULE = 'a lowercase DNS label (a-z, 0-9 and "-", 1 to 63 characters, starting and ending with a letter or digit)';

/** Top-level fields of a manifest document. `status` is read-only: `get -o yaml` writes it, apply ignores it. */
const DOCUMENT_FIELDS = ['apiVersion', 'kind', 'metadata', 'spec', 'status'] as const;
const METADATA_FIELDS = ['project', 'name'] as const;

/** A validated `Service` manifest. */
export interface ServiceManifest {
  project: string;
  name: string;
  /** The spec with defaults applied (what the `spec` column holds). */
  spec: Spec;
  /** {@link specHash} of `spec`. */
  specHash: string;
  /** `file:line:column` where the document starts. */
  origin: string;
}

/** What a manifest text holds: the valid services and one line per problem. */
export interface ManifestParse {
  services: ServiceManifest[];
  problems: string[];
}

/** `project/service`, the way services are named in output and maps. */
export function serviceKey(project: string, name: string): string {
  return `${project}/${name}`;
}

/** Describes a value for a message: its JSON, cut short. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return show(value);
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses and validates the manifests of one file (or of stdin). Empty
 * documents (`---` alone, or only comments) are skipped.
 */
export function parseManifests(file: string, text: string): ManifestParse {
  const { docs, problems } = parseYamlSource(file, text, { merge: true });
  const services: ServiceManifest[] = [];
  for (const source of docs) {
    const result = validateDocument(source);
    if (result.service) services.push(result.service);
    problems.push(...result.problems);
  }
  return { services, problems };
}

/** A problem and where it is (`file:line:column`). */
interface Problem {
  where: string;
  text: string;
}

function position(where: string): [number, number] {
  const m = /:(\d+):(\d+)$/.exec(where);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** Orders a document's problems by line and column (the sort is stable). */
function byPosition(a: Problem, b: Problem): number {
  const [la, ca] = position(a.where);
  const [lb, cb] = position(b.where);
  return la - lb || ca - cb;
}

/** Validates one parsed document. */
function validateDocument(source: SourceDocument): { service?: ServiceManifest; problems: string[] } {
  const problems: Problem[] = [];
  const add = (where: string, text: string) => problems.push({ where, text: `${where} ${text}` });
  const found = () => ({ problems: problems.sort(byPosition).map((p) => p.text) });
  let plain: unknown;
  try {
    plain = toPlain(source);
  } catch (err) {
    return { problems: [(err as Error).message] };
  }
  if (plain === null || plain === undefined) return { problems: [] };
  const at = (path: readonly (string | number)[]) => locate(source, path);
  const atKey = (path: readonly (string | number)[]) => locateKey(source, path);
  if (!isMapping(plain)) {
    return { problems: [`${at([])} expected a ${KIND} manifest (a mapping with apiVersion, kind, metadata and spec), got ${kindOf(plain)}`] };
  }

  const { apiVersion, kind } = plain;
  if (apiVersion === undefined && kind === undefined) {
    return { problems: [`${at([])} not a ${KIND} manifest: apiVersion and kind are missing (expected apiVersion: ${API_VERSION} and kind: ${KIND})`] };
  }
  for (const key of Object.keys(plain)) {
    if (!(DOCUMENT_FIELDS as readonly string[]).includes(key)) add(atKey([key]), `${formatPath([key], '')}: unknown field`);
  }
  if (apiVersion === undefined) add(at([]), `apiVersion: required (${API_VERSION})`);
  else if (apiVersion !== API_VERSION) add(at(['apiVersion']), `apiVersion: expected ${JSON.stringify(API_VERSION)}, got ${show(apiVersion)}`);
  if (kind === undefined) add(at([]), `kind: required (${KIND})`);
  else if (kind !== KIND) add(at(['kind']), `kind: expected ${JSON.stringify(KIND)}, got ${show(kind)}`);
  // Something else entirely (another tool's manifest): its fields would only add noise.
  if ((apiVersion !== undefined && apiVersion !== API_VERSION) || (kind !== undefined && kind !== KIND)) return found();

  const names: Partial<Record<(typeof METADATA_FIELDS)[number], string>> = {};
  const { metadata } = plain;
  if (metadata === undefined) {
    add(at([]), `metadata: required (project and name)`);
  } else if (!isMapping(metadata)) {
    add(at(['metadata']), `metadata: expected a mapping with project and name, got ${kindOf(metadata)}`);
  } else {
    for (const key of Object.keys(metadata)) {
      if (!(METADATA_FIELDS as readonly string[]).includes(key)) add(atKey(['metadata', key]), `${formatPath([key], 'metadata')}: unknown field`);
    }
    for (const field of METADATA_FIELDS) {
      const value = metadata[field];
      const path = ['metadata', field];
      if (value === undefined) add(at(path), `metadata.${field}: required`);
      else if (typeof value !== 'string') add(at(path), `metadata.${field}: expected ${NAME_RULE}, got ${show(value)}`);
      else if (!NAME_PATTERN.test(value)) add(at(path), `metadata.${field}: expected ${NAME_RULE}, got ${show(value)}`);
      else names[field] = value;
    }
  }

  let spec: Spec | undefined;
  if (plain.spec === undefined) {
    add(at([]), `spec: required`);
  } else {
    const checked = checkSpec(plain.spec);
    if (checked.ok) spec = checked.spec;
    else {
      for (const issue of checked.issues) {
        const path = ['spec', ...issue.path];
        const where = issue.at === 'key' ? atKey(path) : at(path);
        add(where, `${formatPath(issue.path)}: ${issue.message}`);
      }
    }
  }
  if (plain.status !== undefined && !isMapping(plain.status)) {
    add(at(['status']), `status: expected a mapping (it is written by get -o yaml and ignored by apply), got ${kindOf(plain.status)}`);
  }

  if (problems.length > 0 || !spec || !names.project || !names.name) return found();
  return { service: { project: names.project, name: names.name, spec, specHash: specHash(spec), origin: at([]) }, problems: [] };
}

/**
 * Problems of a set of manifests taken together: a service named twice
 * (within a file or across files) is ambiguous.
 */
export function duplicateServices(services: readonly ServiceManifest[]): string[] {
  const seen = new Map<string, ServiceManifest>();
  const problems: string[] = [];
  for (const s of services) {
    const key = serviceKey(s.project, s.name);
    const first = seen.get(key);
    if (first) problems.push(`${s.origin} metadata: service ${key} is already defined at ${first.origin}`);
    else seen.set(key, s);
  }
  return problems;
}

const DURATION_PATTERN = '^(?:\\d+(?:\\.\\d+)?(?:ms|s|m|h|d))+$';

/** Editor help for the spec's fields: descriptions, and patterns zod cannot express in JSON Schema. */
const SPEC_DOCS: Record<string, { description: string; pattern?: string }> = {
  image: { description: 'Image reference, e.g. shop-web:1.4.2' },
  replicas: { description: 'Number of containers (default 1)' },
  command: { description: 'Command and arguments, replacing the image default' },
  env: { description: 'Environment variables; numbers and booleans are taken as their text' },
  ports: { description: 'Published ports, [ip:][hostPort:]containerPort[/tcp|udp|sctp]' },
  volumes: { description: 'name:/path for a shared project volume (kept on cleanup), /path for a deployment-scoped one; optional :ro or :rw' },
  healthcheck: { description: 'Docker health check; the rollout waits for "healthy"' },
  'healthcheck.test': { description: 'Test command, e.g. ["CMD", "/app/health"] or a shell string' },
  'healthcheck.interval': { description: 'Duration between checks, e.g. 5s', pattern: DURATION_PATTERN },
  'healthcheck.timeout': { description: 'Duration before a check counts as failed, e.g. 3s', pattern: DURATION_PATTERN },
  'healthcheck.retries': { description: 'Consecutive failures before "unhealthy"' },
  'healthcheck.startPeriod': { description: 'Grace duration after start, e.g. 30s', pattern: DURATION_PATTERN },
  rollout: { description: 'Rollout options' },
  'rollout.progressDeadline': { description: 'A rollout not healthy within this duration fails and rolls back (default 10m)', pattern: DURATION_PATTERN },
  'rollout.minReadySeconds': { description: 'Without a healthcheck: seconds running before a container counts as ready (default 0)' },
  labels: { description: 'Extra container labels; keys under deployer. are reserved' },
};

function annotate(schema: Record<string, unknown>, prefix = ''): void {
  const properties = schema.properties as Record<string, Record<string, unknown>> | undefined;
  if (!properties) return;
  for (const [key, child] of Object.entries(properties)) {
    const docs = SPEC_DOCS[prefix + key];
    if (docs) {
      child.description = docs.description;
      if (docs.pattern && child.type === 'string') child.pattern = docs.pattern;
    }
    annotate(child, `${prefix}${key}.`);
  }
}

/**
 * JSON Schema of a manifest document, for editors (`deployerctl schema`).
 * Draft-07, the newest draft that the common YAML editor support
 * (yaml-language-server, VS Code) fully implements.
 */
export function manifestJsonSchema(): Record<string, unknown> {
  const spec = z.toJSONSchema(specSchema, { io: 'input', target: 'draft-7' }) as Record<string, unknown>;
  delete spec.$schema;
  annotate(spec);
  spec.description = 'The desired state of the service; stored as the deployment spec';
  const name = (what: string) => ({ type: 'string', pattern: NAME_PATTERN.source, maxLength: 63, description: `${what}: ${NAME_RULE}` });
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: `${API_VERSION} ${KIND}`,
    description: 'A service managed by deployer-controller (apply with deployerctl apply -f)',
    type: 'object',
    required: ['apiVersion', 'kind', 'metadata', 'spec'],
    additionalProperties: false,
    properties: {
      apiVersion: { const: API_VERSION },
      kind: { const: KIND },
      metadata: {
        type: 'object',
        required: ['project', 'name'],
        additionalProperties: false,
        properties: { project: name('Project'), name: name('Service name') },
      },
      spec,
      status: { type: 'object', description: 'Read-only: written by deployerctl get -o yaml, ignored by apply' },
    },
  };
}
