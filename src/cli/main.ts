#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { pino } from 'pino';
import { loadConfig, type Config } from '../config.js';
import { Daemon, prepareDatabase } from '../controller/daemon.js';
import { createLogger, type Logger } from '../controller/logger.js';
import { Metrics } from '../controller/metrics.js';
import { SystemdNotifier } from '../controller/systemd.js';
import { hasDrift } from '../reconcilers/plan.js';
import { migrateDown, migrateUp, migrationStatus } from '../store/migrate.js';
import { openDatabase } from '../store/open.js';
import { cancelDeployment, rollbackService } from '../store/operations.js';
import { registerManifestCommands } from './commands/manifests.js';
import { formatPlan } from './format-plan.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Exit codes: 0 ok, 1 error, 2 drift found (`plan`). */
export const EXIT = { ok: 0, error: 1, drift: 2 } as const;

interface GlobalOptions {
  config?: string;
}

function configFrom(command: Command, overrides: Record<string, unknown> = {}): Config {
  const globals = command.optsWithGlobals<GlobalOptions>();
  return loadConfig({ ...(globals.config ? { file: globals.config } : {}), overrides });
}

async function runCommand(opts: { once?: boolean; dryRun?: boolean; force?: boolean }, command: Command): Promise<number> {
  const config = configFrom(command);
  // With --once, stdout carries the report: logs go to stderr.
  const logger = createLogger(config.logLevel, opts.once ? pino.destination({ fd: 2, sync: true }) : undefined);
  const systemd = new SystemdNotifier(process.env, (err) => logger.warn({ err }, 'sd_notify failed'));
  const database = await openDatabase(config, { startEmbedded: true, log: (msg) => logger.info({ component: 'embedded-postgres' }, msg) });
  const stopping = new AbortController();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(130);
    }
    logger.info({ signal }, 'stopping gracefully (send the signal again to force)');
    stopping.abort();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let daemon: Daemon | undefined;
  let watchdog: NodeJS.Timeout | undefined;
  try {
    await prepareDatabase(database, logger, stopping.signal, !opts.once);
    if (stopping.signal.aborted) return EXIT.ok;
    daemon = new Daemon({
      config,
      logger,
      database,
      dryRun: !!opts.dryRun,
      force: !!opts.force,
      http: !opts.once,
      failpoint: process.env.DEPLOYER_FAILPOINT,
    });
    if (opts.once) {
      const report = await daemon.sweepOnce();
      process.stdout.write(formatPlan(report.plan, { applied: report.dryRun ? undefined : report.outcomes }));
      return report.outcomes.some((o) => o.result === 'error') ? EXIT.error : EXIT.ok;
    }
    const running = daemon;
    process.on('SIGHUP', () => void reload(running, command, logger, systemd));
    await running.start();
    // Pings come from a timer that only fires while the event loop turns, and
    // only while the reconcile loop is not stuck: a hung daemon gets restarted.
    const every = systemd.watchdogIntervalMs();
    if (every !== undefined) {
      watchdog = setInterval(() => {
        if (running.loopAlive()) void systemd.notify('WATCHDOG=1');
      }, every);
    }
    await Promise.race([running.firstSweepDone(), new Promise((resolve) => stopping.signal.addEventListener('abort', resolve, { once: true }))]);
    if (!stopping.signal.aborted) {
      await systemd.notify('READY=1', 'STATUS=reconciling');
      running.announcedReady();
      logger.info('ready: first sweep finished');
    }
    await new Promise<void>((resolve) => {
      if (stopping.signal.aborted) resolve();
      else stopping.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    await systemd.notify('STOPPING=1', 'STATUS=stopping');
    const forced = setTimeout(() => {
      logger.error('graceful stop took longer than 30s: exiting');
      process.exit(1);
    }, 30_000);
    forced.unref();
    await running.stop();
    return EXIT.ok;
  } finally {
    clearInterval(watchdog);
    await daemon?.stop().catch(() => undefined);
    await database.close();
  }
}

/** SIGHUP: re-read the config; a valid one takes effect at once, an invalid one is logged and the old one stays. */
async function reload(daemon: Daemon, command: Command, logger: Logger, systemd: SystemdNotifier): Promise<void> {
  await systemd.reloading();
  try {
    const next = configFrom(command);
    const restart = await daemon.reload(next);
    logger.info({ restartNeeded: restart }, restart.length ? `config reloaded; restart to apply ${restart.join(', ')}` : 'config reloaded');
  } catch (err) {
    logger.error({ err }, `config reload refused, keeping the running config: ${(err as Error).message}`);
  }
  await systemd.notify('READY=1', 'STATUS=reconciling');
}

async function planCommand(opts: { output: string; force?: boolean }, command: Command): Promise<number> {
  const config = configFrom(command);
  const database = await openDatabase(config, { startEmbedded: false });
  try {
    const logger = createLogger('silent');
    const daemon = new Daemon({ config, logger, database, dryRun: true, force: !!opts.force, metrics: new Metrics({ processMetrics: false }) });
    const plan = await daemon.sweeper.plan();
    process.stdout.write(opts.output === 'json' ? JSON.stringify(plan, null, 2) + '\n' : formatPlan(plan));
    return hasDrift(plan) ? EXIT.drift : EXIT.ok;
  } finally {
    await database.close();
  }
}

/** Who an operator's change is recorded as. */
function cliActor(): string {
  return `deployerctl:${userInfo().username}@${hostname()}`;
}

async function cancelCommand(id: string, command: Command): Promise<number> {
  const config = configFrom(command);
  const database = await openDatabase(config, { startEmbedded: false });
  try {
    const result = await cancelDeployment(database.db, id, cliActor());
    process.stdout.write(`deployment ${id} cancelled (was ${result.from})\n`);
    return EXIT.ok;
  } finally {
    await database.close();
  }
}

async function rollbackCommand(target: string, opts: { toRevision?: string }, command: Command): Promise<number> {
  const match = /^([^/\s]+)\/([^/\s]+)$/.exec(target);
  if (!match) throw new Error(`expected PROJECT/SERVICE, got ${JSON.stringify(target)}`);
  let toRevision: number | undefined;
  if (opts.toRevision !== undefined) {
    toRevision = Number(opts.toRevision);
    if (!Number.isInteger(toRevision) || toRevision < 1) throw new Error(`--to-revision: expected a revision number >= 1, got ${JSON.stringify(opts.toRevision)}`);
  }
  const config = configFrom(command);
  const database = await openDatabase(config, { startEmbedded: false });
  try {
    const result = await rollbackService(database.db, match[1]!, match[2]!, cliActor(), toRevision);
    process.stdout.write(`${match[1]}/${match[2]}: revision ${result.revision} (${result.id}) created with the spec of revision ${result.fromRevision}, pending\n`);
    return EXIT.ok;
  } finally {
    await database.close();
  }
}

async function migrateCommand(direction: string, command: Command): Promise<number> {
  const config = configFrom(command);
  const database = await openDatabase(config, { startEmbedded: false });
  try {
    if (direction === 'status') {
      for (const m of await migrationStatus(database.db)) {
        process.stdout.write(`${m.name}\t${m.executedAt ? `applied ${m.executedAt.toISOString()}` : 'pending'}\n`);
      }
      return EXIT.ok;
    }
    const results = direction === 'down' ? await migrateDown(database.db) : await migrateUp(database.db);
    if (results.length === 0) process.stdout.write(direction === 'down' ? 'nothing to revert\n' : 'already up to date\n');
    for (const r of results) process.stdout.write(`${r.migrationName}\t${r.direction === 'Down' ? 'reverted' : 'applied'}\n`);
    return EXIT.ok;
  } finally {
    await database.close();
  }
}

/** Builds the `deployerctl` program; actions resolve to an exit code. */
export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('deployerctl')
    .description('Keeps Docker containers in line with the deployments stored in Postgres.')
    .version(VERSION, '-V, --version-flag', 'print the version')
    .option('-c, --config <file>', 'config file (default /etc/deployer/config.yaml when present)')
    .exitOverride()
    // Usage errors follow the CLI's rule too: one line on stderr, the hint on the same line.
    .configureOutput({
      outputError: (text, write) => write(`deployerctl: ${(text.trim().split('\n')[0] ?? '').replace(/^error: /, '')} (run with --help for usage)\n`),
    });

  const wrap =
    <A extends unknown[]>(fn: (...args: A) => Promise<number>) =>
    async (...args: A) =>
      setExit(await fn(...args));

  program
    .command('run')
    .description('run the controller daemon (embedded PostgreSQL unless DATABASE_URL is set)')
    .option('--once', 'run a single sweep and exit')
    .option('--dry-run', 'plan and log, apply nothing')
    .option('--force', 'skip the mass-deletion guard')
    .action(wrap((opts: { once?: boolean; dryRun?: boolean; force?: boolean }, cmd: Command) => runCommand(opts, cmd)));

  program
    .command('plan')
    .description('show what the next sweep would do (exit 0: nothing, 2: drift, 1: error)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['table', 'json']).default('table'))
    .option('--force', 'plan as if the mass-deletion guard were off')
    .action(wrap((opts: { output: string; force?: boolean }, cmd: Command) => planCommand(opts, cmd)));

  program
    .command('cancel')
    .description('cancel a pending or deploying deployment (its containers go on the next sweep)')
    .argument('<id>', 'deployment id')
    .action(wrap((id: string, _opts: unknown, cmd: Command) => cancelCommand(id, cmd)));

  program
    .command('rollback')
    .description('roll a service back: a new revision with the spec of an earlier one')
    .argument('<project/service>', 'the service, as PROJECT/SERVICE')
    .option('--to-revision <n>', 'revision whose spec to use (default: the previously active one)')
    .action(wrap((target: string, opts: { toRevision?: string }, cmd: Command) => rollbackCommand(target, opts, cmd)));

  program
    .command('migrate')
    .description('apply, revert or list database migrations')
    .addArgument(new Command().createArgument('[direction]', 'up, down or status').choices(['up', 'down', 'status']).default('up'))
    .action(wrap((direction: string, _opts: unknown, cmd: Command) => migrateCommand(direction, cmd)));

  program
    .command('version')
    .description('print the version')
    .action(wrap(() => {
      process.stdout.write(`deployerctl ${VERSION}\n`);
      return Promise.resolve(EXIT.ok);
    }));

  registerManifestCommands(program, { setExit, configFrom: (cmd) => configFrom(cmd) });
  return program;
}

async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.error;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`deployerctl: ${message.split('\n')[0]}\n`);
    return EXIT.error;
  }
}

// Exit explicitly: a stray handle (a socket in a dependency) must not keep a finished command alive.
process.exit(await main(process.argv));
