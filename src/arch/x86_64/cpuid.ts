/**
 * The CPUID a vCPU sees: what KVM_GET_SUPPORTED_CPUID offers, with per-vCPU topology, the
 * hypervisor bit and KVM's paravirtual leaves filled in. Leaf layouts: Intel SDM vol. 2A "CPUID",
 * AMD APM vol. 3 appendix E; KVM leaves: Documentation/virt/kvm/x86/cpuid.rst.
 */
import type { CpuidEntry } from '../../kvm/structs.js';

export type { CpuidEntry };

/** kvm_cpuid_entry2.flags bit: the entry is selected by ECX too. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

/** Leaf 1 (Intel SDM Table 3-10/3-11). */
const LEAF1_ECX_HYPERVISOR = 1 << 31;
const LEAF1_ECX_TSC_DEADLINE = 1 << 24;
const LEAF1_EDX_HTT = 1 << 28;
/** Leaf 1 EBX[15:8]: CLFLUSH line size in 8-byte units (64 bytes). */
const CLFLUSH_LINE_QWORDS = 8;

/** Leaf 0xB / 0x1F level types (Intel SDM "Extended Topology Enumeration Leaf"). */
const LEVEL_TYPE_INVALID = 0;
const LEVEL_TYPE_SMT = 1;
const LEVEL_TYPE_CORE = 2;

/** KVM's hypervisor leaves (Documentation/virt/kvm/x86/cpuid.rst). */
export const KVM_CPUID_SIGNATURE = 0x40000000;
export const KVM_CPUID_FEATURES = 0x40000001;
/** VMware-style timing leaf (TSC and LAPIC bus kHz), which Linux reads on KVM too (arch/x86/kernel/cpu/vmware.c, kvm.c: kvm_get_tsc_khz via this leaf is used by several hypervisors; Linux's `x86_platform.calibrate_tsc` on KVM reads kvmclock). */
export const HYPERVISOR_TIMING_LEAF = 0x40000010;
/** "KVMKVMKVM\0\0\0" as EBX, ECX, EDX. */
const KVM_SIGNATURE = [0x4b4d564b, 0x564b4d56, 0x0000004d] as const;

/** KVM paravirtual feature bits in leaf 0x40000001 EAX (arch/x86/include/uapi/asm/kvm_para.h). */
export const KvmPvFeature = {
  CLOCKSOURCE: 1 << 0,
  NOP_IO_DELAY: 1 << 1,
  MMU_OP: 1 << 2,
  CLOCKSOURCE2: 1 << 3,
  ASYNC_PF: 1 << 4,
  STEAL_TIME: 1 << 5,
  PV_EOI: 1 << 6,
  PV_UNHALT: 1 << 7,
  PV_TLB_FLUSH: 1 << 9,
  ASYNC_PF_VMEXIT: 1 << 10,
  PV_SEND_IPI: 1 << 11,
  POLL_CONTROL: 1 << 12,
  PV_SCHED_YIELD: 1 << 13,
  ASYNC_PF_INT: 1 << 14,
  MSI_EXT_DEST_ID: 1 << 15,
  HC_MAP_GPA_RANGE: 1 << 16,
  MIGRATION_CONTROL: 1 << 17,
  CLOCKSOURCE_STABLE_BIT: 1 << 24,
} as const;

/** Extended leaves (AMD APM vol. 3 appendix E.4.1; Intel SDM "CPUID—Extended Function CPUID Information"). */
const EXTENDED_MAX_LEAF = 0x80000000;
/** The processor brand string: 48 bytes of ASCII, NUL-terminated, 16 per leaf in EAX, EBX, ECX, EDX (AMD APM E.4.3, Intel SDM "Processor Brand String"). */
const BRAND_LEAVES = [0x80000002, 0x80000003, 0x80000004] as const;
const BRAND_BYTES = 48;

export interface CpuidOptions {
  /** This vCPU's index, used as its APIC ID. */
  vcpuId: number;
  vcpuCount: number;
  /** TSC frequency in kHz (KVM_GET_TSC_KHZ) for the timing leaf; 0 leaves it out. */
  tscKhz: number;
  /**
   * KVM paravirtual features to offer (leaf 0x40000001 EAX), masked by what KVM supports.
   * Undefined offers everything KVM supports; 0 offers none (a "fully emulated" CPU for comparisons).
   */
  pvFeatures?: number;
  /**
   * The processor brand string the guest reads (`model name` in its /proc/cpuinfo), at most 47
   * characters of ASCII. KVM_GET_SUPPORTED_CPUID leaves the brand leaves zero, which Linux shows
   * as a bare "family/model"; QEMU's `-cpu host` passes the host's string. Undefined: as KVM says.
   */
  brandString?: string;
}

/** The first `model name` of a /proc/cpuinfo text, when it is printable ASCII; undefined otherwise. */
export function cpuinfoModelName(cpuinfo: string): string | undefined {
  const m = /^model name\s*:\s*(.*)$/m.exec(cpuinfo);
  const name = m?.[1]?.trim();
  return name !== undefined && name !== '' && /^[\x20-\x7e]+$/.test(name) ? name.slice(0, BRAND_BYTES - 1) : undefined;
}

/** `brand` as the three brand leaves' registers, NUL-padded to 48 bytes. */
function brandEntries(brand: string): CpuidEntry[] {
  const bytes = Buffer.alloc(BRAND_BYTES);
  bytes.write(brand.slice(0, BRAND_BYTES - 1), 'latin1');
  return BRAND_LEAVES.map((leaf, k) => ({
    function: leaf,
    index: 0,
    flags: 0,
    eax: bytes.readUInt32LE(16 * k),
    ebx: bytes.readUInt32LE(16 * k + 4),
    ecx: bytes.readUInt32LE(16 * k + 8),
    edx: bytes.readUInt32LE(16 * k + 12),
  }));
}

/** ceil(log2(n)) for n ≥ 1: bits of APIC ID needed to number n logical processors. */
function idBits(n: number): number {
  let bits = 0;
  while (1 << bits < n) bits++;
  return bits;
}

/**
 * Build one vCPU's CPUID from KVM's supported set. Returns new entries; the input is not changed.
 * Topology: one socket, `vcpuCount` cores, one thread each (APIC ID = vcpuId).
 */
export function configureCpuid(supported: readonly CpuidEntry[], opts: CpuidOptions): CpuidEntry[] {
  const { vcpuId, vcpuCount } = opts;
  const coreBits = idBits(vcpuCount);
  const out: CpuidEntry[] = [];
  for (const src of supported) {
    const e = { ...src };
    switch (e.function) {
      case 0x1:
        // EBX[31:24] initial APIC ID, [23:16] max logical processors in the package, [15:8] CLFLUSH size.
        e.ebx = ((vcpuId & 0xff) << 24) | ((vcpuCount & 0xff) << 16) | (CLFLUSH_LINE_QWORDS << 8) | (e.ebx & 0xff);
        e.ecx |= LEAF1_ECX_HYPERVISOR;
        // The in-kernel LAPIC emulates the TSC-deadline timer (KVM_CAP_TSC_DEADLINE_TIMER); Linux prefers it.
        e.ecx |= LEAF1_ECX_TSC_DEADLINE;
        if (vcpuCount > 1) e.edx |= LEAF1_EDX_HTT;
        else e.edx &= ~LEAF1_EDX_HTT;
        break;
      case 0x4:
        // Deterministic cache parameters: EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing this cache - 1.
        if ((e.eax & 0x1f) !== 0) {
          e.eax = (e.eax & 0x3fff) | (((vcpuCount - 1) & 0x3f) << 26);
        }
        break;
      case 0xb:
      case 0x1f: {
        // Extended topology: subleaf 0 = SMT level (1 thread), subleaf 1 = core level, then invalid.
        e.flags |= KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        e.edx = vcpuId;
        if (e.index === 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (LEVEL_TYPE_SMT << 8) | 0;
        } else if (e.index === 1) {
          e.eax = coreBits;
          e.ebx = vcpuCount;
          e.ecx = (LEVEL_TYPE_CORE << 8) | 1;
        } else {
          e.eax = 0;
          e.ebx = 0;
          e.ecx = (LEVEL_TYPE_INVALID << 8) | (e.index & 0xff);
        }
        break;
      }
      case 0x80000008:
        // AMD: ECX[15:12] APIC ID size, ECX[7:0] number of cores - 1 (AMD APM vol. 3 E.4.7).
        e.ecx = (e.ecx & ~0xf0ff) | (coreBits << 12) | ((vcpuCount - 1) & 0xff);
        break;
      case KVM_CPUID_SIGNATURE:
        e.eax = opts.tscKhz > 0 ? HYPERVISOR_TIMING_LEAF : KVM_CPUID_FEATURES;
        [e.ebx, e.ecx, e.edx] = KVM_SIGNATURE;
        break;
      case KVM_CPUID_FEATURES:
        if (opts.pvFeatures !== undefined) e.eax &= opts.pvFeatures;
        break;
      default:
        break;
    }
    out.push(e);
  }
  const extendedMax = out.find((e) => e.function === EXTENDED_MAX_LEAF)?.eax ?? 0;
  if (opts.brandString !== undefined && extendedMax >= BRAND_LEAVES[2]) {
    // Only where the CPU enumerates the brand leaves (the guest reads them only then).
    for (const b of brandEntries(opts.brandString)) {
      const at = out.findIndex((e) => e.function === b.function);
      if (at >= 0) out[at] = b;
      else out.push(b);
    }
  }
  if (opts.tscKhz > 0 && !out.some((e) => e.function === HYPERVISOR_TIMING_LEAF)) {
    // EAX: TSC frequency in kHz; EBX: LAPIC bus frequency in kHz (KVM's APIC timer runs at 1 GHz).
    out.push({ function: HYPERVISOR_TIMING_LEAF, index: 0, flags: 0, eax: opts.tscKhz >>> 0, ebx: 1_000_000, ecx: 0, edx: 0 });
  }
  return out;
}
