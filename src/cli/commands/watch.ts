import type { Kysely } from 'kysely';
import { formatDuration } from '../../duration.js';
import { DeploymentListener } from '../../store/listen.js';
import type { Database } from '../../store/schema.js';
import { TERMINAL_STATUSES } from '../../types.js';
import { getDeployment, type DeploymentView } from './deployments-query.js';
import { colorEnabled, errorLine, paint, write, type CommandIo } from './io.js';

/**
 * `deployerctl watch ID`: follows one deployment until it ends. Changes
 * arrive by LISTEN on the deployments channel (every insert or update of the
 * table is announced); a slow poll covers a lost notification, and a faster
 * one covers a LISTEN connection that is down.
 */

/** Exit codes of watch: 0 when the deployment ends `active`, 1 otherwise (failed, cancelled, superseded, timeout, error). */
export const WATCH_EXIT = { active: 0, notActive: 1 } as const;

/** Options of {@link watchDeployment}. */
export interface WatchOptions {
  db: Kysely<Database>;
  /** Connection string for the LISTEN connection; without it, polling only. */
  listenUrl?: string | undefined;
  id: string;
  io: CommandIo;
  /** Poll interval while LISTEN is up (a safety net only). Default 5 s. */
  pollMs?: number;
  /** Poll interval while LISTEN is down. Default 1 s. */
  fastPollMs?: number;
  /** Give up after this long (exit 1). */
  timeoutMs?: number | undefined;
  signal?: AbortSignal;
}

const BAR_WIDTH = 20;

/** `[########............]` for a percentage. */
export function progressBar(percent: number, width = BAR_WIDTH): string {
  const clamped = Math.max(0, Math.min(100, Number.isFinite(percent) ? percent : 0));
  const filled = Math.round((clamped / 100) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

function stepText(d: Pick<DeploymentView, 'progress'>): string {
  const p = d.progress;
  if (!p) return '';
  return ` step ${p.step}/${p.total} ${p.percent}%${p.message ? `: ${p.message}` : ''}`;
}

/** One line per change when stdout is not a terminal: `shop.web.r2 deploying starting step 3/6 33%: message`. */
export function watchLine(d: Pick<DeploymentView, 'id' | 'status' | 'phase' | 'progress'>): string {
  return `${d.id} ${d.status}${d.phase ? ` ${d.phase}` : ''}${stepText(d)}`;
}

/** The live bar on a terminal: `shop.web.r2 deploying [######..............] step 3/6 33%: message`. */
export function watchBar(d: Pick<DeploymentView, 'id' | 'status' | 'phase' | 'progress'>): string {
  const p = d.progress;
  const percent = p ? p.percent : 0;
  const step = p ? `${p.step}/${p.total}` : `0/6`;
  return `${d.id} ${d.status} ${progressBar(percent)} step ${step} ${String(percent).padStart(3)}%${d.phase ? ` ${d.phase}` : ''}${p?.message ? `: ${p.message}` : ''}`;
}

/** The last line: how it ended. */
export function finalLine(d: Pick<DeploymentView, 'id' | 'status' | 'statusReason' | 'revision'>): string {
  if (d.status === 'active') return `${d.id} is active: revision ${d.revision} is serving`;
  return `${d.id} ended ${d.status}${d.statusReason ? `: ${d.statusReason}` : ''}`;
}

const ENDED = new Set<string>(TERMINAL_STATUSES);

/** Follows a deployment until it ends; resolves to the exit code. */
export async function watchDeployment(options: WatchOptions): Promise<number> {
  const { io, id, db } = options;
  const tty = !!io.stdout.isTTY;
  const color = colorEnabled(io);
  const pollMs = options.pollMs ?? 5_000;
  const fastPollMs = options.fastPollMs ?? 1_000;
  const deadline = options.timeoutMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.timeoutMs;

  let dirty = false;
  let wakeUp: (() => void) | undefined;
  const wake = () => {
    dirty = true;
    wakeUp?.();
  };
  let listening = false;
  const listener = options.listenUrl
    ? new DeploymentListener({
        connectionString: options.listenUrl,
        onNotice: (notice) => {
          if (notice.id === id) wake();
        },
        onConnected: () => {
          listening = true;
          // Anything may have changed while the connection was down.
          wake();
        },
        onError: () => {
          listening = false;
        },
      })
    : undefined;
  const onAbort = () => wakeUp?.();
  options.signal?.addEventListener('abort', onAbort);

  let last = '';
  let barShown = false;
  let readFailing = false;
  const show = async (d: DeploymentView) => {
    if (tty) {
      const columns = io.stdout.columns ?? 100;
      const bar = watchBar(d).slice(0, Math.max(20, columns - 1));
      if (bar !== last) await write(io.stdout, `\r\x1b[2K${bar}`);
      last = bar;
      barShown = true;
    } else {
      const line = watchLine(d);
      if (line !== last) await write(io.stdout, `${line}\n`);
      last = line;
    }
  };
  const finish = async (d: DeploymentView, code: number) => {
    const line = finalLine(d);
    const painted = paint(line, code === WATCH_EXIT.active ? 'green' : 'red', color);
    await write(io.stdout, `${tty && barShown ? '\n' : ''}${painted}\n`);
    return code;
  };

  try {
    // LISTEN before the first read: a change between the two is then not missed.
    await listener?.start();
    let first = true;
    for (;;) {
      dirty = false;
      let d: DeploymentView | undefined;
      try {
        d = await getDeployment(db, id);
        if (readFailing) await write(io.stderr, 'deployerctl: database reachable again\n');
        readFailing = false;
      } catch (err) {
        // The first read fails loudly (wrong database, not migrated); later ones are waited out.
        if (first) throw err;
        if (!readFailing) await write(io.stderr, `${tty && barShown ? '\n' : ''}deployerctl: cannot read ${id}, retrying: ${errorLine(err)}\n`);
        readFailing = true;
      }
      if (!d && !readFailing) {
        await write(io.stderr, first ? `deployerctl: no deployment ${id}\n` : `${tty && barShown ? '\n' : ''}deployerctl: deployment ${id} was deleted\n`);
        return WATCH_EXIT.notActive;
      }
      first = false;
      if (d) {
        await show(d);
        if (d.status === 'active') return await finish(d, WATCH_EXIT.active);
        if (ENDED.has(d.status)) return await finish(d, WATCH_EXIT.notActive);
      }
      if (options.signal?.aborted) return WATCH_EXIT.notActive;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        await write(io.stderr, `${tty && barShown ? '\n' : ''}deployerctl: timed out after ${formatDuration(options.timeoutMs ?? 0)} waiting for ${id}${d ? ` (still ${d.status})` : ''}\n`);
        return WATCH_EXIT.notActive;
      }
      if (!dirty) {
        const wait = Math.min(listening && !readFailing ? pollMs : fastPollMs, remaining);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, wait);
          wakeUp = () => {
            clearTimeout(timer);
            resolve();
          };
          if (dirty || options.signal?.aborted) wakeUp();
        });
        wakeUp = undefined;
      }
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await listener?.stop();
  }
}
