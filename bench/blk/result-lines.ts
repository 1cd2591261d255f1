/**
 * A result's way out of the nested host: its root file system is read-only and its /tmp dies with
 * it, so the measuring side prints the JSON on the console as gzip + base64 in numbered lines, and
 * the outer side reassembles them. The prefix is the block benchmark's own, so these lines never
 * mix with another benchmark's.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
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

/**
 * A measuring script's entry point (`node measure.js SPEC_BASE64`), when `moduleUrl` is the script
 * node was started with: decode the spec, measure, and write the result to `spec.out` when given,
 * else to stdout as result lines.
 */
export async function measureMain<S extends { readonly out?: string }>(moduleUrl: string, measure: (spec: S) => Promise<unknown>): Promise<void> {
  if (process.argv[1] === undefined || fileURLToPath(moduleUrl) !== process.argv[1]) return;
  const arg = process.argv[2];
  if (arg === undefined) {
    process.stderr.write('usage: measure SPEC_BASE64\n');
    process.exit(2);
  }
  const spec = JSON.parse(Buffer.from(arg, 'base64').toString('utf8')) as S;
  const result = await measure(spec);
  if (spec.out !== undefined) writeFileSync(spec.out, `${JSON.stringify(result, null, 2)}\n`);
  else for (const l of encodeResultLines(result)) process.stdout.write(`${l}\n`);
}
