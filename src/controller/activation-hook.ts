import { spawn } from 'node:child_process';

/** How an activation hook run ended. */
export interface HookResult {
  ok: boolean;
  /** Why not, with the hook's stderr (trimmed). */
  reason?: string;
}

const MAX_STDERR = 4_000;

/**
 * Runs the activation hook (config `activationHook`, an argument list) with
 * `input` as JSON on stdin. A non-zero exit, a failure to start, or a run past
 * `timeoutMs` (the process is killed) is a failure whose reason carries the
 * hook's stderr.
 */
export function runActivationHook(argv: readonly string[], input: unknown, timeoutMs: number): Promise<HookResult> {
  const [file, ...args] = argv;
  if (!file) return Promise.resolve({ ok: true });
  return new Promise((resolve) => {
    let stderr = '';
    let settled = false;
    const finish = (result: HookResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const child = spawn(file, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ ok: false, reason: `activation hook timed out after ${timeoutMs}ms${tail(stderr)}` });
    }, timeoutMs);
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < MAX_STDERR) stderr += chunk.toString();
    });
    child.on('error', (err) => finish({ ok: false, reason: `activation hook could not run: ${err.message}` }));
    child.on('close', (code, signal) => {
      if (code === 0) finish({ ok: true });
      else finish({ ok: false, reason: `activation hook exited with ${code ?? signal}${tail(stderr)}` });
    });
    // A hook that does not read its stdin must not fail us with EPIPE.
    child.stdin.on('error', () => undefined);
    child.stdin.end(JSON.stringify(input) + '\n');
  });
}

function tail(stderr: string): string {
  const text = stderr.trim().split('\n').slice(-5).join(' | ').slice(0, 1_000);
  return text ? `: ${text}` : '';
}
