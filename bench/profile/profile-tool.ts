/**
 * What the profiling aids share (net-stream.ts, blk-stream.ts): the measuring loop, a device's
 * calls against the same system calls made directly in alternating rounds, and the entry point.
 */
import { fileURLToPath } from 'node:url';

/** One round: the items it handled (frames, requests) and the nanoseconds it took by its own clock. */
export type Round = () => [items: number, ns: bigint];

export interface Alternated {
  /** Items the device rounds handled. */
  readonly items: number;
  /** Per item, µs: the device's rounds, and the baseline's. */
  readonly deviceUs: number;
  readonly baselineUs: number;
  /** Items per device round. */
  readonly itemsPerRound: number;
}

/**
 * Run `rounds` of `device` and `baseline` alternately (up to `warmupRounds` of each first, untimed,
 * for the JIT), so that the machine's load, which moves by tens of per cent from second to second,
 * weighs on both alike.
 */
export function alternate(rounds: number, device: Round, baseline: Round, warmupRounds = 500): Alternated {
  for (let i = 0; i < Math.min(rounds, warmupRounds); i++) {
    device();
    baseline();
  }
  let items = 0;
  let deviceNs = 0n;
  let baselineItems = 0;
  let baselineNs = 0n;
  for (let i = 0; i < rounds; i++) {
    const [n, ns] = device();
    items += n;
    deviceNs += ns;
    const [m, ms] = baseline();
    baselineItems += m;
    baselineNs += ms;
  }
  return { items, deviceUs: Number(deviceNs) / 1000 / items, baselineUs: Number(baselineNs) / 1000 / baselineItems, itemsPerRound: items / rounds };
}

/** Run `main` when `moduleUrl` is the script node was started with; its error as one line and exit status 1. */
export function runIfMain(moduleUrl: string, name: string, main: () => void): void {
  if (process.argv[1] !== fileURLToPath(moduleUrl)) return;
  try {
    main();
  } catch (e) {
    console.error(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  }
}
