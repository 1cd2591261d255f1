/**
 * A result's way out of the nested host: its root file system is read-only and its /tmp dies with
 * it, so the measuring side prints the JSON on the console as gzip + base64 in numbered lines, and
 * the outer side reassembles them. The prefix is the block benchmark's own, so these lines never
 * mix with another benchmark's.
 *
 * A measurement may print its result more than once: after every guest boot it prints what it
 * has so far (a partial result), then the whole result at the end, each a numbered generation.
 * The emulated host sometimes dies mid-run (a kernel panic or soft lockup of its own); the outer
 * side then still has the boots that finished, and reports them as an incomplete run.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';

export const RESULT_PREFIX = 'BLK-RESULT ';
const CHUNK = 1000;

/** `value` as result lines of generation `generation` (a later generation supersedes an earlier one). */
export function encodeResultLines(value: unknown, generation = 0): string[] {
  const b64 = gzipSync(Buffer.from(JSON.stringify(value), 'utf8')).toString('base64');
  const n = Math.ceil(b64.length / CHUNK);
  return Array.from({ length: n }, (_, i) => `${RESULT_PREFIX}${generation} ${i + 1}/${n} ${b64.slice(i * CHUNK, (i + 1) * CHUNK)}`);
}

/**
 * The value of the latest complete generation in console text holding result lines (other lines
 * are ignored). Throws when no generation is complete.
 */
export function decodeResultLines(output: string): unknown {
  const generations = new Map<number, { total: number; chunks: Map<number, string> }>();
  for (const raw of output.split('\n')) {
    const m = /^BLK-RESULT (\d+) (\d+)\/(\d+) (\S+)/.exec(raw.replace(/\r$/, ''));
    if (!m) continue;
    const gen = Number(m[1]);
    let g = generations.get(gen);
    if (g === undefined) generations.set(gen, (g = { total: Number(m[3]), chunks: new Map() }));
    g.chunks.set(Number(m[2]), m[4]!);
  }
  const complete = [...generations.entries()].filter(([, g]) => g.total > 0 && g.chunks.size === g.total).sort(([a], [b]) => b - a);
  const latest = complete[0]?.[1];
  if (latest === undefined) {
    const parts = [...generations.values()].map((g) => `${g.chunks.size} of ${g.total}`).join(', ');
    throw new Error(`the nested run's result is incomplete (${parts === '' ? 'no result lines' : `parts: ${parts}`})`);
  }
  const b64 = Array.from({ length: latest.total }, (_, i) => latest.chunks.get(i + 1)!).join('');
  return JSON.parse(gunzipSync(Buffer.from(b64, 'base64')).toString('utf8')) as unknown;
}

/** Hands a measurement's result so far to the outer side (measureMain prints it as a new generation). */
export type PartialResultSink = (resultSoFar: unknown) => void;

/**
 * A measuring script's entry point (`node measure.js SPEC_BASE64`), when `moduleUrl` is the script
 * node was started with: decode the spec, measure, and write the result to `spec.out` when given,
 * else to stdout as result lines.
 */
export async function measureMain<S extends { readonly out?: string }>(moduleUrl: string, measure: (spec: S, partial?: PartialResultSink) => Promise<unknown>): Promise<void> {
  if (process.argv[1] === undefined || fileURLToPath(moduleUrl) !== process.argv[1]) return;
  const arg = process.argv[2];
  if (arg === undefined) {
    process.stderr.write('usage: measure SPEC_BASE64\n');
    process.exit(2);
  }
  const spec = JSON.parse(Buffer.from(arg, 'base64').toString('utf8')) as S;
  let generation = 0;
  // Partial results only where the console carries the result: a file is written once, at the end.
  const partial: PartialResultSink | undefined =
    spec.out !== undefined
      ? undefined
      : (soFar) => {
          for (const l of encodeResultLines(soFar, generation)) process.stdout.write(`${l}\n`);
          generation++;
        };
  const result = await measure(spec, partial);
  if (spec.out !== undefined) writeFileSync(spec.out, `${JSON.stringify(result, null, 2)}\n`);
  else for (const l of encodeResultLines(result, generation)) process.stdout.write(`${l}\n`);
}
