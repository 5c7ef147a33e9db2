import { existsSync, readFileSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import cron from 'node-cron';
import { z } from 'zod';
import { notificationsSchema } from './controller/notifications.js';
import { parseDuration } from './duration.js';
import { InputError, locate, locateKey, parseYamlDocuments, toPlain, type SourceDocument } from './yaml-source.js';

/** The config file used when `--config` is not given, if it exists. */
export const DEFAULT_CONFIG_FILE = '/etc/deployer/config.yaml';

const duration = z.string().transform((text, ctx) => {
  try {
    return parseDuration(text);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

/** Longest delay a Node timer holds (2^31-1 ms, about 24.8 days), rounded down to whole days. */
const MAX_TIMER_MS = parseDuration('24d');

/** A duration that drives a timer: more than zero (0 would spin) and within what a Node timer can hold. */
const timer = duration
  .refine((ms) => ms > 0, 'expected a duration > 0')
  .refine((ms) => ms <= MAX_TIMER_MS, 'expected a duration of at most 24d');

/**
 * A number as YAML writes it, or as decimal text (the environment). Not
 * `z.coerce`: that would read an empty value (`null`), `true` or `[]` as 0 or 1.
 */
const numeric = (schema: z.ZodNumber) =>
  z.preprocess((value) => (typeof value === 'string' && /^\s*[-+]?\d+(?:\.\d+)?\s*$/.test(value) ? Number(value) : value), schema);
const number = () => z.number({ error: 'expected a number' });
const count = numeric(number().int('expected a whole number').min(0, 'expected a number >= 0'));
const positive = numeric(number().int('expected a whole number').min(1, 'expected a number >= 1'));
const fraction = numeric(number().gt(0, 'expected a number > 0').max(1, 'expected a number <= 1'));
/** An argument list: a YAML list, or a JSON array in the environment. */
const argv = z.preprocess(
  (value) => {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value) as unknown;
    } catch {
      return value;
    }
  },
  z
    .array(z.string().min(1), { error: 'expected an argument list, e.g. ["/usr/local/bin/switch-routes", "--now"]' })
    .min(1, 'expected at least the command'),
);

const bool = z.union([z.boolean(), z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1')], {
  error: 'expected true or false',
});
const address = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:9797');

/**
 * Every config key, its type and default (DESIGN.md 3.7). Durations are read
 * as strings and held as milliseconds.
 */
const configSchema = z
  .object({
    /** Controller name written to `deployer.managed-by`; containers naming another are never touched. */
    name: z.string().min(1).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'expected letters, digits, . _ -').default('deployer-controller'),
    /** Postgres URL; without it the embedded Postgres in `stateDir` is used. */
    databaseUrl: z.string().min(1).optional(),
    /** Docker endpoint (`unix:///path` or `tcp://host:port`); dockerode's default otherwise. */
    dockerHost: z.string().min(1).optional(),
    /** Where the embedded Postgres keeps its data and connection file. */
    stateDir: z.string().min(1).default(defaultStateDir()),
    resync: timer.default(parseDuration('30s')),
    heartbeatTimeout: duration.default(parseDuration('60s')),
    stuckTimeout: duration.default(parseDuration('6h')),
    orphanGrace: duration.default(parseDuration('2m')),
    retainFailed: count.default(0),
    failedRetention: duration.default(parseDuration('24h')),
    maxDeletionsPerSweep: count.default(50),
    maxAttempts: positive.default(3),
    /** A plan removing more than this fraction of the managed containers is refused. */
    deletionGuardFraction: fraction.default(0.5),
    /** The fraction guard applies only from this many managed containers on. */
    deletionGuardMinContainers: count.default(10),
    /** Skip the mass-deletion guard (same as `--force`). */
    allowMassDeletion: bool.default(false),
    /** Reconciles at once on different keys (a full sweep, each rollout): a slow image pull does not hold up the rest. */
    maxConcurrentReconciles: positive.default(4),
    /** How long a leadership lease lasts without renewal. */
    leaseDuration: timer.default(parseDuration('15s')),
    /** Timeout of one call to the container runtime. */
    runtimeTimeout: timer.default(parseDuration('30s')),
    metricsAddress: address.default('127.0.0.1:9797'),
    maintenanceSchedule: z
      .string()
      .min(1)
      .refine((expr) => cron.validate(expr), 'expected a cron expression such as */30 * * * *')
      .default('*/30 * * * *'),
    /**
     * Command run when a revision reaches `activating`, as an argument list
     * (in the environment: a JSON array), with the deployment as JSON on stdin.
     */
    activationHook: argv.optional(),
    activationHookTimeout: duration.default(parseDuration('30s')),
    /** Docker network mode of the containers the controller creates; Docker's default when unset. */
    containerNetwork: z.string().min(1).optional(),
    /** Signed webhooks (DESIGN.md 3.8); in the file only. */
    notifications: notificationsSchema.optional(),
    eventRetention: duration.default(parseDuration('30d')),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
  })
  .strict();

export type Config = Readonly<z.output<typeof configSchema>>;
export type ConfigKey = keyof z.input<typeof configSchema>;

/** Nested keys, set in the file only. */
const FILE_ONLY = new Set(['notifications']);

/** Keys read from the environment under their usual names rather than `DEPLOYER_*`. */
const PLAIN_ENV: Partial<Record<ConfigKey, string>> = { databaseUrl: 'DATABASE_URL', dockerHost: 'DOCKER_HOST' };

/** `heartbeatTimeout` -> `DEPLOYER_HEARTBEAT_TIMEOUT`. */
export function envName(key: string): string {
  return PLAIN_ENV[key as ConfigKey] ?? `DEPLOYER_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

export interface LoadConfigOptions {
  /** Explicit config file; an error if missing. Without it {@link DEFAULT_CONFIG_FILE} is read when present. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Values that win over file and environment (command-line flags). */
  overrides?: Partial<Record<ConfigKey, unknown>>;
}

/**
 * Reads the config file and the environment (environment wins), validates
 * everything and returns a frozen config. Any bad value throws an
 * {@link InputError} whose one-line message names the key (and the file
 * position for file values).
 */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const file = options.file ?? (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  let source: SourceDocument | undefined;
  let fromFile: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new InputError(`config file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const docs = parseYamlDocuments(file, text);
    if (docs.length > 1) throw new InputError(`${file}: expected one YAML document, found ${docs.length}`);
    if (docs[0]) {
      source = docs[0];
      const plain = toPlain(source);
      if (plain !== null && plain !== undefined) {
        if (typeof plain !== 'object' || Array.isArray(plain)) throw new InputError(`${locate(source, [])} expected a mapping of config keys`);
        fromFile = plain as Record<string, unknown>;
      }
    }
  }
  const merged: Record<string, unknown> = { ...fromFile };
  const fromEnv = new Set<string>();
  for (const key of Object.keys(configSchema.shape)) {
    if (FILE_ONLY.has(key)) continue;
    const value = env[envName(key)];
    if (value !== undefined && value !== '') {
      merged[key] = value;
      fromEnv.add(key);
    }
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) {
      merged[key] = value;
      fromEnv.delete(key);
    }
  }
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [];
    const key = String(issue.path[0] ?? keys[0] ?? '');
    const where = fromEnv.has(key)
      ? `environment ${envName(key)}`
      : source && key in fromFile
        ? issue.code === 'unrecognized_keys'
          ? locateKey(source, [key])
          : locate(source, issue.path.length ? issue.path : [key])
        : 'config';
    const message = issue.code === 'unrecognized_keys' ? `unknown key ${keys.map((k) => JSON.stringify(k)).join(', ')}` : issue.message;
    throw new InputError(`${where} ${key}: ${message}`);
  }
  return Object.freeze(result.data);
}

/** Per-user default state directory: `/var/lib/deployer-controller` for root, XDG state otherwise. */
export function defaultStateDir(): string {
  if (userInfo().uid === 0) return '/var/lib/deployer-controller';
  const base = process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  return join(base, 'deployer-controller');
}
