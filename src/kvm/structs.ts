/**
 * Byte layouts of the KVM structs we pass through ioctl, as explicit offset tables (x86_64,
 * little-endian; offsets checked with offsetof() against linux/kvm.h and asm/kvm.h). Encoders
 * write into a Buffer the caller may reuse; decoders return plain objects. 64-bit fields are
 * bigints because kernel virtual addresses (rip, segment bases) exceed Number.MAX_SAFE_INTEGER.
 */

// ---------------------------------------------------------------- kvm_regs (asm/kvm.h), 144 bytes
export const REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'rflags',
] as const;
export type RegName = (typeof REG_NAMES)[number];
/** General-purpose registers, rip and rflags (struct kvm_regs: 18 consecutive __u64 in this order). */
export type Regs = Record<RegName, bigint>;
export const KVM_REGS_SIZE = 144;

export function decodeRegs(buf: Uint8Array): Regs {
  const dv = dataView(buf);
  const regs = {} as Regs;
  REG_NAMES.forEach((name, i) => {
    regs[name] = dv.getBigUint64(i * 8, true);
  });
  return regs;
}

export function encodeRegs(regs: Regs, buf: Uint8Array = Buffer.alloc(KVM_REGS_SIZE)): Uint8Array {
  const dv = dataView(buf);
  REG_NAMES.forEach((name, i) => dv.setBigUint64(i * 8, BigInt.asUintN(64, regs[name]), true));
  return buf;
}

/** All-zero registers with rflags bit 1 set (it is reserved and reads as 1, Intel SDM vol. 1 3.4.3). */
export function emptyRegs(): Regs {
  const regs = {} as Regs;
  for (const name of REG_NAMES) regs[name] = 0n;
  regs.rflags = 2n;
  return regs;
}

// ------------------------------------------------------------ kvm_segment (asm/kvm.h), 24 bytes
/** struct kvm_segment: a segment register with its hidden descriptor cache. */
export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}
const SEG = { base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22 } as const;
const SEGMENT_SIZE = 24;

function decodeSegment(dv: DataView, at: number): Segment {
  return {
    base: dv.getBigUint64(at + SEG.base, true),
    limit: dv.getUint32(at + SEG.limit, true),
    selector: dv.getUint16(at + SEG.selector, true),
    type: dv.getUint8(at + SEG.type),
    present: dv.getUint8(at + SEG.present),
    dpl: dv.getUint8(at + SEG.dpl),
    db: dv.getUint8(at + SEG.db),
    s: dv.getUint8(at + SEG.s),
    l: dv.getUint8(at + SEG.l),
    g: dv.getUint8(at + SEG.g),
    avl: dv.getUint8(at + SEG.avl),
    unusable: dv.getUint8(at + SEG.unusable),
  };
}

function encodeSegment(dv: DataView, at: number, s: Segment): void {
  dv.setBigUint64(at + SEG.base, BigInt.asUintN(64, s.base), true);
  dv.setUint32(at + SEG.limit, s.limit >>> 0, true);
  dv.setUint16(at + SEG.selector, s.selector, true);
  dv.setUint8(at + SEG.type, s.type);
  dv.setUint8(at + SEG.present, s.present);
  dv.setUint8(at + SEG.dpl, s.dpl);
  dv.setUint8(at + SEG.db, s.db);
  dv.setUint8(at + SEG.s, s.s);
  dv.setUint8(at + SEG.l, s.l);
  dv.setUint8(at + SEG.g, s.g);
  dv.setUint8(at + SEG.avl, s.avl);
  dv.setUint8(at + SEG.unusable, s.unusable);
  dv.setUint8(at + 23, 0);
}

// ------------------------------------------------------------- kvm_sregs (asm/kvm.h), 312 bytes
/** struct kvm_dtable: GDTR/IDTR. */
export interface DTable {
  base: bigint;
  limit: number;
}
export const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
export type SegmentName = (typeof SEGMENT_NAMES)[number];
/** struct kvm_sregs: segment, descriptor-table and control registers. */
export interface Sregs extends Record<SegmentName, Segment> {
  gdt: DTable;
  idt: DTable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apicBase: bigint;
  /** Pending external interrupt bitmap (256 bits as 4 x u64); write zeros unless injecting. */
  interruptBitmap: [bigint, bigint, bigint, bigint];
}
const SREGS = { gdt: 192, idt: 208, cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apicBase: 272, interruptBitmap: 280 } as const;
export const KVM_SREGS_SIZE = 312;

export function decodeSregs(buf: Uint8Array): Sregs {
  const dv = dataView(buf);
  const segs = {} as Record<SegmentName, Segment>;
  SEGMENT_NAMES.forEach((name, i) => {
    segs[name] = decodeSegment(dv, i * SEGMENT_SIZE);
  });
  const u64 = (at: number): bigint => dv.getBigUint64(at, true);
  return {
    ...segs,
    gdt: { base: u64(SREGS.gdt), limit: dv.getUint16(SREGS.gdt + 8, true) },
    idt: { base: u64(SREGS.idt), limit: dv.getUint16(SREGS.idt + 8, true) },
    cr0: u64(SREGS.cr0),
    cr2: u64(SREGS.cr2),
    cr3: u64(SREGS.cr3),
    cr4: u64(SREGS.cr4),
    cr8: u64(SREGS.cr8),
    efer: u64(SREGS.efer),
    apicBase: u64(SREGS.apicBase),
    interruptBitmap: [0, 1, 2, 3].map((i) => u64(SREGS.interruptBitmap + i * 8)) as Sregs['interruptBitmap'],
  };
}

export function encodeSregs(s: Sregs, buf: Uint8Array = Buffer.alloc(KVM_SREGS_SIZE)): Uint8Array {
  const dv = dataView(buf);
  SEGMENT_NAMES.forEach((name, i) => encodeSegment(dv, i * SEGMENT_SIZE, s[name]));
  const u64 = (at: number, v: bigint): void => dv.setBigUint64(at, BigInt.asUintN(64, v), true);
  for (const [key, table] of [['gdt', s.gdt], ['idt', s.idt]] as const) {
    u64(SREGS[key], table.base);
    dv.setUint16(SREGS[key] + 8, table.limit, true);
    dv.setUint16(SREGS[key] + 10, 0, true);
    dv.setUint32(SREGS[key] + 12, 0, true);
  }
  u64(SREGS.cr0, s.cr0);
  u64(SREGS.cr2, s.cr2);
  u64(SREGS.cr3, s.cr3);
  u64(SREGS.cr4, s.cr4);
  u64(SREGS.cr8, s.cr8);
  u64(SREGS.efer, s.efer);
  u64(SREGS.apicBase, s.apicBase);
  s.interruptBitmap.forEach((v, i) => u64(SREGS.interruptBitmap + i * 8, v));
  return buf;
}

// ------------------------------------------------------------------ kvm_run (linux/kvm.h)
/**
 * Offsets into the vCPU's mmapped struct kvm_run. The exit union starts at 32; each exit type
 * overlays it differently.
 */
export const RUN = {
  requestInterruptWindow: 0, // __u8
  immediateExit: 1, // __u8
  exitReason: 8, // __u32
  readyForInterruptInjection: 12, // __u8
  ifFlag: 13, // __u8
  flags: 14, // __u16
  cr8: 16, // __u64
  apicBase: 24, // __u64
  /** KVM_EXIT_UNKNOWN: hw.hardware_exit_reason (__u64). */
  hwExitReason: 32,
  /** KVM_EXIT_FAIL_ENTRY: fail_entry.hardware_entry_failure_reason (__u64), .cpu (__u32). */
  failEntryReason: 32,
  failEntryCpu: 40,
  /** KVM_EXIT_EXCEPTION: ex.exception, ex.error_code (__u32 each). */
  exException: 32,
  exErrorCode: 36,
  /** KVM_EXIT_IO: direction (__u8), size (__u8), port (__u16), count (__u32), data_offset (__u64). */
  ioDirection: 32,
  ioSize: 33,
  ioPort: 34,
  ioCount: 36,
  ioDataOffset: 40,
  /** KVM_EXIT_MMIO: phys_addr (__u64), data[8], len (__u32), is_write (__u8). */
  mmioPhysAddr: 32,
  mmioData: 40,
  mmioLen: 48,
  mmioIsWrite: 52,
  /** KVM_EXIT_INTERNAL_ERROR: suberror, ndata (__u32 each), data[16] (__u64). */
  internalSuberror: 32,
  internalNdata: 36,
  internalData: 40,
  /** KVM_EXIT_SYSTEM_EVENT: type, ndata (__u32 each), data[16] (__u64; data[0] is the old flags). */
  systemEventType: 32,
  systemEventNdata: 36,
  systemEventData: 40,
  /** Size of the fixed part of struct kvm_run on x86_64 (the mapping is KVM_GET_VCPU_MMAP_SIZE long). */
  size: 0x930,
} as const;

// ------------------------------------------------- kvm_userspace_memory_region (linux/kvm.h), 32 bytes
export interface UserMemoryRegion {
  slot: number;
  flags: number;
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: bigint;
}
export function encodeUserMemoryRegion(r: UserMemoryRegion): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(r.slot, 0);
  b.writeUInt32LE(r.flags, 4);
  b.writeBigUInt64LE(BigInt(r.guestPhysAddr), 8);
  b.writeBigUInt64LE(BigInt(r.memorySize), 16);
  b.writeBigUInt64LE(r.userspaceAddr, 24);
  return b;
}

// -------------------------------------------------------------- kvm_ioeventfd (linux/kvm.h), 64 bytes
export function encodeIoeventfd(o: { datamatch: bigint; addr: number; len: number; fd: number; flags: number }): Buffer {
  const b = Buffer.alloc(64);
  b.writeBigUInt64LE(BigInt.asUintN(64, o.datamatch), 0);
  b.writeBigUInt64LE(BigInt(o.addr), 8);
  b.writeUInt32LE(o.len, 16);
  b.writeInt32LE(o.fd, 20);
  b.writeUInt32LE(o.flags, 24);
  return b;
}

// ------------------------------------------------------------------ kvm_irqfd (linux/kvm.h), 32 bytes
export function encodeIrqfd(o: { fd: number; gsi: number; flags: number; resamplefd: number }): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt32LE(o.fd, 0);
  b.writeUInt32LE(o.gsi, 4);
  b.writeUInt32LE(o.flags, 8);
  b.writeUInt32LE(o.resamplefd, 12);
  return b;
}

// -------------------------------------------------------------- kvm_irq_level (linux/kvm.h), 8 bytes
export function encodeIrqLevel(irq: number, level: number, buf: Buffer = Buffer.alloc(8)): Buffer {
  buf.writeUInt32LE(irq, 0);
  buf.writeUInt32LE(level, 4);
  return buf;
}

// -------------------------------------------------------------------- kvm_msi (linux/kvm.h), 32 bytes
export interface Msi {
  addressLo: number;
  addressHi: number;
  data: number;
  flags?: number;
  devid?: number;
}
export function encodeMsi(m: Msi, buf: Buffer = Buffer.alloc(32)): Buffer {
  buf.fill(0);
  buf.writeUInt32LE(m.addressLo >>> 0, 0);
  buf.writeUInt32LE(m.addressHi >>> 0, 4);
  buf.writeUInt32LE(m.data >>> 0, 8);
  buf.writeUInt32LE(m.flags ?? 0, 12);
  buf.writeUInt32LE(m.devid ?? 0, 16);
  return buf;
}

// ------------------------------------------ kvm_irq_routing + kvm_irq_routing_entry (linux/kvm.h)
/** One GSI route: to a pin of an in-kernel irqchip, or to an MSI message. */
export type IrqRoute =
  | { gsi: number; kind: 'irqchip'; irqchip: number; pin: number }
  | { gsi: number; kind: 'msi'; addressLo: number; addressHi: number; data: number; devid?: number };
const ROUTING_HEADER = 8;
const ROUTING_ENTRY = 48; // gsi, type, flags, pad (__u32 each) + 32-byte union
export function encodeIrqRouting(routes: readonly IrqRoute[]): Buffer {
  const b = Buffer.alloc(ROUTING_HEADER + routes.length * ROUTING_ENTRY);
  b.writeUInt32LE(routes.length, 0);
  routes.forEach((r, i) => {
    const at = ROUTING_HEADER + i * ROUTING_ENTRY;
    b.writeUInt32LE(r.gsi, at);
    if (r.kind === 'irqchip') {
      b.writeUInt32LE(1 /* KVM_IRQ_ROUTING_IRQCHIP */, at + 4);
      b.writeUInt32LE(r.irqchip, at + 16);
      b.writeUInt32LE(r.pin, at + 20);
    } else {
      b.writeUInt32LE(2 /* KVM_IRQ_ROUTING_MSI */, at + 4);
      b.writeUInt32LE(r.devid === undefined ? 0 : 1 /* KVM_MSI_VALID_DEVID */, at + 8);
      b.writeUInt32LE(r.addressLo >>> 0, at + 16);
      b.writeUInt32LE(r.addressHi >>> 0, at + 20);
      b.writeUInt32LE(r.data >>> 0, at + 24);
      b.writeUInt32LE(r.devid ?? 0, at + 28);
    }
  });
  return b;
}

// ----------------------------------------------- kvm_cpuid2 + kvm_cpuid_entry2 (asm/kvm.h)
/** struct kvm_cpuid_entry2 (40 bytes): one CPUID leaf/subleaf. */
export interface CpuidEntry {
  function: number;
  index: number;
  /** KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1) when `index` selects a subleaf. */
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}
const CPUID_HEADER = 8;
const CPUID_ENTRY = 40;
/** A kvm_cpuid2 buffer holding `entries`, or (with no entries) `capacity` empty slots for a GET ioctl. */
export function encodeCpuid2(entries: readonly CpuidEntry[], capacity = entries.length): Buffer {
  const b = Buffer.alloc(CPUID_HEADER + Math.max(capacity, entries.length) * CPUID_ENTRY);
  entries.forEach((e, i) => {
    const at = CPUID_HEADER + i * CPUID_ENTRY;
    b.writeUInt32LE(e.function >>> 0, at);
    b.writeUInt32LE(e.index >>> 0, at + 4);
    b.writeUInt32LE(e.flags >>> 0, at + 8);
    b.writeUInt32LE(e.eax >>> 0, at + 12);
    b.writeUInt32LE(e.ebx >>> 0, at + 16);
    b.writeUInt32LE(e.ecx >>> 0, at + 20);
    b.writeUInt32LE(e.edx >>> 0, at + 24);
  });
  // nent: how many entries follow (SET), or the room there is for the kernel to fill (GET).
  b.writeUInt32LE(entries.length === 0 ? capacity : entries.length, 0);
  return b;
}
export function decodeCpuid2(b: Buffer): CpuidEntry[] {
  const n = b.readUInt32LE(0);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const at = CPUID_HEADER + i * CPUID_ENTRY;
    out.push({
      function: b.readUInt32LE(at),
      index: b.readUInt32LE(at + 4),
      flags: b.readUInt32LE(at + 8),
      eax: b.readUInt32LE(at + 12),
      ebx: b.readUInt32LE(at + 16),
      ecx: b.readUInt32LE(at + 20),
      edx: b.readUInt32LE(at + 24),
    });
  }
  return out;
}

// ---------------------------------------------------- kvm_msrs + kvm_msr_entry (asm/kvm.h)
/** struct kvm_msr_entry (16 bytes). */
export interface MsrEntry {
  index: number;
  data: bigint;
}
export function encodeMsrs(entries: readonly MsrEntry[]): Buffer {
  const b = Buffer.alloc(8 + entries.length * 16);
  b.writeUInt32LE(entries.length, 0);
  entries.forEach((e, i) => {
    b.writeUInt32LE(e.index >>> 0, 8 + i * 16);
    b.writeBigUInt64LE(BigInt.asUintN(64, e.data), 8 + i * 16 + 8);
  });
  return b;
}
export function decodeMsrs(b: Buffer, count: number): MsrEntry[] {
  const out: MsrEntry[] = [];
  for (let i = 0; i < count; i++) out.push({ index: b.readUInt32LE(8 + i * 16), data: b.readBigUInt64LE(8 + i * 16 + 8) });
  return out;
}

// ------------------------------------------------------------------- kvm_fpu (asm/kvm.h), 416 bytes
/** struct kvm_fpu: x87 and SSE state. */
export interface Fpu {
  /** 8 x87 registers, 16 bytes each. */
  fpr: Uint8Array;
  fcw: number;
  fsw: number;
  ftwx: number;
  lastOpcode: number;
  lastIp: bigint;
  lastDp: bigint;
  /** 16 XMM registers, 16 bytes each. */
  xmm: Uint8Array;
  mxcsr: number;
}
export const KVM_FPU_SIZE = 416;
const FPU = { fpr: 0, fcw: 128, fsw: 130, ftwx: 132, lastOpcode: 134, lastIp: 136, lastDp: 144, xmm: 152, mxcsr: 408 } as const;
export function decodeFpu(b: Buffer): Fpu {
  return {
    fpr: Uint8Array.from(b.subarray(FPU.fpr, FPU.fpr + 128)),
    fcw: b.readUInt16LE(FPU.fcw),
    fsw: b.readUInt16LE(FPU.fsw),
    ftwx: b.readUInt8(FPU.ftwx),
    lastOpcode: b.readUInt16LE(FPU.lastOpcode),
    lastIp: b.readBigUInt64LE(FPU.lastIp),
    lastDp: b.readBigUInt64LE(FPU.lastDp),
    xmm: Uint8Array.from(b.subarray(FPU.xmm, FPU.xmm + 256)),
    mxcsr: b.readUInt32LE(FPU.mxcsr),
  };
}
export function encodeFpu(f: Fpu): Buffer {
  const b = Buffer.alloc(KVM_FPU_SIZE);
  b.set(f.fpr.subarray(0, 128), FPU.fpr);
  b.writeUInt16LE(f.fcw, FPU.fcw);
  b.writeUInt16LE(f.fsw, FPU.fsw);
  b.writeUInt8(f.ftwx, FPU.ftwx);
  b.writeUInt16LE(f.lastOpcode, FPU.lastOpcode);
  b.writeBigUInt64LE(f.lastIp, FPU.lastIp);
  b.writeBigUInt64LE(f.lastDp, FPU.lastDp);
  b.set(f.xmm.subarray(0, 256), FPU.xmm);
  b.writeUInt32LE(f.mxcsr >>> 0, FPU.mxcsr);
  return b;
}

// ------------------------------------------------------- kvm_lapic_state (asm/kvm.h), 1024 bytes
/** struct kvm_lapic_state is the raw 1 KiB local-APIC register page (register at offset reg << 4). */
export const KVM_LAPIC_STATE_SIZE = 1024;

// -------------------------------------------------------- kvm_pit_config (linux/kvm.h), 64 bytes
export function encodePitConfig(flags: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(flags, 0);
  return b;
}

function dataView(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}
