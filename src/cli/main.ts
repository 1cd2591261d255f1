/**
 * The `tsvmm` command line. Every failure prints one line (`tsvmm: …`, no stack trace) and exits
 * non-zero; `TSVMM_DEBUG=1` prints the stack as well.
 */
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import type { DriveOptions } from '../vmm/drive-options.js';
import type { VirtioTransportKind } from '../vmm/microvm.js';
import type { VmSpec } from '../vmm/vm-spec.js';
import { oneLine, UsageError } from '../util/errors.js';
// Heavy modules (the config parser, the VMM, the nested host) are imported lazily: under
// emulation every module costs start-up time (bench/results/boot-*.md).
import { MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS } from '../vmm/limits.js';
import { packageVersion } from '../util/version.js';

const USAGE = `tsvmm — a microVM monitor in TypeScript on Linux KVM

Usage:
  tsvmm start [--cpus N] [--mem SIZE] [--entropy] [--disk PATH[,ro]]... [--net TAP]... [--vsock UDS] [--virtio-transport pci|mmio] [-- COMMAND...]
        Boot the default microVM (Debian's cloud kernel, a busybox initramfs) and show its
        output. With a COMMAND, the guest runs it and tsvmm exits with its status.
  tsvmm run --kernel PATH [--initrd PATH] [--cmdline ARGS] [--cpus N] [--mem SIZE] [--entropy] [--disk PATH[,ro]]... [--net TAP]... [--vsock UDS] [-- COMMAND...]
        Boot any Linux kernel (bzImage, or ELF vmlinux through PVH).
  tsvmm --api-sock PATH [--config-file vm.json] [--id ID] [--boot-timer]
        Serve Firecracker's REST API on a Unix socket (PUT /boot-source, /machine-config, /drives,
        /entropy, /logger, /metrics, /actions InstanceStart…); exit when the microVM ends.
  tsvmm --config-file vm.json --no-api [--boot-timer]
        Boot from a Firecracker-style JSON configuration (boot-source, machine-config, drives,
        network-interfaces, vsock, entropy).
  tsvmm image build --from DIR --output FILE [--size SIZE]
        Build an ext4 root file-system image from a folder (e2fsprogs' mkfs.ext4 -d; no root or
        loop device needed). Boot it with --disk FILE,root (root=/dev/vda on the command line).
  tsvmm env
        Say what this machine's KVM can run and how tsvmm will use it.
  tsvmm --help | --version

Options:
  --cpus N          vCPUs, ${MIN_VCPUS} to ${MAX_VCPUS} (default 1)
  --mem SIZE        guest memory: 512M, 2G, or MiB as a plain number (default 256M; ${MIN_MEMORY_MIB}M to ${MAX_MEMORY_MIB / 1024}G)
  --boot-timer      report the time from VMM start to the guest's boot-timer write
  --entropy         give the guest an entropy device (virtio-rng, /dev/hwrng)
  --size SIZE       image build: the image size, e.g. 64M (default: content × 1.5 + 16M)
  --disk PATH[,ro][,root][,id=NAME][,cache=unsafe|writeback]
                    attach a raw disk image (virtio-blk); repeat for more: /dev/vda, /dev/vdb, …
                    (a root drive comes first); read-only with ro; id defaults to disk0, disk1, …
  --net TAP[,mac=MAC][,mtu=N][,id=NAME]
                    a network interface (virtio-net) on host TAP device TAP (created when missing
                    if run as root; tsvmm does not configure it); repeat for more: eth0, eth1, …
  --vsock UDS[,cid=N]
                    virtio-vsock, Firecracker's hybrid model: host programs connect to UDS and write
                    "CONNECT <port>\\n"; guest connections to port P reach UDS_P (default cid 3)
  --virtio-transport pci|mmio
                    how virtio devices reach the guest: PCI with MSI-X (default), or virtio-mmio
                    windows described in ACPI (as Firecracker's guests use)
  -h, --help        show this help
  -V, --version     print the version

Examples:
  npm start                                  the default microVM, from a checkout
  npx tsvmm start --cpus 2 -- cat /proc/cpuinfo
  npx tsvmm start --disk ./data.img --disk ./ref.img,ro -- cat /sys/block/vdb/ro
  npx tsvmm run --kernel ./vmlinux --initrd ./initrd.cpio --mem 1G
  npx tsvmm --config-file vm.json --no-api
  npx tsvmm --api-sock /tmp/tsvmm.sock &
  curl --unix-socket /tmp/tsvmm.sock -X PUT http://localhost/boot-source \\
       -d '{"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0 reboot=k panic=1"}'
  curl --unix-socket /tmp/tsvmm.sock -X PUT http://localhost/actions -d '{"action_type": "InstanceStart"}'

Console: the guest's serial port is on your terminal; Ctrl-A x quits.
Without hardware virtualization (VT-x/AMD-V), Linux guests run inside a nested QEMU-emulated
host; tsvmm says so when it does.

Environment:
  TSVMM_CACHE_DIR   where fetched kernels and built images are kept (default ~/.cache/tsvmm)
  TSVMM_DEBUG=1     print stack traces with errors
`;

/** What `tsvmm run` passes when no --cmdline is given. */
const DEFAULT_RUN_CMDLINE = 'console=ttyS0 reboot=k panic=1 quiet';

type Command = (args: string[]) => Promise<number>;


const VM_OPTIONS = {
  cpus: { type: 'string' },
  mem: { type: 'string' },
  'boot-timer': { type: 'boolean' },
  entropy: { type: 'boolean' },
  disk: { type: 'string', multiple: true },
  net: { type: 'string', multiple: true },
  vsock: { type: 'string' },
  'virtio-transport': { type: 'string' },
} as const;

function parse<const O extends Parameters<typeof parseArgs>[0] extends infer C ? C extends { options?: infer P } ? P : never : never>(
  command: string,
  args: string[],
  options: O,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (e) {
    const msg = oneLine(e)
      .replace(/^Unknown option '([^']+)'.*$/, "unknown option '$1'")
      .replace(/^Unexpected argument '([^']+)'.*$/, "unexpected argument '$1'")
      .replace(/\. To specify a positional.*$/, '');
    throw new UsageError(`${command}: ${msg}; see 'tsvmm --help'`);
  }
}

/** "512M", "2G", "1024" (MiB), "256MiB" → MiB. */
export function parseSizeMib(text: string, what: string): number {
  const m = /^(\d+)\s*(k|ki|kib|m|mi|mib|g|gi|gib)?b?$/i.exec(text.trim());
  if (!m) throw new UsageError(`${what}: '${text}' is not a size; use e.g. 512M or 2G`);
  const n = Number(m[1]);
  const unit = (m[2] ?? 'm').toLowerCase()[0];
  const mib = unit === 'g' ? n * 1024 : unit === 'k' ? n / 1024 : n;
  if (!Number.isInteger(mib)) throw new UsageError(`${what}: ${text} is not a whole number of MiB`);
  return mib;
}

function parseCount(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text)) throw new UsageError(`${what}: '${text}' is not a whole number`);
  return Number(text);
}

function vmShape(values: { cpus?: string | undefined; mem?: string | undefined }): { vcpus: number; memoryMib: number } {
  const vcpus = parseCount(values.cpus, '--cpus', 1);
  const memoryMib = values.mem === undefined ? 256 : parseSizeMib(values.mem, '--mem');
  if (vcpus < MIN_VCPUS || vcpus > MAX_VCPUS) throw new UsageError(`--cpus: must be from ${MIN_VCPUS} to ${MAX_VCPUS}, got ${vcpus}`);
  if (memoryMib < MIN_MEMORY_MIB || memoryMib > MAX_MEMORY_MIB) {
    throw new UsageError(`--mem: must be from ${MIN_MEMORY_MIB}M to ${MAX_MEMORY_MIB / 1024}G, got ${memoryMib}M`);
  }
  return { vcpus, memoryMib };
}

/** --virtio-transport pci|mmio, as an option object (empty when not given). */
function virtioTransport(text: string | undefined): { virtioTransport?: VirtioTransportKind } {
  if (text === undefined) return {};
  if (text !== 'pci' && text !== 'mmio') throw new UsageError(`--virtio-transport: '${text}' is not a transport; use pci or mmio`);
  return { virtioTransport: text };
}

/** Split `args` at the first `--`: options before, the guest command after. */
function splitCommand(args: string[]): { options: string[]; command: string | undefined } {
  const i = args.indexOf('--');
  if (i < 0) return { options: args, command: undefined };
  const words = args.slice(i + 1);
  return { options: args.slice(0, i), command: words.length > 0 ? words.join(' ') : undefined };
}

const commands: Record<string, Command> = {
  async env(args) {
    parse('env', args, {});
    const { detectVirtualization } = await import('../host/environment.js');
    process.stdout.write(`${detectVirtualization().summary}\n`);
    return 0;
  },
  async start(args) {
    const { options, command } = splitCommand(args);
    const { values } = parse('start', options, VM_OPTIONS);
    const { startDefaultVm } = await import('./start.js');
    const drives = await disks(values.disk);
    return startDefaultVm({
      ...vmShape(values),
      ...(values.entropy ? { entropy: {} } : {}),
      ...(drives.length > 0 ? { drives } : {}),
      ...(await netDevices(values.net, values.vsock)),
      ...virtioTransport(values['virtio-transport']),
      ...(command !== undefined ? { command } : {}),
    });
  },
  async run(args) {
    const { options, command } = splitCommand(args);
    const { values } = parse('run', options, { ...VM_OPTIONS, kernel: { type: 'string' }, initrd: { type: 'string' }, cmdline: { type: 'string' } });
    if (values.kernel === undefined) throw new UsageError("run: --kernel PATH is required; see 'tsvmm --help'");
    const { commandCmdlineArg } = await import('../image/guest-protocol.js');
    let cmdline = values.cmdline ?? DEFAULT_RUN_CMDLINE;
    if (command !== undefined) cmdline = `${cmdline} ${commandCmdlineArg(command)}`;
    const drives = await disks(values.disk);
    const { runVmFromCli } = await import('./run-vm.js');
    return runVmFromCli({
      kernel: values.kernel,
      ...(values.initrd !== undefined ? { initrd: values.initrd } : {}),
      cmdline,
      ...vmShape(values),
      ...(values.entropy ? { entropy: {} } : {}),
      ...(drives.length > 0 ? { drives } : {}),
      ...(await netDevices(values.net, values.vsock)),
      ...virtioTransport(values['virtio-transport']),
      bootTimer: values['boot-timer'] ?? false,
    });
  },
  async image(args) {
    const [sub, ...rest] = args;
    if (sub !== 'build') throw new UsageError(`image: ${sub === undefined ? 'a subcommand is needed' : `unknown subcommand '${sub}'`}; use 'tsvmm image build --from DIR --output FILE'`);
    const { values } = parse('image build', rest, { from: { type: 'string' }, output: { type: 'string' }, size: { type: 'string' } });
    if (values.from === undefined || values.output === undefined) throw new UsageError("image build: --from DIR and --output FILE are required; see 'tsvmm --help'");
    const sizeMiB = values.size === undefined ? undefined : parseSizeMib(values.size, '--size');
    const { buildExt4Image } = await import('../image/rootfs.js');
    const image = buildExt4Image({ sourceDir: values.from, output: values.output, ...(sizeMiB !== undefined ? { sizeMiB } : {}) });
    process.stdout.write(`${image.path} (ext4, ${image.sizeMiB} MiB)\n`);
    return 0;
  },
};

/** The --net and --vsock flags as spec fields (absent when not given). */
async function netDevices(net: string[] | undefined, vsock: string | undefined): Promise<Pick<VmSpec, 'networkInterfaces' | 'vsock'>> {
  if ((net === undefined || net.length === 0) && vsock === undefined) return {};
  const { parseNetFlag, parseVsockFlag } = await import('./net-flags.js');
  const interfaces = (net ?? []).map((text, i) => parseNetFlag(text, i));
  const ids = new Set<string>();
  for (const n of interfaces) {
    if (ids.has(n.id)) throw new UsageError(`--net: the interface id '${n.id}' is used twice; give each its own id=NAME`);
    ids.add(n.id);
  }
  return { ...(interfaces.length > 0 ? { networkInterfaces: interfaces } : {}), ...(vsock !== undefined ? { vsock: parseVsockFlag(vsock) } : {}) };
}

/** The --disk flags as drives, in order. */
async function disks(flags: string[] | undefined): Promise<DriveOptions[]> {
  if (flags === undefined || flags.length === 0) return [];
  const { parseDiskFlag } = await import('./disk-flag.js');
  return flags.map((text, i) => parseDiskFlag(text, i));
}

/**
 * Firecracker's way in: `--api-sock PATH` serves the REST API (booting at once when a config file
 * is given too); `--config-file F --no-api` boots from the file alone.
 */
async function runFirecrackerStyle(args: string[]): Promise<number> {
  const { values } = parse('tsvmm', args, {
    'config-file': { type: 'string' },
    'no-api': { type: 'boolean' },
    'boot-timer': { type: 'boolean' },
    'api-sock': { type: 'string' },
    id: { type: 'string' },
  });
  const file = values['config-file'];
  const apiSock = values['api-sock'];
  if (values['no-api'] && apiSock !== undefined) throw new UsageError("--no-api and --api-sock contradict each other; use one; see 'tsvmm --help'");
  if (!values['no-api']) {
    if (apiSock === undefined) throw new UsageError("give --api-sock PATH to serve the API, or --config-file FILE --no-api to boot without it; see 'tsvmm --help'");
    const { runApiServer } = await import('./api-mode.js');
    return runApiServer({
      apiSock: resolve(apiSock),
      ...(file !== undefined ? { configFile: file } : {}),
      ...(values.id !== undefined ? { id: values.id } : {}),
      bootTimer: values['boot-timer'] ?? false,
    });
  }
  if (file === undefined) throw new UsageError("--no-api needs --config-file FILE; see 'tsvmm --help'");
  const { runApiServer } = await import('./api-mode.js');
  return runApiServer({ configFile: file, ...(values.id !== undefined ? { id: values.id } : {}), bootTimer: values['boot-timer'] ?? false });
}

export async function main(argv: string[]): Promise<number> {
  try {
    const first = argv[0];
    if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
      process.stdout.write(USAGE);
      return first === undefined ? 2 : 0;
    }
    if (first === '-V' || first === '--version') {
      process.stdout.write(`tsvmm ${packageVersion()}\n`);
      return 0;
    }
    if (first === '__vm-agent') {
      const { runVmAgent } = await import('./vm-agent.js');
      const status = await runVmAgent(argv[1] ?? '');
      // The agent's read on its control port blocks a libuv pool thread that process.exit() would
      // wait to join forever. Writes to stdout (a pipe or a terminal) are synchronous on Linux, so
      // nothing is lost by ending the process at once.
      const { exitImmediately } = await import('../kvm/libc.js');
      exitImmediately(status);
    }
    if (argv.some((a) => /^--(config-file|api-sock|no-api)(=|$)/.test(a))) return await runFirecrackerStyle(argv);
    const cmd = Object.hasOwn(commands, first) ? commands[first] : undefined;
    if (cmd === undefined) {
      if (first.startsWith('-')) throw new UsageError(`unknown option '${first}'; see 'tsvmm --help'`);
      throw new UsageError(`unknown command '${first}'; see 'tsvmm --help'`);
    }
    return await cmd(argv.slice(1));
  } catch (e) {
    process.stderr.write(`tsvmm: ${oneLine(e)}\n`);
    if (process.env['TSVMM_DEBUG'] && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}

// Run when executed directly (`node dist/src/cli/main.js …`, as `npm start` does).
if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  process.exitCode = await main(process.argv.slice(2));
}
