/**
 * KVM ioctl numbers, exit reasons and capability numbers. Values are from linux/kvm.h (and
 * asm/kvm.h for x86 structs), checked against the host headers with a C program printing
 * the macros. ioctl numbers encode (direction << 30 | size << 16 | 'KVMIO' 0xAE << 8 | nr).
 */

/** KVM_API_VERSION, linux/kvm.h: the only stable API version there has ever been. */
export const KVM_API_VERSION = 12;

// System ioctls (on the /dev/kvm fd), linux/kvm.h.
export const KVM_GET_API_VERSION = 0xae00;
export const KVM_CREATE_VM = 0xae01;
export const KVM_GET_MSR_INDEX_LIST = 0xc004ae02;
export const KVM_CHECK_EXTENSION = 0xae03;
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04;
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05;

// VM ioctls, linux/kvm.h.
export const KVM_CREATE_VCPU = 0xae41;
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46;
export const KVM_SET_TSS_ADDR = 0xae47;
export const KVM_SET_IDENTITY_MAP_ADDR = 0x4008ae48;
export const KVM_CREATE_IRQCHIP = 0xae60;
export const KVM_IRQ_LINE = 0x4008ae61;
export const KVM_SET_GSI_ROUTING = 0x4008ae6a;
export const KVM_IRQFD = 0x4020ae76;
export const KVM_CREATE_PIT2 = 0x4040ae77;
export const KVM_IOEVENTFD = 0x4040ae79;
export const KVM_SIGNAL_MSI = 0x4020aea5;

// vCPU ioctls, linux/kvm.h.
export const KVM_RUN = 0xae80;
export const KVM_GET_REGS = 0x8090ae81;
export const KVM_SET_REGS = 0x4090ae82;
export const KVM_GET_SREGS = 0x8138ae83;
export const KVM_SET_SREGS = 0x4138ae84;
export const KVM_GET_MSRS = 0xc008ae88;
export const KVM_SET_MSRS = 0x4008ae89;
export const KVM_GET_FPU = 0x81a0ae8c;
export const KVM_SET_FPU = 0x41a0ae8d;
export const KVM_GET_LAPIC = 0x8400ae8e;
export const KVM_SET_LAPIC = 0x4400ae8f;
export const KVM_SET_CPUID2 = 0x4008ae90;
export const KVM_GET_CPUID2 = 0xc008ae91;
export const KVM_GET_MP_STATE = 0x8004ae98;
export const KVM_SET_MP_STATE = 0x4004ae99;

/** Capabilities (KVM_CAP_*, linux/kvm.h) queried with KVM_CHECK_EXTENSION. */
export const KvmCap = {
  IRQCHIP: 0,
  HLT: 1,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_VCPUS: 9,
  NR_MEMSLOTS: 10,
  MP_STATE: 14,
  IRQ_ROUTING: 25,
  IRQFD: 32,
  PIT2: 33,
  IOEVENTFD: 36,
  SET_IDENTITY_MAP_ADDR: 37,
  INTERNAL_ERROR_DATA: 40,
  MAX_VCPUS: 66,
  SIGNAL_MSI: 77,
  READONLY_MEM: 81,
  IRQFD_RESAMPLE: 82,
  IMMEDIATE_EXIT: 136,
} as const;
export type KvmCapName = keyof typeof KvmCap;

/** Capabilities the VMM refuses to run without. */
export const REQUIRED_CAPS: readonly KvmCapName[] = [
  'IRQCHIP',
  'USER_MEMORY',
  'SET_TSS_ADDR',
  'EXT_CPUID',
  'MP_STATE',
  'IRQ_ROUTING',
  'IRQFD',
  'PIT2',
  'IOEVENTFD',
  'SET_IDENTITY_MAP_ADDR',
  'SIGNAL_MSI',
  'IMMEDIATE_EXIT',
];

/** Exit reasons (KVM_EXIT_*, linux/kvm.h), as stored in kvm_run.exit_reason. */
export const ExitReason = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  SET_TPR: 11,
  TPR_ACCESS: 12,
  S390_SIEIC: 13,
  S390_RESET: 14,
  DCR: 15,
  NMI: 16,
  INTERNAL_ERROR: 17,
  OSI: 18,
  PAPR_HCALL: 19,
  S390_UCONTROL: 20,
  WATCHDOG: 21,
  S390_TSCH: 22,
  EPR: 23,
  SYSTEM_EVENT: 24,
  S390_STSI: 25,
  IOAPIC_EOI: 26,
  HYPERV: 27,
  ARM_NISV: 28,
  X86_RDMSR: 29,
  X86_WRMSR: 30,
  DIRTY_RING_FULL: 31,
  AP_RESET_HOLD: 32,
  X86_BUS_LOCK: 33,
  XEN: 34,
  RISCV_SBI: 35,
  RISCV_CSR: 36,
  NOTIFY: 37,
  LOONGARCH_IOCSR: 38,
  MEMORY_FAULT: 39,
} as const;

const exitReasonNames: ReadonlyMap<number, string> = new Map(Object.entries(ExitReason).map(([k, v]) => [v, k]));

/** "KVM_EXIT_SHUTDOWN (8)" for a known reason, "unknown exit reason 99" otherwise. */
export function exitReasonName(reason: number): string {
  const name = exitReasonNames.get(reason);
  return name === undefined ? `unknown exit reason ${reason}` : `KVM_EXIT_${name} (${reason})`;
}

/** KVM_EXIT_IO directions, linux/kvm.h. */
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

/** KVM_EXIT_INTERNAL_ERROR sub-errors (KVM_INTERNAL_ERROR_*), linux/kvm.h. */
export const InternalSuberror = {
  EMULATION: 1,
  SIMUL_EX: 2,
  DELIVERY_EV: 3,
  UNEXPECTED_EXIT_REASON: 4,
} as const;

/** KVM_EXIT_SYSTEM_EVENT types (KVM_SYSTEM_EVENT_*), linux/kvm.h. */
export const SystemEventType = {
  SHUTDOWN: 1,
  RESET: 2,
  CRASH: 3,
  WAKEUP: 4,
  SUSPEND: 5,
  SEV_TERM: 6,
} as const;

/** kvm_userspace_memory_region.flags, linux/kvm.h. */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

/** kvm_ioeventfd.flags, linux/kvm.h. */
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

/** kvm_irqfd.flags, linux/kvm.h. */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;

/** kvm_irq_routing_entry.type, linux/kvm.h. */
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;

/** Irqchip numbers for KVM_IRQ_ROUTING_IRQCHIP entries, asm/kvm.h (x86). */
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

/** kvm_pit_config.flags, linux/kvm.h. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** kvm_mp_state.mp_state values (KVM_MP_STATE_*), linux/kvm.h. */
export const MpState = {
  RUNNABLE: 0,
  UNINITIALIZED: 1,
  INIT_RECEIVED: 2,
  HALTED: 3,
  SIPI_RECEIVED: 4,
} as const;

/** KVM_PIO_PAGE_OFFSET, asm/kvm.h (x86): page of the vCPU mapping holding port-I/O data. */
export const KVM_PIO_PAGE_OFFSET = 1;

/** x86 architectural register bits used when decoding state for error messages (Intel SDM vol. 3A 2.5). */
export const CR0_PE = 1 << 0;
export const CR0_PG = 1 << 31;
export const CR4_PAE = 1 << 5;
export const EFER_LME = 1 << 8;
export const EFER_LMA = 1 << 10;
