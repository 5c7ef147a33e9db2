import { createHash } from 'node:crypto';
import { z } from 'zod';
import { parseDuration } from '../duration.js';

/**
 * The deployment spec: exactly the `spec` of a manifest (DESIGN.md 3.4) and
 * the `deployments.spec` column (3.2), same keys, same value forms
 * (durations stay strings). Validated both when a manifest is applied and when
 * the controller reads a row someone inserted with plain SQL.
 */

const durationString = z.string().superRefine((text, ctx) => {
  try {
    parseDuration(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

/** A whole number >= `min`; the message shows what was given (`got "two"`). */
function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER) {
  const expected = max === Number.MAX_SAFE_INTEGER ? `expected a whole number >= ${min}` : `expected a whole number from ${min} to ${max}`;
  return z
    .number({ error: (issue) => `${expected}, got ${JSON.stringify(issue.input) ?? 'nothing'}` })
    .int({ error: (issue) => `${expected}, got ${JSON.stringify(issue.input)}` })
    .min(min, { error: (issue) => `${expected}, got ${JSON.stringify(issue.input)}` })
    .max(max, { error: (issue) => `${expected}, got ${JSON.stringify(issue.input)}` });
}

/** Env values are strings; YAML numbers and booleans (`PORT: 8080`) are taken as their text. */
const envValue = z.union([z.string(), z.number(), z.boolean()]).transform((v) => String(v));

/** `name:/path[:ro]` is a shared project volume; a bare `/path[:ro]` gets a deployment-scoped one. */
const VOLUME = /^(?:([A-Za-z0-9][A-Za-z0-9_.-]*):)?(\/[^:]*)(?::(ro|rw))?$/;
const PORT = /^(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:\d{1,5}:)?\d{1,5}(?:\/(?:tcp|udp|sctp))?$/;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9_.\-/]*$/;

export const healthcheckSchema = z
  .object({
    test: z.union([z.array(z.string()).min(1, 'expected at least one element'), z.string().min(1)]),
    interval: durationString.optional(),
    timeout: durationString.optional(),
    retries: wholeNumber(0).optional(),
    startPeriod: durationString.optional(),
  })
  .strict();

export const rolloutSchema = z
  .object({
    progressDeadline: durationString.default('10m'),
    minReadySeconds: wholeNumber(0).default(0),
  })
  .strict();

export const specSchema = z
  .object({
    image: z.string().min(1, 'expected an image reference'),
    replicas: wholeNumber(0, 1000).default(1),
    command: z.array(z.string()).optional(),
    env: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), envValue)
      .optional(),
    ports: z.array(z.string().regex(PORT, 'expected [ip:][hostPort:]containerPort[/tcp|udp]')).optional(),
    volumes: z.array(z.string().regex(VOLUME, 'expected name:/path or /path, with an optional :ro or :rw')).optional(),
    healthcheck: healthcheckSchema.optional(),
    rollout: rolloutSchema.default({ progressDeadline: '10m', minReadySeconds: 0 }),
    labels: z
      .record(
        z
          .string()
          .regex(LABEL_KEY, 'expected a label key')
          .refine((k) => !k.startsWith('deployer.'), 'labels under deployer. are reserved'),
        z.string(),
      )
      .optional(),
  })
  .strict();

/** A spec as written (defaults optional). */
export type SpecInput = z.input<typeof specSchema>;
/** A validated spec with defaults applied. */
export type Spec = z.output<typeof specSchema>;

/** A parsed volume entry: `name` for a shared project volume, undefined for a deployment-scoped one. */
export interface VolumeMount {
  name: string | undefined;
  path: string;
  readOnly: boolean;
}

export function parseVolume(entry: string): VolumeMount {
  const m = VOLUME.exec(entry);
  if (!m) throw new Error(`bad volume ${entry}`);
  return { name: m[1], path: m[2]!, readOnly: m[3] === 'ro' };
}

/** An invalid spec, with the dotted path of the first bad field. */
export class SpecError extends Error {
  constructor(
    readonly path: string,
    readonly detail: string,
  ) {
    super(`${path}: ${detail}`);
    this.name = 'SpecError';
  }
}

/** Formats a zod issue path as `spec.healthcheck.retries`, `spec.volumes[0]` or `spec.labels["com.example/team"]`. */
export function formatPath(path: readonly PropertyKey[], prefix = 'spec'): string {
  let out = prefix;
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(String(p))) out += `${out ? '.' : ''}${String(p)}`;
    else out += `[${JSON.stringify(String(p))}]`;
  }
  return out;
}

/** One problem of a spec: the path inside the spec (keys and list indexes) and what is wrong there. */
export interface SpecIssue {
  path: (string | number)[];
  message: string;
  /** `key` when the mapping key itself is wrong (unknown or invalid), not its value. */
  at?: 'key';
}

/** The outcome of {@link checkSpec}: the spec with defaults, or every problem found. */
export type SpecCheck = { ok: true; spec: Spec } | { ok: false; issues: SpecIssue[] };

const TYPE_NAMES: Record<string, string> = {
  object: 'a mapping',
  record: 'a mapping',
  array: 'a list',
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
};

/** A value for a message: JSON, cut short so a huge value cannot flood the terminal. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isPrimitive(value: unknown): boolean {
  return value === null || ['string', 'number', 'boolean'].includes(typeof value);
}

/**
 * Validates a spec and applies defaults, returning every problem (not only the
 * first) with messages that say what was expected and what was given.
 */
export function checkSpec(input: unknown): SpecCheck {
  const result = specSchema.safeParse(input, {
    reportInput: true,
    error: (issue) => {
      if (issue.code === 'invalid_type') {
        return issue.input === undefined ? 'required' : `expected ${TYPE_NAMES[issue.expected] ?? issue.expected}, got ${show(issue.input)}`;
      }
      return undefined;
    },
  });
  if (result.success) return { ok: true, spec: result.data };
  const issues: SpecIssue[] = [];
  for (const issue of result.error.issues) {
    const path = issue.path.map((p) => (typeof p === 'number' ? p : String(p)));
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) issues.push({ path: [...path, key], message: 'unknown field', at: 'key' });
      continue;
    }
    if (issue.code === 'invalid_key') {
      const key = path[path.length - 1];
      issues.push({ path, message: `${issue.issues[0]?.message ?? 'invalid key'}, got ${show(key)}`, at: 'key' });
      continue;
    }
    let message = issue.message;
    if (issue.code === 'invalid_union') {
      // The spec's two unions: an env value, and a healthcheck test.
      const expected = path[0] === 'env' ? 'a string, number or boolean' : 'a list of strings (["CMD", "/app/health"]) or a shell command string';
      message = `expected ${expected}, got ${show(issue.input)}`;
    } else if (!message.includes(', got ') && isPrimitive(issue.input)) {
      message = `${message}, got ${show(issue.input)}`;
    }
    issues.push({ path, message });
  }
  return { ok: false, issues };
}

/**
 * Validates a spec (from a manifest or a row) and applies defaults. Throws a
 * {@link SpecError} naming the first bad field.
 */
export function validateSpec(input: unknown): Spec {
  const result = checkSpec(input);
  if (result.ok) return result.spec;
  const issue = result.issues[0]!;
  throw new SpecError(formatPath(issue.path), issue.message);
}

/** JSON with sorted keys, so equal specs hash equally whatever the key order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The `spec_hash` of a validated spec: sha256 of its canonical JSON. */
export function specHash(spec: Spec): string {
  return createHash('sha256').update(canonical(spec)).digest('hex');
}

/** The spec schema as JSON Schema, for editors (`deployerctl schema`). */
export function specJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(specSchema, { io: 'input' }) as Record<string, unknown>;
}
