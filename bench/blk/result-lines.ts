/**
 * A result's way out of the nested host: its root file system is read-only and its /tmp dies with
 * it, so the measuring side prints the JSON on the console as gzip + base64 in numbered lines, and
 * the outer side reassembles them. The prefix is the block benchmark's own, so these lines never
 * mix with another benchmark's.
 */
import { gunzipSync, gzipSync } from 'node:zlib';

export const RESULT_PREFIX = 'BLK-RESULT ';
const CHUNK = 1000;

export function encodeResultLines(value: unknown): string[] {
  const b64 = gzipSync(Buffer.from(JSON.stringify(value), 'utf8')).toString('base64');
  const n = Math.ceil(b64.length / CHUNK);
  return Array.from({ length: n }, (_, i) => `${RESULT_PREFIX}${i + 1}/${n} ${b64.slice(i * CHUNK, (i + 1) * CHUNK)}`);
}

/** The value back from console text holding the lines (other lines are ignored). Throws when parts are missing. */
export function decodeResultLines(output: string): unknown {
  const chunks = new Map<number, string>();
  let total = 0;
  for (const raw of output.split('\n')) {
    const m = /^BLK-RESULT (\d+)\/(\d+) (\S+)/.exec(raw.replace(/\r$/, ''));
    if (!m) continue;
    chunks.set(Number(m[1]), m[3]!);
    total = Number(m[2]);
  }
  if (total === 0 || chunks.size !== total) throw new Error(`the nested run's result is incomplete (${chunks.size} of ${total} parts)`);
  const b64 = Array.from({ length: total }, (_, i) => chunks.get(i + 1)!).join('');
  return JSON.parse(gunzipSync(Buffer.from(b64, 'base64')).toString('utf8')) as unknown;
}
