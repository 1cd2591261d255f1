/**
 * What every fuzz test shares: how long it runs and with which seed (FUZZ_MS, FUZZ_SEED: a failing
 * run prints its seed and can be replayed), a small seeded PRNG, and the guest RAM layout the
 * device fuzzers use.
 */

export const FUZZ_DURATION_MS = Number(process.env['FUZZ_MS'] ?? 2000);
export const FUZZ_SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 2 ** 31));

/** mulberry32: a small seeded PRNG returning numbers in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const HALF = 256 * 1024;
/** Two adjacent regions (contiguous RAM in two host buffers) and a separate one after a gap. */
export const FUZZ_REGIONS: [number, number][] = [
  [0, HALF],
  [HALF, HALF],
  [4 * HALF, 64 * 1024],
];
