import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { envName, loadConfig, type Config, type LoadConfigOptions } from '../../src/config.js';
import { InputError } from '../../src/yaml-source.js';

const S = 1_000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

let dir: string;
let written = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'deployer-config-test-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `text` to a fresh config file and returns its path. */
function configFile(text: string): string {
  const path = join(dir, `config-${++written}.yaml`);
  writeFileSync(path, text);
  return path;
}

/** Loads with an explicit file (never /etc) and an explicit environment (never process.env). */
function load(text: string, env: NodeJS.ProcessEnv = {}, overrides?: LoadConfigOptions['overrides']): Config {
  return loadConfig({ file: configFile(text), env, ...(overrides ? { overrides } : {}) });
}

/** The InputError `fn` throws (failing the test when it throws nothing or something else). */
function inputError(fn: () => unknown): InputError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InputError);
    return err as InputError;
  }
  throw new Error('expected an InputError, got none');
}

describe('loadConfig: defaults', () => {
  it.each([
    { label: 'an empty file', text: '' },
    { label: 'a file of comments', text: '# nothing set here\n' },
    { label: 'an empty mapping', text: '{}\n' },
  ])('from $label', ({ text }) => {
    const config = load(text);
    expect(config).toMatchObject({
      name: 'deployer-controller',
      resync: 30 * S,
      heartbeatTimeout: 60 * S,
      stuckTimeout: 6 * H,
      orphanGrace: 2 * M,
      retainFailed: 0,
      failedRetention: 24 * H,
      maxDeletionsPerSweep: 50,
      maxAttempts: 3,
      deletionGuardFraction: 0.5,
      deletionGuardMinContainers: 10,
      allowMassDeletion: false,
      leaseDuration: 15 * S,
      runtimeTimeout: 30 * S,
      metricsAddress: '127.0.0.1:9797',
      maintenanceSchedule: '*/30 * * * *',
      eventRetention: 30 * D,
      logLevel: 'info',
    });
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dockerHost).toBeUndefined();
    expect(config.stateDir).toMatch(/deployer-controller$/);
  });

  it('returns a frozen config', () => {
    const config = load('');
    expect(Object.isFrozen(config)).toBe(true);
    expect(() => {
      (config as { resync: number }).resync = 1;
    }).toThrow(TypeError);
    expect(config.resync).toBe(30 * S);
  });
});

describe('loadConfig: file values', () => {
  it('reads every kind of value from the file', () => {
    const config = load(
      [
        'name: blue-controller',
        'databaseUrl: postgres://db.internal/deployer',
        'dockerHost: unix:///run/docker.sock',
        'stateDir: /srv/deployer',
        'resync: 1m',
        'heartbeatTimeout: 90s',
        'stuckTimeout: 1h30m',
        'orphanGrace: 5m',
        'retainFailed: 2',
        'failedRetention: 7d',
        'maxDeletionsPerSweep: 20',
        'maxAttempts: 5',
        'deletionGuardFraction: 0.25',
        'deletionGuardMinContainers: 4',
        'allowMassDeletion: true',
        'maxConcurrentReconciles: 8',
        'leaseDuration: 20s',
        'runtimeTimeout: 10s',
        'metricsAddress: 0.0.0.0:9100',
        "maintenanceSchedule: '0 * * * *'",
        'eventRetention: 14d',
        'logLevel: debug',
        'activationHook: [/usr/local/bin/switch-routes, --now]',
        'activationHookTimeout: 45s',
        'containerNetwork: none',
        'notifications:',
        '  webhooks:',
        '    - url: http://127.0.0.1:9000/deployer',
        '      secret: s3cret',
        '      events: [active, failed]',
        '',
      ].join('\n'),
    );
    expect(config).toEqual({
      activationHook: ['/usr/local/bin/switch-routes', '--now'],
      activationHookTimeout: 45 * S,
      containerNetwork: 'none',
      notifications: {
        webhooks: [{ url: 'http://127.0.0.1:9000/deployer', secret: 's3cret', events: ['active', 'failed'], format: 'json', timeout: 5 * S }],
      },
      name: 'blue-controller',
      databaseUrl: 'postgres://db.internal/deployer',
      dockerHost: 'unix:///run/docker.sock',
      stateDir: '/srv/deployer',
      resync: M,
      heartbeatTimeout: 90 * S,
      stuckTimeout: H + 30 * M,
      orphanGrace: 5 * M,
      retainFailed: 2,
      failedRetention: 7 * D,
      maxDeletionsPerSweep: 20,
      maxAttempts: 5,
      deletionGuardFraction: 0.25,
      deletionGuardMinContainers: 4,
      allowMassDeletion: true,
      maxConcurrentReconciles: 8,
      leaseDuration: 20 * S,
      runtimeTimeout: 10 * S,
      metricsAddress: '0.0.0.0:9100',
      maintenanceSchedule: '0 * * * *',
      eventRetention: 14 * D,
      logLevel: 'debug',
    });
  });

  it.each([
    { text: 'metricsAddress: "[::1]:9797"', key: 'metricsAddress', value: '[::1]:9797' },
    { text: 'metricsAddress: localhost:80', key: 'metricsAddress', value: 'localhost:80' },
    { text: 'retainFailed: 0', key: 'retainFailed', value: 0 },
    { text: 'maxDeletionsPerSweep: "7"', key: 'maxDeletionsPerSweep', value: 7 },
    { text: 'deletionGuardFraction: 1', key: 'deletionGuardFraction', value: 1 },
    { text: 'allowMassDeletion: "1"', key: 'allowMassDeletion', value: true },
    { text: 'allowMassDeletion: false', key: 'allowMassDeletion', value: false },
    { text: 'orphanGrace: 0s', key: 'orphanGrace', value: 0 },
  ])('accepts $text', ({ text, key, value }) => {
    expect(load(`${text}\n`)[key as keyof Config]).toEqual(value);
  });
});

describe('loadConfig: environment', () => {
  it.each([
    { variable: 'DEPLOYER_STUCK_TIMEOUT', value: '1h', key: 'stuckTimeout', expected: H },
    { variable: 'DEPLOYER_HEARTBEAT_TIMEOUT', value: '45s', key: 'heartbeatTimeout', expected: 45 * S },
    { variable: 'DEPLOYER_STATE_DIR', value: '/var/tmp/deployer-env', key: 'stateDir', expected: '/var/tmp/deployer-env' },
    { variable: 'DATABASE_URL', value: 'postgres://env-host/db', key: 'databaseUrl', expected: 'postgres://env-host/db' },
    { variable: 'DOCKER_HOST', value: 'tcp://10.0.0.2:2375', key: 'dockerHost', expected: 'tcp://10.0.0.2:2375' },
    { variable: 'DEPLOYER_RETAIN_FAILED', value: '3', key: 'retainFailed', expected: 3 },
    { variable: 'DEPLOYER_MAX_DELETIONS_PER_SWEEP', value: '9', key: 'maxDeletionsPerSweep', expected: 9 },
    { variable: 'DEPLOYER_DELETION_GUARD_FRACTION', value: '0.75', key: 'deletionGuardFraction', expected: 0.75 },
    { variable: 'DEPLOYER_ALLOW_MASS_DELETION', value: 'true', key: 'allowMassDeletion', expected: true },
    { variable: 'DEPLOYER_METRICS_ADDRESS', value: '127.0.0.1:9000', key: 'metricsAddress', expected: '127.0.0.1:9000' },
    { variable: 'DEPLOYER_NAME', value: 'green', key: 'name', expected: 'green' },
  ] as const)('$variable wins over the file', ({ variable, value, key, expected }) => {
    const file = [
      'stuckTimeout: 2h',
      'heartbeatTimeout: 2m',
      'stateDir: /from/file',
      'databaseUrl: postgres://file-host/db',
      'dockerHost: unix:///from/file.sock',
      'retainFailed: 1',
      'maxDeletionsPerSweep: 2',
      'deletionGuardFraction: 0.1',
      'allowMassDeletion: false',
      'metricsAddress: 127.0.0.1:1',
      'name: from-file',
      '',
    ].join('\n');
    const fromFile = load(file);
    expect(fromFile[key]).not.toEqual(expected);
    expect(load(file, { [variable]: value })[key]).toEqual(expected);
  });

  it('sets a key the file leaves out', () => {
    expect(load('', { DEPLOYER_STUCK_TIMEOUT: '1h' }).stuckTimeout).toBe(H);
  });

  it('ignores empty variables and variables of other programs', () => {
    const config = load('stuckTimeout: 2h\n', { DEPLOYER_STUCK_TIMEOUT: '', STUCK_TIMEOUT: '1h', DEPLOYER_STUCKTIMEOUT: '1h', PATH: '/bin' });
    expect(config.stuckTimeout).toBe(2 * H);
  });

  it('does not read process.env when an environment is given', () => {
    const saved = process.env.DEPLOYER_ORPHAN_GRACE;
    process.env.DEPLOYER_ORPHAN_GRACE = '9m';
    try {
      expect(load('').orphanGrace).toBe(2 * M);
    } finally {
      if (saved === undefined) delete process.env.DEPLOYER_ORPHAN_GRACE;
      else process.env.DEPLOYER_ORPHAN_GRACE = saved;
    }
  });

  it('overrides (command-line flags) win over both', () => {
    const config = load('logLevel: warn\n', { DEPLOYER_LOG_LEVEL: 'error' }, { logLevel: 'debug' });
    expect(config.logLevel).toBe('debug');
  });
});

describe('loadConfig: bad values', () => {
  it.each([
    { text: 'resync: 10s\nstuckTimeout: soon\n', message: ':2:15 stuckTimeout: expected a duration such as 30s, 2m, 6h or 1h30m, got "soon"' },
    { text: 'heartbeatTimeout: 60\n', message: ':1:19 heartbeatTimeout: ' }, // a bare number has no unit
    { text: 'orphanGrace: -2m\n', message: ':1:14 orphanGrace: ' },
    { text: 'resync: 0s\n', message: ':1:9 resync: expected a duration > 0' },
    { text: 'resync: 30d\n', message: ':1:9 resync: expected a duration of at most 24d' },
    { text: 'resync: 1s\nbogus: 1\n', message: ':2:1 bogus: unknown key "bogus"' },
    { text: 'retainFailed: -1\n', message: ':1:15 retainFailed: expected a number >= 0' },
    { text: 'retainFailed: 1.5\n', message: ':1:15 retainFailed: expected a whole number' },
    { text: 'retainFailed: many\n', message: ':1:15 retainFailed: expected a number' },
    { text: 'maxDeletionsPerSweep:\n', message: ':1:22 maxDeletionsPerSweep: expected a number' }, // empty, not 0
    { text: 'maxDeletionsPerSweep: []\n', message: ':1:23 maxDeletionsPerSweep: expected a number' },
    { text: 'maxAttempts: 0\n', message: ':1:14 maxAttempts: expected a number >= 1' },
    { text: 'maxAttempts: true\n', message: ':1:14 maxAttempts: expected a number' },
    { text: 'deletionGuardFraction: 0\n', message: ':1:24 deletionGuardFraction: expected a number > 0' },
    { text: 'deletionGuardFraction: 1.5\n', message: ':1:24 deletionGuardFraction: expected a number <= 1' },
    { text: 'allowMassDeletion: yes please\n', message: ':1:20 allowMassDeletion: expected true or false' },
    { text: 'metricsAddress: 9797\n', message: ':1:17 metricsAddress: ' },
    { text: 'metricsAddress: localhost\n', message: ':1:17 metricsAddress: expected host:port, e.g. 127.0.0.1:9797' },
    { text: 'logLevel: loud\n', message: ':1:11 logLevel: ' },
    { text: 'name: "bad name"\n', message: ':1:7 name: expected letters, digits, . _ -' },
  ])('$text -> "$message"', ({ text, message }) => {
    const file = configFile(text);
    const err = inputError(() => loadConfig({ file, env: {} }));
    expect(err.message.startsWith(file)).toBe(true);
    expect(err.message).toContain(`${file}${message}`);
    expect(err.message).not.toContain('\n');
  });

  it.each([
    { variable: 'DEPLOYER_STUCK_TIMEOUT', value: 'soon', key: 'stuckTimeout' },
    { variable: 'DEPLOYER_HEARTBEAT_TIMEOUT', value: 'abc', key: 'heartbeatTimeout' },
    { variable: 'DEPLOYER_RESYNC', value: '0s', key: 'resync' },
    { variable: 'DEPLOYER_MAX_ATTEMPTS', value: 'three', key: 'maxAttempts' },
    { variable: 'DEPLOYER_MAX_ATTEMPTS', value: ' ', key: 'maxAttempts' }, // blank is not 0
    { variable: 'DEPLOYER_RETAIN_FAILED', value: '-3', key: 'retainFailed' },
    { variable: 'DEPLOYER_ALLOW_MASS_DELETION', value: 'yes', key: 'allowMassDeletion' },
    { variable: 'DEPLOYER_METRICS_ADDRESS', value: 'everywhere', key: 'metricsAddress' },
    { variable: 'DEPLOYER_LOG_LEVEL', value: 'chatty', key: 'logLevel' },
  ])('$variable=$value names the variable and the key', ({ variable, value, key }) => {
    // The file holds a good value for the key: the bad environment value is the one named.
    const err = inputError(() => load('', { [variable]: value }));
    expect(err.message).toMatch(new RegExp(`^environment ${variable} ${key}: \\S`));
    expect(err.message).not.toContain('\n');
  });

  it('names the environment variable even when the file also sets the key', () => {
    const err = inputError(() => load('stuckTimeout: 2h\n', { DEPLOYER_STUCK_TIMEOUT: 'later' }));
    expect(err.message).toMatch(/^environment DEPLOYER_STUCK_TIMEOUT stuckTimeout: .*"later"/);
  });

  it('names a bad value nested in the file by its position', () => {
    const file = configFile('resync: 10s\nlogLevel:\n  nested: true\n');
    const err = inputError(() => loadConfig({ file, env: {} }));
    expect(err.message).toMatch(new RegExp(`^${file}:3:3 logLevel: `));
  });

  it.each([
    { label: 'a missing file', make: () => join(dir, 'does-not-exist.yaml'), pattern: /^config file .*does-not-exist\.yaml: ENOENT$/ },
    { label: 'a YAML syntax error', make: () => configFile('resync: [\n'), pattern: /^.*\.yaml:2:1 \S/ },
    { label: 'a duplicate key', make: () => configFile('resync: 1s\nresync: 2s\n'), pattern: /^.*\.yaml:2:1 .*unique/ },
    { label: 'two documents', make: () => configFile('resync: 1s\n---\nresync: 2s\n'), pattern: /^.*\.yaml: expected one YAML document, found 2$/ },
    { label: 'a list instead of a mapping', make: () => configFile('- resync\n'), pattern: /^.*\.yaml:1:1 expected a mapping of config keys$/ },
    { label: 'a scalar instead of a mapping', make: () => configFile('just text\n'), pattern: /^.*\.yaml:1:1 expected a mapping of config keys$/ },
  ])('refuses $label with one line naming the file', ({ make, pattern }) => {
    const file = make();
    const err = inputError(() => loadConfig({ file, env: {} }));
    expect(err.message).toMatch(pattern);
    expect(err.message).toContain(file);
    expect(err.message).not.toContain('\n');
  });
});

describe('envName', () => {
  it.each([
    ['heartbeatTimeout', 'DEPLOYER_HEARTBEAT_TIMEOUT'],
    ['stateDir', 'DEPLOYER_STATE_DIR'],
    ['stuckTimeout', 'DEPLOYER_STUCK_TIMEOUT'],
    ['maxDeletionsPerSweep', 'DEPLOYER_MAX_DELETIONS_PER_SWEEP'],
    ['deletionGuardMinContainers', 'DEPLOYER_DELETION_GUARD_MIN_CONTAINERS'],
    ['resync', 'DEPLOYER_RESYNC'],
    ['name', 'DEPLOYER_NAME'],
    ['databaseUrl', 'DATABASE_URL'],
    ['dockerHost', 'DOCKER_HOST'],
  ])('%s -> %s', (key, variable) => {
    expect(envName(key)).toBe(variable);
  });
});

describe('loadConfig: activation hook, network and notifications', () => {
  it('reads the activation hook from the environment as a JSON array', () => {
    const config = loadConfig({ env: { DEPLOYER_ACTIVATION_HOOK: '["/bin/switch", "--fast"]' }, file: configFile("") });
    expect(config.activationHook).toEqual(['/bin/switch', '--fast']);
  });

  it('rejects an activation hook that is not an argument list, naming the variable', () => {
    expect(() => loadConfig({ env: { DEPLOYER_ACTIVATION_HOOK: '/bin/switch --fast' }, file: configFile("") })).toThrow(
      /environment DEPLOYER_ACTIVATION_HOOK activationHook: expected an argument list/,
    );
  });

  it('takes notifications from the file only, and names a bad nested key', () => {
    expect(loadConfig({ env: { DEPLOYER_NOTIFICATIONS: 'x' }, file: configFile("") }).notifications).toBeUndefined();
    expect(() => loadConfig({ env: {}, file: configFile('notifications:\n  webhooks:\n    - url: ftp://x\n      secret: s\n') })).toThrow(
      /:3:\d+ notifications: /,
    );
  });

  it('rejects a maintenanceSchedule that is not a cron expression', () => {
    expect(() => loadConfig({ env: {}, file: configFile('maintenanceSchedule: every hour\n') })).toThrow(/:1:\d+ maintenanceSchedule: expected a cron expression/);
  });
});
