/**
 * Durations as the config and the spec write them: `500ms`, `30s`, `2m`, `6h`,
 * `30d`, or several units together (`1h30m`).
 */

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
const WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/;

/** Parses a duration string into milliseconds; throws with the offending text. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (!WHOLE.test(trimmed)) {
    throw new Error(`expected a duration such as 30s, 2m, 6h or 1h30m, got ${JSON.stringify(text)}`);
  }
  let total = 0;
  for (const match of trimmed.matchAll(PART)) {
    total += Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  }
  const ms = Math.round(total);
  // Absurd digit strings overflow to Infinity (or lose precision): refuse them rather than return a non-duration.
  if (!Number.isSafeInteger(ms)) throw new Error(`duration ${JSON.stringify(text)} is too large`);
  return ms;
}

/**
 * Formats milliseconds for people, in the style of the seeds' messages:
 * `6h0m`, `12m5s`, `42s`, `250ms`.
 */
export function formatDuration(ms: number): string {
  // Round to whole milliseconds first, so 999.6 reads 1s rather than 1000ms, and -0.2 reads 0ms.
  const abs = Math.round(Math.abs(ms));
  const negative = ms < 0 && abs > 0;
  let text: string;
  if (abs < 1_000) {
    text = `${abs}ms`;
  } else if (abs < 60_000) {
    text = `${Math.floor(abs / 1_000)}s`;
  } else if (abs < 3_600_000) {
    text = `${Math.floor(abs / 60_000)}m${Math.floor((abs % 60_000) / 1_000)}s`;
  } else {
    text = `${Math.floor(abs / 3_600_000)}h${Math.floor((abs % 3_600_000) / 60_000)}m`;
  }
  return negative ? `-${text}` : text;
}
