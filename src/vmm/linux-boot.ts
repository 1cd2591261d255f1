/**
 * Put a Linux kernel, its initrd, command line, ACPI tables and boot structures into guest
 * memory and set every vCPU up to enter it. Two entries, chosen by the image:
 *
 * - bzImage → Linux 64-bit boot protocol (Documentation/arch/x86/boot.rst): long mode, paging
 *   over an identity map, RSI = zero page, CS = __BOOT_CS (0x10), DS/ES/SS = __BOOT_DS (0x18).
 * - ELF vmlinux with the Xen PVH note → PVH: 32-bit protected mode, paging off, EBX =
 *   hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). An ELF without the note is
 *   entered through the 64-bit protocol with a made-up setup header, as Firecracker does.
 *
 * The bootstrap processor (vCPU 0) starts at the entry; the others wait in KVM's
 * "uninitialized" state for the INIT-SIPI-SIPI the kernel sends through the in-kernel LAPIC.
 */
import { closeSync, openSync, readFileSync, statSync } from 'node:fs';
import { buildAcpiTables, type AcpiConfig } from '../arch/x86_64/acpi/index.js';
import { writeBootParams } from '../arch/x86_64/boot-params.js';
import { configureCpuid, cpuinfoModelName, type CpuidOptions } from '../arch/x86_64/cpuid.js';
import { buildE820Map } from '../arch/x86_64/e820.js';
import { BOOT_CS, BOOT_DS, BOOT_TSS, bootGdt, gdtBytes, segmentFromEntry } from '../arch/x86_64/gdt.js';
import {
  BOOT_GDT_START,
  BOOT_IDT_START,
  BOOT_STACK_POINTER,
  guestRamRegions,
  PML4_START,
  ZERO_PAGE_START,
} from '../arch/x86_64/layout.js';
import { bootMsrs } from '../arch/x86_64/msrs.js';
import { writePvhStartInfo } from '../arch/x86_64/pvh.js';
import { CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME } from '../kvm/constants.js';
import { emptyRegs } from '../kvm/structs.js';
import type { Vcpu } from '../kvm/vcpu.js';
import { bzImagePlacement, loadBzImage, parseBzImage, type BzImage } from '../loader/bzimage.js';
import { encodeCmdline, writeCmdline } from '../loader/cmdline.js';
import { elfKernelRange, loadElfKernel, parseElfKernel, ELF_MAGIC, type ElfKernel } from '../loader/elf.js';
import { KernelImageError } from '../loader/errors.js';
import type { GuestRange } from '../loader/guest-memory.js';
import { loadInitrd, placeInitrd } from '../loader/initrd.js';
import { TsvmmError } from '../util/errors.js';
import { identityMapPageTables } from './cpu-modes.js';
import type { Machine } from './machine.js';

export class LinuxBootError extends TsvmmError {}

/** CR0.ET: hard-wired to 1 since the 486 (Intel SDM vol. 3A 2.5). */
const CR0_ET = 1 << 4;
/** RFLAGS bit 1 is reserved and always 1 (Intel SDM vol. 1 3.4.3). */
const RFLAGS_RESERVED = 0x2n;
/** x87 control word and MXCSR after FNINIT / reset (Intel SDM vol. 1 8.1.5, 10.2.3.1). */
const FPU_FCW_DEFAULT = 0x37f;
const MXCSR_DEFAULT = 0x1f80;
/** Local APIC LVT LINT0/LINT1 registers and delivery modes (Intel SDM vol. 3A 10.5.1). */
const APIC_LVT_LINT0 = 0x350;
const APIC_LVT_LINT1 = 0x360;
const APIC_MODE_EXTINT = 0x7;
const APIC_MODE_NMI = 0x4;
/** GiB of memory the boot page tables identity-map: all of the 32-bit space, so a high initrd is covered. */
const IDENTITY_MAP_GIB = 4;

export interface LinuxBootOptions {
  /** Path to a bzImage or an ELF vmlinux. */
  kernelPath: string;
  initrdPath?: string;
  cmdline: string;
  /** Legacy devices and buses to describe in ACPI (the vCPU count is taken from the machine). */
  acpi?: Omit<AcpiConfig, 'vcpuCount'>;
  /** KVM paravirtual features to offer (CPUID 0x40000001); undefined offers all KVM has. */
  pvFeatures?: number;
}

export interface LinuxBootInfo {
  entry: 'linux64' | 'pvh';
  entryPoint: number;
  kernelRange: GuestRange;
  initrd?: { gpa: number; size: number };
  rsdpAddress: number;
  /** The kernel's version string from the bzImage header, when it has one. */
  kernelVersion?: string;
}

/** A kernel or initrd file: present, a regular file, readable. Returns its size; one-line errors otherwise. */
function checkImageFile(path: string, what: string): number {
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw new LinuxBootError(`${what} ${path} is a directory, expected a file`);
    closeSync(openSync(path, 'r'));
    return st.size;
  } catch (e) {
    if (e instanceof LinuxBootError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new LinuxBootError(`${what} ${path} ${code === 'ENOENT' ? 'does not exist' : `cannot be read: ${(e as Error).message}`}`);
  }
}

function readImage(path: string, what: string): Uint8Array {
  checkImageFile(path, what);
  try {
    return readFileSync(path);
  } catch (e) {
    throw new LinuxBootError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/** A kernel image, parsed: a bzImage or an ELF vmlinux. */
export type KernelImage = { kind: 'bzimage'; image: BzImage } | { kind: 'elf'; image: ElfKernel };

/** Read and parse a kernel, with one-line errors for a missing file or one that is not a kernel. */
export function inspectKernel(path: string): KernelImage {
  const bytes = readImage(path, 'kernel');
  const isElf = bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === ELF_MAGIC;
  if (isElf) return { kind: 'elf', image: parseElfKernel(bytes, path) };
  try {
    return { kind: 'bzimage', image: parseBzImage(bytes, path) };
  } catch (e) {
    if (e instanceof KernelImageError) throw new LinuxBootError(`${e.message.replace(/^not a Linux kernel: /, '')}: ${path} is neither a bzImage nor an ELF vmlinux`);
    throw e;
  }
}

/**
 * Everything about a boot that can be checked without KVM: the kernel parses, the initrd exists
 * and fits in guest memory next to the kernel. The CLI runs this before starting a nested host,
 * so bad input fails in a second instead of after a nested boot.
 */
export function preflightLinuxBoot(opts: { kernelPath: string; initrdPath?: string; cmdline: string; memoryMib: number }): void {
  const kernel = inspectKernel(opts.kernelPath);
  encodeCmdline(opts.cmdline, kernel.kind === 'bzimage' ? kernel.image.header.cmdlineSize : undefined);
  const ram = guestRamRegions(opts.memoryMib * 1024 * 1024);
  const kernelRange = kernel.kind === 'elf' ? elfKernelRange(kernel.image) : bzImagePlacement(kernel.image).reserved;
  if (opts.initrdPath !== undefined) {
    const size = checkImageFile(opts.initrdPath, 'initrd');
    const addrMax = kernel.kind === 'bzimage' ? kernel.image.header.initrdAddrMax : undefined;
    placeInitrd(addrMax === undefined ? { size, ram, kernel: kernelRange } : { size, ram, kernel: kernelRange, addrMax });
  }
}

/** Load everything and set every vCPU's registers. The machine must not be started yet. */
export function loadLinux(machine: Machine, opts: LinuxBootOptions): LinuxBootInfo {
  const mem = machine.memory;
  const ramBytes = mem.regions.reduce((n, r) => n + r.size, 0);
  const ram = guestRamRegions(ramBytes);
  const kernel = inspectKernel(opts.kernelPath);

  let entry: LinuxBootInfo['entry'];
  let entryPoint: number;
  let kernelRange: GuestRange;
  let setupHeader: Uint8Array | undefined;
  let initrdAddrMax: number | undefined;
  let cmdlineMax: number | undefined;
  let kernelVersion: string | undefined;
  if (kernel.kind === 'elf') {
    const loaded = loadElfKernel(kernel.image, mem, ram);
    kernelRange = loaded.reserved;
    if (loaded.pvhEntry !== undefined) {
      entry = 'pvh';
      entryPoint = loaded.pvhEntry;
    } else {
      entry = 'linux64';
      entryPoint = loaded.entry64;
    }
  } else {
    const bz = kernel.image;
    const loaded = loadBzImage(bz, mem, ram);
    entry = 'linux64';
    entryPoint = loaded.entry64;
    kernelRange = loaded.reserved;
    setupHeader = bz.setupHeaderBytes;
    initrdAddrMax = bz.header.initrdAddrMax;
    cmdlineMax = bz.header.cmdlineSize;
    kernelVersion = bz.header.kernelVersion;
  }

  let initrd: { gpa: number; size: number } | undefined;
  if (opts.initrdPath !== undefined) {
    const bytes = readImage(opts.initrdPath, 'initrd');
    initrd = loadInitrd(mem, bytes, initrdAddrMax === undefined ? { ram, kernel: kernelRange } : { ram, kernel: kernelRange, addrMax: initrdAddrMax });
  }
  const cmdline = writeCmdline(mem, opts.cmdline, cmdlineMax);

  const acpi = buildAcpiTables({ ...opts.acpi, vcpuCount: machine.vcpus.length });
  for (const t of acpi.tables) mem.write(t.gpa, t.bytes);
  const e820 = buildE820Map(ram);

  let startInfo = 0;
  if (entry === 'pvh') {
    startInfo = writePvhStartInfo(mem, { cmdline, memoryMap: e820, rsdpAddr: acpi.rsdpAddress, ...(initrd ? { modules: [initrd] } : {}) });
  } else {
    writeBootParams(mem, { ...(setupHeader ? { setupHeader } : {}), cmdline, e820, rsdpAddr: acpi.rsdpAddress, ...(initrd ? { initrd } : {}) });
  }

  // GDT, an empty IDT (the kernel installs its own before enabling interrupts), page tables.
  const gdt = bootGdt(entry === 'pvh' ? 'protected32' : 'long');
  mem.write(BOOT_GDT_START, gdtBytes(gdt));
  mem.writeU64(BOOT_IDT_START, 0n);
  if (entry === 'linux64') identityMapPageTables(mem, PML4_START, IDENTITY_MAP_GIB);

  const supported = machine.kvm.getSupportedCpuid();
  const brandString = hostCpuBrand();
  for (const vcpu of machine.vcpus) {
    const cpuidOpts: CpuidOptions = { vcpuId: vcpu.id, vcpuCount: machine.vcpus.length, tscKhz: 0, ...(brandString !== undefined ? { brandString } : {}) };
    if (opts.pvFeatures !== undefined) cpuidOpts.pvFeatures = opts.pvFeatures;
    vcpu.setCpuid2(configureCpuid(supported, cpuidOpts));
    vcpu.setMsrs(bootMsrs());
    const fpu = vcpu.getFpu();
    fpu.fcw = FPU_FCW_DEFAULT;
    fpu.mxcsr = MXCSR_DEFAULT;
    vcpu.setFpu(fpu);
    setLocalInterruptPins(vcpu);
  }
  const bsp = machine.vcpu(0);
  if (entry === 'pvh') enterPvh(bsp, gdt, entryPoint, startInfo);
  else enterLinux64(bsp, gdt, entryPoint);

  return {
    entry,
    entryPoint,
    kernelRange,
    rsdpAddress: acpi.rsdpAddress,
    ...(initrd ? { initrd } : {}),
    ...(kernelVersion ? { kernelVersion } : {}),
  };
}

/** LINT0 delivers the 8259's ExtINT, LINT1 NMIs, as firmware leaves them (MP spec 3.6.2.2 virtual wire mode). */
function setLocalInterruptPins(vcpu: Vcpu): void {
  const page = vcpu.getLapic();
  const view = new DataView(page.buffer, page.byteOffset, page.byteLength);
  const setMode = (reg: number, mode: number): void => {
    const v = view.getUint32(reg, true);
    view.setUint32(reg, ((v & ~0x700) | (mode << 8)) >>> 0, true);
  };
  setMode(APIC_LVT_LINT0, APIC_MODE_EXTINT);
  setMode(APIC_LVT_LINT1, APIC_MODE_NMI);
  vcpu.setLapic(page);
}

function loadSegments(vcpu: Vcpu, gdt: readonly bigint[], mode: 'long' | 'protected32'): void {
  const s = vcpu.getSregs();
  const code = segmentFromEntry(gdt[BOOT_CS >> 3]!, BOOT_CS);
  const data = segmentFromEntry(gdt[BOOT_DS >> 3]!, BOOT_DS);
  s.cs = code;
  s.ds = data;
  s.es = data;
  s.fs = data;
  s.gs = data;
  s.ss = data;
  s.tr = segmentFromEntry(gdt[BOOT_TSS >> 3]!, BOOT_TSS);
  s.gdt = { base: BigInt(BOOT_GDT_START), limit: gdt.length * 8 - 1 };
  s.idt = { base: BigInt(BOOT_IDT_START), limit: 7 };
  if (mode === 'long') {
    s.cr0 = BigInt(CR0_PE | CR0_ET) | BigInt(CR0_PG >>> 0);
    s.cr3 = BigInt(PML4_START);
    s.cr4 = BigInt(CR4_PAE);
    s.efer = BigInt(EFER_LME | EFER_LMA);
  } else {
    s.cr0 = BigInt(CR0_PE | CR0_ET);
    s.cr3 = 0n;
    s.cr4 = 0n;
    s.efer = 0n;
  }
  vcpu.setSregs(s);
}

function enterLinux64(vcpu: Vcpu, gdt: readonly bigint[], entry: number): void {
  loadSegments(vcpu, gdt, 'long');
  vcpu.setRegs({
    ...emptyRegs(),
    rflags: RFLAGS_RESERVED,
    rip: BigInt(entry),
    rsp: BigInt(BOOT_STACK_POINTER),
    rbp: BigInt(BOOT_STACK_POINTER),
    // boot.rst: "%rsi must hold the base address of the struct boot_params".
    rsi: BigInt(ZERO_PAGE_START),
  });
}

function enterPvh(vcpu: Vcpu, gdt: readonly bigint[], entry: number, startInfo: number): void {
  loadSegments(vcpu, gdt, 'protected32');
  vcpu.setRegs({ ...emptyRegs(), rflags: RFLAGS_RESERVED, rip: BigInt(entry), rbx: BigInt(startInfo) });
}

/** The host CPU's brand string for the guest's (as QEMU's `-cpu host`), from /proc/cpuinfo; undefined where it cannot be read. */
function hostCpuBrand(): string | undefined {
  try {
    return cpuinfoModelName(readFileSync('/proc/cpuinfo', 'latin1'));
  } catch {
    return undefined;
  }
}
