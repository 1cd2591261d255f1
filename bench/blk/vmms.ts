/**
 * The two VMMs' command lines for the same guest: same kernel, initrd, command line, vCPUs,
 * memory and raw image, one virtio-blk drive on PCI.
 *
 * Equivalence of the drive settings:
 * - tsvmm `--disk IMG,cache=unsafe` (its default, Firecracker's cache_type Unsafe): buffered
 *   pread/pwrite through the host page cache on libuv's thread pool; FLUSH is not offered.
 * - QEMU `cache=writeback,aio=threads`: buffered I/O through the host page cache (no O_DIRECT),
 *   submitted on QEMU's thread pool; FLUSH is offered and becomes fdatasync. The guest's fio jobs
 *   use O_DIRECT writes without fsync, so Linux sends no FLUSH to either device: per job, both
 *   VMMs do the same buffered reads and writes (the guest's flush counter in BLK-STAT shows it).
 * - queues: tsvmm gives a drive one request queue per vCPU; QEMU gets `num-queues` = vCPUs.
 *   Queue size 256 on both (QEMU's default since 5.0; tsvmm's BLK_QUEUE_SIZE).
 * - machine: QEMU `-M q35` (virtio-blk-pci needs a PCI machine; microvm has PCI only as an
 *   option). It boots through SeaBIOS, which costs boot time but nothing once fio runs.
 */
import type { PollerWait } from '../../src/vmm/eventfd-poller.js';

export interface GuestSpec {
  readonly kernel: string;
  readonly initrd: string;
  readonly cmdline: string;
  readonly vcpus: number;
  readonly memoryMib: number;
  readonly image: string;
  /** node flags for the tsvmm process (bench --profile-vmm). */
  readonly nodeArgs?: readonly string[];
  /** How tsvmm's EventFdPoller waits (TSVMM_POLLER; bench --tsvmm-poller); absent: its default. */
  readonly poller?: PollerWait;
}

export interface Invocation {
  readonly command: string;
  readonly args: readonly string[];
  /** Added to the environment the VMM process inherits. */
  readonly env?: Readonly<Record<string, string>>;
}

/** The environment for tsvmm's process that `g` asks for. */
export function tsvmmEnv(g: BootSpec): Readonly<Record<string, string>> | undefined {
  return g.poller !== undefined ? { TSVMM_POLLER: g.poller } : undefined;
}

/** --tsvmm-poller's value, checked. */
export function pollerOption(value: string | undefined): PollerWait | undefined {
  if (value === undefined) return undefined;
  if (value === 'main-loop' || value === 'threadpool' || value === 'held') return value;
  throw new Error(`--tsvmm-poller takes main-loop, threadpool or held, not '${value}'`);
}

/** The guest without its drive: what every benchmark's guest has. */
export type BootSpec = Omit<GuestSpec, 'image'>;

/** node flags that profile tsvmm's main thread into `dir` (bench/profile/main-thread.ts). */
export function profileNodeArgs(dir: string): string[] {
  const url = new URL('../profile/main-thread.js', import.meta.url);
  url.searchParams.set('dir', dir);
  return ['--import', url.href];
}

/**
 * node flags from TSVMM_BENCH_NODE_ARGS (space-separated), for looking into the tsvmm process a
 * benchmark starts, e.g. `--trace-deopt`; V8 flags like that one are refused in NODE_OPTIONS.
 */
export function benchNodeArgs(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env['TSVMM_BENCH_NODE_ARGS'] ?? '').split(' ').filter((a) => a !== '');
}

/** `tsvmm run` for `g` without devices; a benchmark appends its own (--disk, --net). */
export function tsvmmRunArgs(cli: string, g: BootSpec): string[] {
  return [...(g.nodeArgs ?? []), ...benchNodeArgs(), cli, 'run', '--kernel', g.kernel, '--initrd', g.initrd, '--cmdline', g.cmdline, '--cpus', String(g.vcpus), '--mem', `${g.memoryMib}M`];
}

export function tsvmmInvocation(node: string, cli: string, g: GuestSpec): Invocation {
  if (g.image.includes(',')) throw new Error(`the image path ${g.image} contains a comma, which --disk cannot take`);
  const env = tsvmmEnv(g);
  return { command: node, args: [...tsvmmRunArgs(cli, g), '--disk', `${g.image},id=bench,cache=unsafe`], ...(env !== undefined ? { env } : {}) };
}

/** QEMU q35 with KVM booting `g` straight from its kernel, console on stdio, no devices; a benchmark appends its own. */
export function qemuMachineArgs(g: BootSpec, cpuModel: string): string[] {
  return [
    '-M', 'q35',
    '-accel', 'kvm',
    '-cpu', cpuModel,
    '-smp', String(g.vcpus),
    '-m', String(g.memoryMib),
    '-nodefaults', '-no-user-config', '-nographic',
    '-serial', 'stdio',
    '-kernel', g.kernel,
    '-initrd', g.initrd,
    '-append', g.cmdline,
    // The guest powers off; a reset (reboot=k, a panic) must end the run, not loop.
    '-no-reboot',
  ];
}

export function qemuInvocation(qemu: string, g: GuestSpec, cpuModel: string): Invocation {
  // QEMU's -drive splits at commas (a literal comma is written twice).
  const file = g.image.replace(/,/g, ',,');
  return {
    command: qemu,
    args: [
      ...qemuMachineArgs(g, cpuModel),
      '-drive', `file=${file},format=raw,if=none,id=d0,cache=writeback,aio=threads`,
      '-device', `virtio-blk-pci,drive=d0,num-queues=${g.vcpus}`,
    ],
  };
}
