import { Option, type Command } from 'commander';
import type { Config } from '../../config.js';
import { parseDuration } from '../../duration.js';
import { DockerRuntime } from '../../runtime/docker.js';
import type { Runtime } from '../../runtime/runtime.js';
import { openDatabase } from '../../store/open.js';
import { DEPLOYMENT_STATUSES, LABELS, type DeploymentStatus } from '../../types.js';
import { databaseNow, getDeployment, getOutput, listDeployments, listEvents, type DeploymentFilter } from './deployments-query.js';
import {
  formatDeploymentDetail,
  formatDeploymentJson,
  formatDeploymentTable,
  formatDeploymentYaml,
  type ContainersFound,
} from './deployments-view.js';
import { colorEnabled, errorLine, write, type CommandIo } from './io.js';
import { watchDeployment } from './watch.js';

/** Events `describe` shows (the newest). */
const DESCRIBE_EVENTS = 50;
/** Lines of `output` `describe` shows (the last). */
const DESCRIBE_OUTPUT_LINES = 20;

/** What these commands need (see `registerManifestCommands`). */
export interface DeploymentCommandDeps {
  configFrom: (command: Command) => Config;
  io: CommandIo;
  runtime?: ((config: Config) => Pick<Runtime, 'listContainers'>) | undefined;
  /** Wraps an action: exit code, errors as one line. */
  run: <A extends unknown[]>(fn: (...args: A) => Promise<number>, errorCode?: number) => (...args: A) => Promise<void>;
}

/** `--status pending,deploying` -> the statuses, refusing unknown ones. */
export function parseStatuses(text: string): DeploymentStatus[] {
  const list = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  for (const s of list) {
    if (!(DEPLOYMENT_STATUSES as readonly string[]).includes(s)) {
      throw new Error(`--status: expected ${DEPLOYMENT_STATUSES.join(', ')} (or several, comma-separated), got ${JSON.stringify(s)}`);
    }
  }
  return list as DeploymentStatus[];
}

/** `--project`/`--service` (which may be written `project/service`) -> a filter. */
export function deploymentFilter(opts: { project?: string; service?: string; status?: string }): DeploymentFilter {
  const filter: DeploymentFilter = {};
  let project = opts.project;
  let service = opts.service;
  if (service?.includes('/')) {
    const [p, s] = service.split('/', 2) as [string, string];
    if (project !== undefined && project !== p) throw new Error(`--service ${service} names project ${p}, but --project is ${project}`);
    project = p;
    service = s;
  }
  if (project !== undefined) filter.project = project;
  if (service !== undefined) filter.service = service;
  if (opts.status !== undefined) filter.statuses = parseStatuses(opts.status);
  return filter;
}

function defaultRuntime(config: Config): Pick<Runtime, 'listContainers'> {
  return new DockerRuntime({ ...(config.dockerHost ? { dockerHost: config.dockerHost } : {}), timeoutMs: config.runtimeTimeout });
}

/** Adds `get deployments`, `describe deployment` and `watch`. */
export function registerDeploymentCommands(program: Command, deps: DeploymentCommandDeps): void {
  const { io, run } = deps;

  const get = program.command('get').description('list resources (get deployments)');
  get
    .command('deployments')
    .alias('deployment')
    .description('list deployments: id, service, revision, status, phase, progress, age, and STUCK past stuckTimeout')
    .addOption(new Option('-o, --output <format>', 'output format (yaml: manifests that apply -f takes back)').choices(['table', 'json', 'yaml']).default('table'))
    .option('--project <project>', 'only this project')
    .option('--service <service>', 'only this service (SERVICE or PROJECT/SERVICE)')
    .option('--status <status>', `only these statuses, comma-separated (${DEPLOYMENT_STATUSES.join(', ')})`)
    .action(
      run(async (opts: { output: string; project?: string; service?: string; status?: string }, cmd: Command) => {
        const filter = deploymentFilter(opts);
        const config = deps.configFrom(cmd);
        const database = await openDatabase(config, { startEmbedded: false });
        try {
          const [rows, now] = await Promise.all([listDeployments(database.db, filter), databaseNow(database.db)]);
          const view = { now, stuckTimeoutMs: config.stuckTimeout, color: colorEnabled(io) };
          const text =
            opts.output === 'json' ? formatDeploymentJson(rows, view) : opts.output === 'yaml' ? formatDeploymentYaml(rows) : formatDeploymentTable(rows, view);
          await write(io.stdout, text);
          return 0;
        } finally {
          await database.close();
        }
      }),
    );

  const describe = program.command('describe').description('show one resource in detail (describe deployment ID)');
  describe
    .command('deployment')
    .alias('deployments')
    .description('show a deployment: spec, status and reason, phase and progress, its containers, its events (newest last) and the end of its log')
    .argument('<id>', 'deployment id')
    .option('--no-containers', 'do not ask the container runtime for containers')
    .action(
      run(async (id: string, opts: { containers: boolean }, cmd: Command) => {
        const config = deps.configFrom(cmd);
        const database = await openDatabase(config, { startEmbedded: false });
        let dockerError: string | undefined;
        try {
          const deployment = await getDeployment(database.db, id);
          if (!deployment) throw new Error(`no deployment ${id}`);
          const [events, output, now] = await Promise.all([listEvents(database.db, id, DESCRIBE_EVENTS), getOutput(database.db, id), databaseNow(database.db)]);
          let containers: ContainersFound = { ok: 'skipped' };
          if (opts.containers) {
            try {
              const runtime = (deps.runtime ?? defaultRuntime)(config);
              // Filtered by the engine and again here: some proxies ignore label filters.
              const list = (await runtime.listContainers(id)).filter((c) => c.labels[LABELS.deploymentId] === id);
              containers = { ok: true, containers: list };
            } catch (err) {
              dockerError = errorLine(err);
              containers = { ok: false, error: dockerError };
            }
          }
          const lines = output ? output.replace(/\n$/, '').split('\n') : [];
          const tail = lines.slice(-DESCRIBE_OUTPUT_LINES);
          const text = formatDeploymentDetail(
            { deployment, events: events.events, totalEvents: events.total, containers, outputTail: tail, outputSkipped: lines.length - tail.length },
            { now, stuckTimeoutMs: config.stuckTimeout, color: colorEnabled(io) },
          );
          await write(io.stdout, text);
        } finally {
          await database.close();
        }
        // The description is printed; a runtime that could not answer is still an error (never read as "no containers").
        if (dockerError !== undefined) {
          await write(io.stderr, `deployerctl: containers of ${id} unknown: ${dockerError}\n`);
          return 1;
        }
        return 0;
      }),
    );

  program
    .command('watch')
    .description('follow a deployment with a live progress bar until it ends (exit 0: active; 1: failed, cancelled, superseded or timed out)')
    .argument('<id>', 'deployment id')
    .option('--timeout <duration>', 'give up after this long, e.g. 10m (exit 1)')
    .action(
      run(async (id: string, opts: { timeout?: string }, cmd: Command) => {
        let timeoutMs: number | undefined;
        if (opts.timeout !== undefined) {
          try {
            timeoutMs = parseDuration(opts.timeout);
          } catch (err) {
            throw new Error(`--timeout: ${(err as Error).message}`);
          }
        }
        const config = deps.configFrom(cmd);
        const database = await openDatabase(config, { startEmbedded: false });
        try {
          return await watchDeployment({ db: database.db, listenUrl: database.url, id, io, timeoutMs });
        } finally {
          await database.close();
        }
      }),
    );
}
