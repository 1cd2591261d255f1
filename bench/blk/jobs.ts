/**
 * The fio jobs the block benchmark runs, identical for every VMM: what issue #4 asks for (4 KiB
 * random read and write IOPS at queue depth 1 and 32, 1 MiB sequential read and write MB/s).
 *
 * A job travels to the guest as one compact word, `name:rw:bs:iodepth`, so the whole list fits on
 * the kernel command line next to everything else (COMMAND_LINE_SIZE is 2048 on x86) and the
 * in-guest script (guest-script.ts) stays generic.
 */

export type FioRw = 'randread' | 'randwrite' | 'read' | 'write';

export interface FioJob {
  /** Short, shell-safe name used in markers and the report. */
  readonly name: string;
  readonly rw: FioRw;
  /** Block size in bytes. */
  readonly blockSize: number;
  readonly iodepth: number;
  /** What the report leads with: I/Os per second (small random I/O) or MB/s (large sequential I/O). */
  readonly metric: 'iops' | 'mbps';
  /** The row label in tables and charts. */
  readonly label: string;
}

/**
 * The matrix. Sequential jobs use queue depth 8: enough to keep several 1 MiB requests in flight
 * (Linux splits them at the device's max_sectors_kb, which the report records for both VMMs)
 * without turning the measurement into one of queueing.
 */
export const FIO_JOBS: readonly FioJob[] = [
  { name: 'randread-4k-qd1', rw: 'randread', blockSize: 4096, iodepth: 1, metric: 'iops', label: '4 KiB random read, QD 1' },
  { name: 'randread-4k-qd32', rw: 'randread', blockSize: 4096, iodepth: 32, metric: 'iops', label: '4 KiB random read, QD 32' },
  { name: 'randwrite-4k-qd1', rw: 'randwrite', blockSize: 4096, iodepth: 1, metric: 'iops', label: '4 KiB random write, QD 1' },
  { name: 'randwrite-4k-qd32', rw: 'randwrite', blockSize: 4096, iodepth: 32, metric: 'iops', label: '4 KiB random write, QD 32' },
  { name: 'read-1m-qd8', rw: 'read', blockSize: 1 << 20, iodepth: 8, metric: 'mbps', label: '1 MiB sequential read, QD 8' },
  { name: 'write-1m-qd8', rw: 'write', blockSize: 1 << 20, iodepth: 8, metric: 'mbps', label: '1 MiB sequential write, QD 8' },
];

const NAME = /^[a-z0-9-]+$/;

/** `randread-4k-qd1:randread:4096:1`: the word the guest script splits at colons. */
export function jobWord(job: FioJob): string {
  if (!NAME.test(job.name)) throw new Error(`fio job name '${job.name}' must be lower-case letters, digits and dashes`);
  return `${job.name}:${job.rw}:${job.blockSize}:${job.iodepth}`;
}

/** `--jobs a,b`: a subset of FIO_JOBS by name, in the matrix's order. */
export function selectJobs(names: string | undefined): FioJob[] {
  if (names === undefined) return [...FIO_JOBS];
  const wanted = names.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const w of wanted) {
    if (!FIO_JOBS.some((j) => j.name === w)) throw new Error(`--jobs: unknown job '${w}' (choose from ${FIO_JOBS.map((j) => j.name).join(', ')})`);
  }
  return FIO_JOBS.filter((j) => wanted.includes(j.name));
}
