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

/** Formats a zod issue path as `spec.healthcheck.retries` or `spec.volumes[0]`. */
export function formatPath(path: readonly PropertyKey[], prefix = 'spec'): string {
  let out = prefix;
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : `${out ? '.' : ''}${String(p)}`;
  return out;
}

/**
 * Validates a spec (from a manifest or a row) and applies defaults. Throws a
 * {@link SpecError} naming the first bad field.
 */
export function validateSpec(input: unknown): Spec {
  const result = specSchema.safeParse(input, {
    error: (issue) =>
      issue.code === 'invalid_type' ? (issue.input === undefined ? 'required' : `expected ${issue.expected}, got ${JSON.stringify(issue.input)}`) : undefined,
  });
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const keys = issue.code === 'unrecognized_keys' ? issue.keys : [];
  const path = keys.length > 0 ? [...issue.path, keys[0]!] : issue.path;
  const detail = keys.length > 0 ? 'unknown field' : issue.message;
  throw new SpecError(formatPath(path), detail);
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
