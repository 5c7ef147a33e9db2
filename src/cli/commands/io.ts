import { hostname, userInfo } from 'node:os';

/**
 * The terminal as the commands see it: streams, whether stdout is a terminal
 * (colour, progress bars) and the environment. Tests pass their own.
 */
export interface CommandIo {
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  stderr: NodeJS.WritableStream;
  stdin: NodeJS.ReadableStream;
  env: NodeJS.ProcessEnv;
}

export function processIo(): CommandIo {
  return { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin, env: process.env };
}

/** Colour only on a terminal, and never when `NO_COLOR` is set (no-color.org) or the terminal is dumb. */
export function colorEnabled(io: CommandIo): boolean {
  return !!io.stdout.isTTY && !io.env.NO_COLOR && io.env.TERM !== 'dumb';
}

export const ANSI = { red: 31, green: 32, yellow: 33, cyan: 36, bold: 1 } as const;

/** `text` in an ANSI colour when `enabled`. */
export function paint(text: string, color: keyof typeof ANSI, enabled: boolean): string {
  return enabled ? `\x1b[${ANSI[color]}m${text}\x1b[0m` : text;
}

/** Writes and waits until the stream took it, so nothing is lost when the process exits right after. */
export function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  if (text === '') return Promise.resolve();
  return new Promise((resolve, reject) => {
    stream.write(text, (err) => (err ? reject(err) : resolve()));
  });
}

/** Reads a stream to its end, refusing more than `maxBytes` (it returns `maxBytes + 1` bytes then, for the caller to refuse). */
export async function readLimited(stream: NodeJS.ReadableStream, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream) {
    const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    chunks.push(buffer);
    length += buffer.length;
    if (length > maxBytes) break;
  }
  return Buffer.concat(chunks).subarray(0, maxBytes + 1);
}

/** Who an operator's change is recorded as (the same form as `cancel` and `rollback`). */
export function cliActor(): string {
  let user: string;
  try {
    user = userInfo().username;
  } catch {
    user = process.env.USER ?? `uid${process.getuid?.() ?? ''}`;
  }
  return `deployerctl:${user}@${hostname()}`;
}

/** One line for an error, with a hint for the usual causes. */
export function errorLine(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === '42P01') return `${message}: the database is not migrated, run deployerctl migrate`;
  if (code === 'ECONNREFUSED') return `cannot connect to the database (${message}): is it running, and is DATABASE_URL right?`;
  return message.split('\n')[0] ?? message;
}
