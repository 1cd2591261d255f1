/**
 * Decoding of vCPU exits the VMM does not handle into readable errors. Pure functions over the
 * kvm_run bytes and decoded registers, so they are unit-testable without /dev/kvm.
 */
import {
  CR0_PE,
  CR0_PG,
  CR4_PAE,
  EFER_LMA,
  ExitReason,
  InternalSuberror,
  SystemEventType,
  exitReasonName,
} from './constants.js';
import { RUN, type Regs, type Sregs } from './structs.js';

/** A decoded exit: its reason, its name, and a one-line description of the exit-specific data. */
export interface ExitDescription {
  reason: number;
  name: string;
  detail: string;
}

const hex = (v: number | bigint): string => `0x${v.toString(16)}`;

function nameOf(table: Readonly<Record<string, number>>, value: number, prefix: string): string {
  const found = Object.entries(table).find(([, v]) => v === value);
  return found ? `${prefix}${found[0]}` : `${prefix}? (${value})`;
}

/** Up to 16 __u64 of exit data starting at `at`, as hex, when `ndata` says they are valid. */
function dataWords(run: DataView, at: number, ndata: number): string {
  const n = Math.min(ndata, 16);
  const words: string[] = [];
  for (let i = 0; i < n; i++) words.push(hex(run.getBigUint64(at + i * 8, true)));
  return `[${words.join(', ')}]`;
}

/** Describe the exit recorded in a kvm_run area. Never throws for any reason value. */
export function describeExit(run: DataView): ExitDescription {
  const reason = run.getUint32(RUN.exitReason, true);
  const name = exitReasonName(reason);
  let detail: string;
  switch (reason) {
    case ExitReason.UNKNOWN:
      detail =
        `hardware exit reason ${hex(run.getBigUint64(RUN.hwExitReason, true))}: ` +
        'the CPU left the guest for a reason KVM does not know';
      break;
    case ExitReason.EXCEPTION:
      detail = `exception vector ${run.getUint32(RUN.exException, true)}, error code ${hex(run.getUint32(RUN.exErrorCode, true))}`;
      break;
    case ExitReason.IO: {
      const dir = run.getUint8(RUN.ioDirection) === 1 ? 'OUT' : 'IN';
      detail =
        `${dir} port ${hex(run.getUint16(RUN.ioPort, true))}, size ${run.getUint8(RUN.ioSize)}, ` +
        `count ${run.getUint32(RUN.ioCount, true)}, data offset ${hex(run.getBigUint64(RUN.ioDataOffset, true))}`;
      break;
    }
    case ExitReason.MMIO: {
      const len = run.getUint32(RUN.mmioLen, true);
      const bytes: string[] = [];
      for (let i = 0; i < Math.min(len, 8); i++) bytes.push(run.getUint8(RUN.mmioData + i).toString(16).padStart(2, '0'));
      detail =
        `${run.getUint8(RUN.mmioIsWrite) ? 'write' : 'read'} of ${len} bytes at GPA ${hex(run.getBigUint64(RUN.mmioPhysAddr, true))}` +
        (run.getUint8(RUN.mmioIsWrite) ? ` (data ${bytes.join(' ')})` : '');
      break;
    }
    case ExitReason.HLT:
      detail = 'the guest executed HLT and no in-kernel irqchip will wake it';
      break;
    case ExitReason.SHUTDOWN:
      detail =
        'triple fault: the guest took an exception while delivering a double fault ' +
        '(usually a bad IDT, GDT or page table, or a deliberate reset); ' +
        'on AMD hosts KVM has already reset the vCPU, so the registers below may show the reset state';
      break;
    case ExitReason.FAIL_ENTRY:
      detail =
        `VM entry failed with hardware reason ${hex(run.getBigUint64(RUN.failEntryReason, true))} on host CPU ` +
        `${run.getUint32(RUN.failEntryCpu, true)}: the vCPU state is invalid (check segments, CR0/CR4/EFER consistency)`;
      break;
    case ExitReason.INTR:
      detail = 'KVM_RUN was interrupted by a signal (a kick)';
      break;
    case ExitReason.INTERNAL_ERROR: {
      const sub = run.getUint32(RUN.internalSuberror, true);
      const ndata = run.getUint32(RUN.internalNdata, true);
      const hint =
        sub === InternalSuberror.EMULATION
          ? ': KVM could not emulate an instruction (on a PVM host, a stock guest kernel stops this way; use hardware KVM)'
          : sub === InternalSuberror.SIMUL_EX
            ? ': an exception occurred while delivering another one'
            : sub === InternalSuberror.DELIVERY_EV
              ? ': an event (exception/interrupt) could not be delivered, e.g. a guest page-table walk hit MMIO'
              : '';
      detail = `suberror ${nameOf(InternalSuberror, sub, 'KVM_INTERNAL_ERROR_')}${hint}; data ${dataWords(run, RUN.internalData, ndata)}`;
      break;
    }
    case ExitReason.SYSTEM_EVENT: {
      const type = run.getUint32(RUN.systemEventType, true);
      const ndata = run.getUint32(RUN.systemEventNdata, true);
      detail = `${nameOf(SystemEventType, type, 'KVM_SYSTEM_EVENT_')}; data ${dataWords(run, RUN.systemEventData, ndata)}`;
      break;
    }
    default:
      detail = 'tsvmm does not handle this exit';
  }
  return { reason, name, detail };
}

/** "real mode", "protected mode (32-bit)", "long mode (64-bit)"... from CR0, EFER and CS. */
export function cpuModeName(sregs: Sregs): string {
  if ((sregs.cr0 & BigInt(CR0_PE)) === 0n) return 'real mode';
  if ((sregs.efer & BigInt(EFER_LMA)) !== 0n) return sregs.cs.l ? 'long mode (64-bit)' : 'long mode (compatibility)';
  const paging = (sregs.cr0 & BigInt(CR0_PG >>> 0)) !== 0n ? ((sregs.cr4 & BigInt(CR4_PAE)) !== 0n ? ', PAE paging' : ', paging') : '';
  return `protected mode (${sregs.cs.db ? 32 : 16}-bit${paging})`;
}

/** The registers worth seeing when a guest dies, on a few lines. Either part may be missing. */
export function formatCpuState(regs: Regs | undefined, sregs: Sregs | undefined): string {
  const lines: string[] = [];
  if (sregs) lines.push(`  mode ${cpuModeName(sregs)}`);
  if (regs) {
    lines.push(`  rip ${hex(regs.rip)}  rsp ${hex(regs.rsp)}  rflags ${hex(regs.rflags)}`);
    lines.push(`  rax ${hex(regs.rax)}  rbx ${hex(regs.rbx)}  rcx ${hex(regs.rcx)}  rdx ${hex(regs.rdx)}  rsi ${hex(regs.rsi)}  rdi ${hex(regs.rdi)}`);
  }
  if (sregs) {
    lines.push(`  cr0 ${hex(sregs.cr0)}  cr2 ${hex(sregs.cr2)}  cr3 ${hex(sregs.cr3)}  cr4 ${hex(sregs.cr4)}  efer ${hex(sregs.efer)}`);
    const cs = sregs.cs;
    lines.push(`  cs ${hex(cs.selector)} (base ${hex(cs.base)} limit ${hex(cs.limit)} type ${cs.type} l ${cs.l} db ${cs.db})  ss ${hex(sregs.ss.selector)}`);
    lines.push(`  gdt ${hex(sregs.gdt.base)}/${hex(sregs.gdt.limit)}  idt ${hex(sregs.idt.base)}/${hex(sregs.idt.limit)}`);
  }
  if (lines.length === 0) lines.push('  (registers unavailable)');
  return lines.join('\n');
}

/**
 * Registers as a reset leaves them: CS.base 0xffff0000 and IP 0xfff0, the reset vector (Intel SDM
 * vol. 3A, 10.1.4 "First Instruction Executed"; AMD APM vol. 2, 14.1.3). On a SHUTDOWN exit
 * KVM's SVM code INITs the vCPU before returning (svm.c, shutdown_interception: the VMCB is
 * undefined after a shutdown intercept), so on AMD hosts this is all userspace gets to see.
 */
function isResetState(regs: Regs, sregs: Sregs): boolean {
  return regs.rip === RESET_IP && sregs.cs.base === RESET_CS_BASE && (sregs.cr0 & BigInt(CR0_PE)) === 0n;
}
const RESET_IP = 0xfff0n;
const RESET_CS_BASE = 0xffff0000n;

/** A vCPU stopped on an exit the VMM cannot continue from. The message carries the CPU state. */
export class VcpuExitError extends Error {
  readonly exitReason: number;
  readonly exitName: string;
  readonly detail: string;
  constructor(
    readonly vcpuId: number,
    exit: ExitDescription,
    readonly regs?: Regs,
    readonly sregs?: Sregs,
  ) {
    super(`vCPU ${vcpuId} stopped on ${exit.name}: ${exit.detail}\n${formatCpuState(regs, sregs)}`);
    this.name = 'VcpuExitError';
    this.exitReason = exit.reason;
    this.exitName = exit.name;
    this.detail = exit.detail;
  }

  /**
   * Where the vCPU was, on one line ("vCPU 1 at rip 0x… (long mode, cr3 0x…)"), for messages that
   * must stay one line: the kernel's symbols (System.map, `addr2line -e vmlinux`) turn rip into a
   * function, and cr3 tells whose address space it was.
   */
  get where(): string {
    if (this.regs !== undefined && this.sregs !== undefined && isResetState(this.regs, this.sregs)) {
      return `vCPU ${this.vcpuId} (its registers were already reset: KVM on AMD re-initializes a vCPU after a shutdown, so where it faulted is lost)`;
    }
    const at = this.regs === undefined ? '' : ` at rip ${hex(this.regs.rip)}`;
    const context = this.sregs === undefined ? '' : ` (${cpuModeName(this.sregs)}, cr3 ${hex(this.sregs.cr3)})`;
    return `vCPU ${this.vcpuId}${at}${context}`;
  }
}
