/**
 * The operator's manifest commands (`registerManifestCommands`) run in this
 * process through commander, as `deployerctl` wires them, with their output
 * kept in memory: no child process, so a test can read `stdout` while a
 * command such as `watch` runs.
 */
import { Readable, Writable } from 'node:stream';
import { Command, CommanderError } from 'commander';
import type { CommandIo } from '../../src/cli/commands/io.js';
import { registerManifestCommands } from '../../src/cli/commands/manifests.js';
import { loadConfig } from '../../src/config.js';

/** A stream that keeps what is written, and can pretend to be a terminal. */
export class Sink extends Writable {
  text = '';
  constructor(
    readonly isTTY = false,
    readonly columns = 120,
  ) {
    super();
  }
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: () => void): void {
    this.text += chunk.toString();
    callback();
  }
}

export interface ManifestCliOptions {
  /** The environment the configuration is loaded from (DATABASE_URL, DOCKER_HOST, ...). */
  configEnv: NodeJS.ProcessEnv;
  /** Make stdout a terminal (colours, progress bars in place). */
  tty?: boolean;
  stdin?: string;
  /** The commands' own environment (NO_COLOR, ...). */
  env?: NodeJS.ProcessEnv;
}

/** How a command ended. */
export interface ManifestCliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Starts `deployerctl ARGS`; `stdout` can be read while it runs, `done` resolves when it has ended. */
export function startManifestCli(args: readonly string[], options: ManifestCliOptions): { done: Promise<ManifestCliRun>; stdout: Sink; stderr: Sink } {
  const stdout = new Sink(options.tty ?? false);
  const stderr = new Sink();
  let code = 0;
  const program = new Command('deployerctl')
    .option('-c, --config <file>')
    .exitOverride()
    .configureOutput({ writeOut: (s) => void (stdout.text += s), writeErr: (s) => void (stderr.text += s) });
  const io: CommandIo = { stdout, stderr, stdin: Readable.from([Buffer.from(options.stdin ?? '')]), env: options.env ?? {} };
  registerManifestCommands(program, {
    setExit: (c) => (code = c),
    configFrom: () => loadConfig({ env: options.configEnv }),
    io,
  });
  const done = program.parseAsync([...args], { from: 'user' }).then(
    () => ({ code, stdout: stdout.text, stderr: stderr.text }),
    (err: unknown) => {
      if (err instanceof CommanderError) return { code: err.exitCode, stdout: stdout.text, stderr: stderr.text };
      throw err;
    },
  );
  return { done, stdout, stderr };
}

/** Runs `deployerctl ARGS` to its end. */
export function runManifestCli(args: readonly string[], options: ManifestCliOptions): Promise<ManifestCliRun> {
  return startManifestCli(args, options).done;
}
