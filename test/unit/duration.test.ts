import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../src/duration.js';

const S = 1_000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['0ms', 0],
    ['0s', 0],
    ['30s', 30 * S],
    ['2m', 2 * M],
    ['6h', 6 * H],
    ['24h', 24 * H],
    ['30d', 30 * D],
    ['1h30m', H + 30 * M],
    ['1d2h3m4s5ms', D + 2 * H + 3 * M + 4 * S + 5],
    ['1.5h', 1.5 * H],
    ['0.5s', 500],
    ['2.5ms', 3], // whole milliseconds
    ['  45s\n', 45 * S], // surrounding blanks are tolerated
    ['90m', 90 * M], // no carrying rules: any unit may hold any amount
  ])('%j -> %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    '',
    '   ',
    '30', // a unit is required
    's',
    '-5s',
    '+5s',
    '5 s',
    '1h 30m',
    '5S',
    '5sec',
    '5min',
    '1w',
    '1y',
    '.5s',
    '5.s',
    '1e3ms',
    'soon',
    '30s!',
    'PT30S',
    '9'.repeat(400) + 'd', // overflows to Infinity
  ])('rejects %j, naming the text', (text) => {
    expect(() => parseDuration(text)).toThrow(JSON.stringify(text).slice(0, 40));
  });

  it('explains what it expected', () => {
    expect(() => parseDuration('soon')).toThrow('expected a duration such as 30s, 2m, 6h or 1h30m, got "soon"');
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [250, '250ms'],
    [999, '999ms'],
    [999.4, '999ms'],
    [999.6, '1s'], // rounds to a whole millisecond before picking the unit
    [S, '1s'],
    [42 * S, '42s'],
    [42 * S + 999, '42s'], // truncates, never rounds up into the next second
    [M - 1, '59s'],
    [M, '1m0s'],
    [12 * M + 5 * S, '12m5s'],
    [H - 1, '59m59s'],
    [H, '1h0m'],
    [6 * H, '6h0m'],
    [6 * H + 59 * S, '6h0m'],
    [6 * H + 30 * M, '6h30m'],
    [26 * H + 5 * M, '26h5m'], // hours do not roll into days
    [-42 * S, '-42s'],
    [-(6 * H + M), '-6h1m'],
    [-0.2, '0ms'], // no "-0ms"
  ])('%d ms -> %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each(['250ms', '42s', '12m5s', '6h0m', '26h5m'])('reads back what it writes: %j', (text) => {
    expect(formatDuration(parseDuration(text))).toBe(text);
  });
});
