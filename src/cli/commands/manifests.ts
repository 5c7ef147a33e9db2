import type { Command } from 'commander';
import type { Config } from '../../config.js';
import { applyManifests, deleteManifests, readStoredState, type AlreadyEnded } from '../../manifest/apply.js';
import { planApply, type LiveRevision } from '../../manifest/apply-plan.js';
import { manifestJsonSchema, serviceKey } from '../../manifest/manifest.js';
import { loadManifests, type ManifestSet } from '../../manifest/sources.js';
import { colorDiff, planDiff } from '../../manifest/spec-diff.js';
import type { Runtime } from '../../runtime/runtime.js';
import { openDatabase } from '../../store/open.js';
import { registerDeploymentCommands } from './deployments.js';
import { cliActor, colorEnabled, errorLine, processIo, readLimited, write, type CommandIo } from './io.js';

/** What the manifest and inspection commands need from the program that hosts them. */
export interface ManifestCommandDeps {
  /** Records the process's exit code. */
  setExit: (code: number) => void;
  /** The validated config, for the command being run (global `--config` included). */
  configFrom: (command: Command) => Config;
  /** Streams and environment; the process's by default (tests pass their own). */
  io?: CommandIo;
  /** The container runtime `describe` asks for containers; Docker as configured by default. */
  runtime?: (config: Config) => Pick<Runtime, 'listContainers'>;
}

/** Exit codes. `diff` follows `kubectl diff`: 0 no differences, 1 differences, 2 (above 1) errors. */
export const MANIFEST_EXIT = { ok: 0, error: 1, differences: 1, diffError: 2 } as const;

/** Problems printed before the rest is summed up. */
const MAX_PROBLEMS = 50;

const FILENAME_HELP = 'manifest file, directory (its .yaml/.yml files) or - for stdin; repeatable';

/** Runs an action, turning any error into one line on stderr and `errorCode`. */
function runner(deps: ManifestCommandDeps, io: CommandIo) {
  return <A extends unknown[]>(fn: (...args: A) => Promise<number>, errorCode: number = MANIFEST_EXIT.error) =>
    async (...args: A): Promise<void> => {
      try {
        deps.setExit(await fn(...args));
      } catch (err) {
        await write(io.stderr, `deployerctl: ${errorLine(err)}\n`);
        deps.setExit(errorCode);
      }
    };
}

/** Loads manifests, printing notes about skipped files on stderr. */
async function load(io: CommandIo, paths: readonly string[]): Promise<ManifestSet> {
  const set = await loadManifests(paths, { readStdin: (max) => readLimited(io.stdin, max) });
  for (const note of set.notes) await write(io.stderr, `deployerctl: note: ${note}\n`);
  return set;
}

/** Loads the manifests; with problems, prints them (and `consequence`) and returns undefined. */
async function loadValid(io: CommandIo, paths: readonly string[], consequence: string): Promise<ManifestSet | undefined> {
  const set = await load(io, paths);
  if (set.problems.length === 0) return set;
  await reportProblems(io, set.problems, consequence);
  return undefined;
}

/** Prints every problem (one line each, up to a limit) and a summary line. */
async function reportProblems(io: CommandIo, problems: readonly string[], consequence: string): Promise<void> {
  const shown = problems.slice(0, MAX_PROBLEMS);
  let text = shown.map((p) => `${p}\n`).join('');
  if (problems.length > shown.length) text += `... and ${problems.length - shown.length} more problems\n`;
  const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
  text += `deployerctl: ${count} in the manifests${consequence ? `; ${consequence}` : ''}\n`;
  await write(io.stderr, text);
}

function revisionText(r: LiveRevision): string {
  return `${r.id} (${r.status})`;
}

function count(n: number, what: string): string {
  return `${n} ${what}`;
}

function endedNotes(ended: readonly AlreadyEnded[]): string {
  return ended.map((e) => `${e.id} had already ended (${e.status}): left as it is\n`).join('');
}

async function withDatabase<T>(config: Config, fn: (db: Awaited<ReturnType<typeof openDatabase>>) => Promise<T>): Promise<T> {
  const database = await openDatabase(config, { startEmbedded: false });
  try {
    return await fn(database);
  } finally {
    await database.close();
  }
}

/**
 * Adds the declarative commands (`schema`, `validate`, `apply`, `diff`,
 * `delete`) and the inspection commands (`get deployments`, `describe
 * deployment`, `watch`) to the program.
 */
export function registerManifestCommands(program: Command, deps: ManifestCommandDeps): void {
  const io = deps.io ?? processIo();
  const run = runner(deps, io);

  program
    .command('schema')
    .description('print the JSON Schema of a manifest document (for editors)')
    .action(
      run(async () => {
        await write(io.stdout, JSON.stringify(manifestJsonSchema(), null, 2) + '\n');
        return MANIFEST_EXIT.ok;
      }),
    );

  program
    .command('validate')
    .description('check manifests without touching the database (exit 0: valid, 1: problems)')
    .requiredOption('-f, --filename <path...>', FILENAME_HELP)
    .action(
      run(async (opts: { filename: string[] }) => {
        const set = await loadValid(io, opts.filename, '');
        if (!set) return MANIFEST_EXIT.error;
        const files = set.files.length === 1 ? '1 file' : `${set.files.length} files`;
        await write(io.stdout, `${count(set.services.length, set.services.length === 1 ? 'service' : 'services')} in ${files}: valid\n`);
        return MANIFEST_EXIT.ok;
      }),
    );

  program
    .command('apply')
    .description('make the database hold the manifests: unchanged services write nothing, changed ones get their next revision (one transaction)')
    .requiredOption('-f, --filename <path...>', FILENAME_HELP)
    .option('--prune', 'cancel the services of the same projects that the manifests no longer name')
    .option('--dry-run', 'print what would be done, write nothing')
    .action(
      run(async (opts: { filename: string[]; prune?: boolean; dryRun?: boolean }, cmd: Command) => {
        const config = deps.configFrom(cmd);
        const set = await loadValid(io, opts.filename, 'nothing was written');
        if (!set) return MANIFEST_EXIT.error;
        const outcome = await withDatabase(config, (database) =>
          applyManifests(database.db, set.services, { actor: cliActor(), prune: !!opts.prune, dryRun: !!opts.dryRun }),
        );
        const { plan, dryRun } = outcome;
        const lines: [string, string][] = [];
        for (const c of plan.created) {
          let line = dryRun
            ? `${serviceKey(c.manifest.project, c.manifest.name)} would be created: revision ${c.revision} (${c.id})`
            : `${serviceKey(c.manifest.project, c.manifest.name)} created: revision ${c.revision} (${c.id}), pending`;
          for (const r of c.replaces) line += `\n  ${dryRun ? 'would cancel' : 'cancelled'} ${revisionText(r)}: replaced before it finished`;
          lines.push([serviceKey(c.manifest.project, c.manifest.name), line]);
        }
        for (const u of plan.unchanged) {
          lines.push([serviceKey(u.manifest.project, u.manifest.name), `${serviceKey(u.manifest.project, u.manifest.name)} unchanged: revision ${u.current.revision} (${u.current.id}, ${u.current.status})`]);
        }
        for (const p of plan.pruned) {
          const key = serviceKey(p.project, p.service);
          lines.push([key, `${key} ${dryRun ? 'would be pruned: would cancel' : 'pruned: cancelled'} ${p.cancel.map(revisionText).join(', ')}`]);
        }
        lines.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        let text = lines.map(([, line]) => `${line}\n`).join('') + endedNotes(outcome.alreadyEnded);
        const summary = dryRun
          ? `apply --dry-run: ${plan.created.length} to create, ${plan.unchanged.length} unchanged, ${plan.pruned.length} to prune; nothing was written`
          : `apply: ${plan.created.length} created, ${plan.unchanged.length} unchanged, ${plan.pruned.length} pruned`;
        text += `${summary}\n`;
        await write(io.stdout, text);
        return MANIFEST_EXIT.ok;
      }),
    );

  program
    .command('diff')
    .description('show what apply would change, as a unified diff of specs per service (exit 0: none, 1: differences, 2: error)')
    // Checked in the action rather than by commander: a usage error must exit 2 here, as 1 means "differences".
    .option('-f, --filename <path...>', `${FILENAME_HELP} (required)`)
    .option('--prune', 'also show the services apply --prune would cancel')
    .action(
      run(async (opts: { filename?: string[]; prune?: boolean }, cmd: Command) => {
        if (!opts.filename || opts.filename.length === 0) throw new Error("required option '-f, --filename <path...>' not specified (run with --help for usage)");
        const config = deps.configFrom(cmd);
        const set = await loadValid(io, opts.filename, '');
        if (!set) return MANIFEST_EXIT.diffError;
        const projects = [...new Set(set.services.map((s) => s.project))];
        const stored = await withDatabase(config, (database) => readStoredState(database.db, projects));
        const diff = planDiff(planApply(set.services, stored, { prune: !!opts.prune }));
        if (diff === '') return MANIFEST_EXIT.ok;
        await write(io.stdout, colorEnabled(io) ? colorDiff(diff) : diff);
        return MANIFEST_EXIT.differences;
      }, MANIFEST_EXIT.diffError),
    );

  program
    .command('delete')
    .description('cancel every pending, deploying or active revision of the services the manifests name (one transaction)')
    .requiredOption('-f, --filename <path...>', FILENAME_HELP)
    .option('--dry-run', 'print what would be cancelled, write nothing')
    .option('--ignore-not-found', 'a named service with nothing to cancel is not an error')
    .action(
      run(async (opts: { filename: string[]; dryRun?: boolean; ignoreNotFound?: boolean }, cmd: Command) => {
        const config = deps.configFrom(cmd);
        const set = await loadValid(io, opts.filename, 'nothing was written');
        if (!set) return MANIFEST_EXIT.error;
        const outcome = await withDatabase(config, (database) =>
          deleteManifests(database.db, set.services, { actor: cliActor(), dryRun: !!opts.dryRun }),
        );
        const { plan, dryRun } = outcome;
        let text = plan.deleted
          .map((d) => `${serviceKey(d.project, d.service)} ${dryRun ? 'would be deleted: would cancel' : 'deleted: cancelled'} ${d.cancel.map(revisionText).join(', ')}\n`)
          .join('');
        text += endedNotes(outcome.alreadyEnded);
        text += `delete${dryRun ? ' --dry-run' : ''}: ${plan.deleted.length} ${dryRun ? 'to delete' : 'deleted'}, ${plan.notFound.length} not found${dryRun ? '; nothing was written' : ''}\n`;
        await write(io.stdout, text);
        for (const m of plan.notFound) {
          await write(io.stderr, `deployerctl: ${serviceKey(m.project, m.name)} not found: no pending, deploying or active revision (${m.origin})\n`);
        }
        return plan.notFound.length > 0 && !opts.ignoreNotFound ? MANIFEST_EXIT.error : MANIFEST_EXIT.ok;
      }),
    );

  registerDeploymentCommands(program, { ...deps, io, run });
}
