/**
 * What kind of KVM this machine offers, and what that means for the guests tsvmm can run.
 *
 * Four situations matter in practice:
 *  - hardware KVM (VT-x / AMD-V, kvm_intel or kvm_amd behind /dev/kvm): everything runs directly;
 *  - PVM (/dev/kvm backed by kvm_pvm, no VT-x/AMD-V): tiny hand-written guests run, but a stock
 *    Linux kernel dies in KVM's instruction emulator, so real guests go through the nested host;
 *  - kvm_pvm loaded but no /dev/kvm (a machine that is itself a PVM guest: the module refuses to
 *    bind), and
 *  - no KVM at all.
 * In the last two, everything that needs KVM runs inside the nested QEMU-emulated host.
 *
 * All probing goes through a `HostProbe` so tests can describe each machine without having it.
 */
import { closeSync, constants, existsSync, openSync, readFileSync } from 'node:fs';

export type VirtualizationKind = 'hardware' | 'pvm' | 'none';

/** The CPU extension that hardware-assisted KVM needs, as /proc/cpuinfo names it. */
export type HardwareExtension = 'vmx' | 'svm';

/** The outcome of trying to open /dev/kvm read-write. */
export interface KvmDeviceProbe {
  readonly exists: boolean;
  readonly openable: boolean;
  /** errno code of a failed open, e.g. `EACCES`. */
  readonly errorCode?: string;
  /** KVM_GET_API_VERSION when the probe could ask (the stable API is 12). */
  readonly apiVersion?: number;
}

/** How detection reads the machine; replaceable for tests. */
export interface HostProbe {
  /** Contents of /proc/cpuinfo ('' when unreadable). */
  readCpuInfo(): string;
  /** Whether /sys/module/<name> exists (loaded module or built-in with parameters). */
  hasModule(name: string): boolean;
  /** Try to open /dev/kvm read-write. */
  probeKvmDevice(): KvmDeviceProbe;
}

export interface VirtualizationDetails {
  readonly hardwareExtension: HardwareExtension | undefined;
  /** The CPU says it runs under a hypervisor (`hypervisor` flag). */
  readonly underHypervisor: boolean;
  readonly kvmPvmModule: boolean;
  /** kvm_intel or kvm_amd is present. */
  readonly hardwareKvmModule: 'kvm_intel' | 'kvm_amd' | undefined;
  readonly kvmDevice: KvmDeviceProbe;
}

export interface VirtualizationEnvironment {
  readonly kind: VirtualizationKind;
  /** /dev/kvm exists and opens read-write (and, if asked, reports API version 12). */
  readonly kvmDevice: boolean;
  /** Stock Linux guests can boot on this machine's own /dev/kvm. */
  readonly canRunStockLinux: boolean;
  /** Tiny hand-written guests (KVM plumbing tests) can run on this machine's /dev/kvm. */
  readonly canRunTinyGuests: boolean;
  /** Real Linux guests must run inside the nested QEMU-emulated host. */
  readonly needsNestedHost: boolean;
  readonly details: VirtualizationDetails;
  /** One sentence for the user: what this machine offers and what tsvmm does about it. */
  readonly summary: string;
}

const KVM_API_VERSION = 12;

/** The real machine: /proc/cpuinfo, /sys/module and an O_RDWR open of /dev/kvm. */
export function systemProbe(kvmPath = '/dev/kvm', apiVersion?: (fd: number) => number): HostProbe {
  return {
    readCpuInfo: () => {
      try {
        return readFileSync('/proc/cpuinfo', 'utf8');
      } catch {
        return '';
      }
    },
    hasModule: (name) => existsSync(`/sys/module/${name}`),
    probeKvmDevice: () => {
      if (!existsSync(kvmPath)) return { exists: false, openable: false, errorCode: 'ENOENT' };
      let fd: number;
      try {
        fd = openSync(kvmPath, constants.O_RDWR);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
        return { exists: true, openable: false, errorCode: code };
      }
      try {
        return apiVersion === undefined ? { exists: true, openable: true } : { exists: true, openable: true, apiVersion: apiVersion(fd) };
      } finally {
        closeSync(fd);
      }
    },
  };
}

/** The CPU flags of the first processor in /proc/cpuinfo. */
function cpuFlags(cpuinfo: string): Set<string> {
  const line = cpuinfo.split('\n').find((l) => /^flags\s*:/.test(l));
  return new Set(line === undefined ? [] : line.slice(line.indexOf(':') + 1).trim().split(/\s+/));
}

const extensionName = (ext: HardwareExtension | undefined): string => (ext === 'vmx' ? 'VT-x' : ext === 'svm' ? 'AMD-V' : 'VT-x/AMD-V');

const nested = (what: string): string => `tsvmm runs ${what} inside a nested QEMU-emulated host (slower, but real guests still boot)`;

function summarize(kind: VirtualizationKind, d: VirtualizationDetails): string {
  const dev = d.kvmDevice;
  if (kind === 'hardware') {
    return `This machine has hardware virtualization (${extensionName(d.hardwareExtension)}) and a usable /dev/kvm: tsvmm runs every guest directly.`;
  }
  if (kind === 'pvm') {
    return `This machine's /dev/kvm is PVM (no VT-x/AMD-V): tiny guests run directly, but stock Linux guests need hardware virtualization, so ${nested('them')}.`;
  }
  if (dev.exists && !dev.openable) {
    const fix =
      dev.errorCode === 'EACCES' || dev.errorCode === 'EPERM'
        ? 'add your user to the kvm group (`sudo usermod -aG kvm $USER`, then log in again) or run as root'
        : `check the device (open failed with ${dev.errorCode ?? 'an error'})`;
    return `/dev/kvm exists but cannot be opened read-write: ${fix}; until then ${nested('guests')}.`;
  }
  if (dev.openable && dev.apiVersion !== undefined && dev.apiVersion !== KVM_API_VERSION) {
    return `/dev/kvm reports KVM API version ${dev.apiVersion}, not ${KVM_API_VERSION}: this kernel's KVM is unsupported, so ${nested('guests')}.`;
  }
  if (d.hardwareExtension !== undefined) {
    const mod = d.hardwareExtension === 'vmx' ? 'kvm_intel' : 'kvm_amd';
    return `The CPU has ${extensionName(d.hardwareExtension)} but there is no /dev/kvm: load KVM with \`sudo modprobe ${mod}\` to run guests directly; until then ${nested('guests')}.`;
  }
  if (d.kvmPvmModule) {
    return `No /dev/kvm here (kvm_pvm is loaded but offers no device, as on a machine that is itself a PVM guest) and the CPU has no VT-x/AMD-V, so tsvmm runs everything that needs KVM inside a nested QEMU-emulated host.`;
  }
  return `No KVM on this machine (no /dev/kvm, no VT-x/AMD-V), so tsvmm runs everything that needs KVM inside a nested QEMU-emulated host.`;
}

/**
 * Detect what this machine offers. `probe` defaults to the real machine; pass a fake to test,
 * or `systemProbe('/dev/kvm', fd => ioctl(fd, KVM_GET_API_VERSION))` to also check the API version.
 */
export function detectVirtualization(probe: HostProbe = systemProbe()): VirtualizationEnvironment {
  const flags = cpuFlags(probe.readCpuInfo());
  const hardwareExtension: HardwareExtension | undefined = flags.has('vmx') ? 'vmx' : flags.has('svm') ? 'svm' : undefined;
  const hardwareKvmModule = probe.hasModule('kvm_intel') ? 'kvm_intel' : probe.hasModule('kvm_amd') ? 'kvm_amd' : undefined;
  const kvmPvmModule = probe.hasModule('kvm_pvm');
  const device = probe.probeKvmDevice();
  const details: VirtualizationDetails = {
    hardwareExtension,
    underHypervisor: flags.has('hypervisor'),
    kvmPvmModule,
    hardwareKvmModule,
    kvmDevice: device,
  };
  const usable = device.openable && (device.apiVersion === undefined || device.apiVersion === KVM_API_VERSION);
  // Which backend serves /dev/kvm: a vendor module wins (it needs the CPU extension); kvm_pvm
  // alone means PVM; a device with neither visible is taken as hardware when the CPU has the
  // extension (KVM built in) and as PVM otherwise, since nothing else can back it.
  let kind: VirtualizationKind = 'none';
  if (usable) {
    if (hardwareKvmModule !== undefined) kind = 'hardware';
    else if (kvmPvmModule) kind = 'pvm';
    else kind = hardwareExtension !== undefined ? 'hardware' : 'pvm';
  }
  return {
    kind,
    kvmDevice: usable,
    canRunStockLinux: kind === 'hardware',
    canRunTinyGuests: usable,
    needsNestedHost: kind !== 'hardware',
    details,
    summary: summarize(kind, details),
  };
}
