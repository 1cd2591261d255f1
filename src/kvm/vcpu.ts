/**
 * A vCPU handle: its fd, its mmapped struct kvm_run and its register ioctls. It is a thin
 * handle over a file descriptor, so a worker thread can rebuild one from the fd number
 * (`Vcpu.fromFd`) and map the same run area: both threads then see the same kvm_run bytes.
 */
import {
  KVM_GET_CPUID2,
  KVM_GET_FPU,
  KVM_GET_LAPIC,
  KVM_GET_MP_STATE,
  KVM_GET_MSRS,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_RUN,
  KVM_SET_CPUID2,
  KVM_SET_FPU,
  KVM_SET_LAPIC,
  KVM_SET_MP_STATE,
  KVM_SET_MSRS,
  KVM_SET_REGS,
  KVM_SET_SREGS,
} from './constants.js';
import { MAP_SHARED, PROT_READ, PROT_WRITE, close, ioctl, ioctlValueRaw, lastErrno, mmap, munmap, viewMapping, type HostMapping } from './libc.js';
import {
  RUN,
  KVM_FPU_SIZE,
  KVM_LAPIC_STATE_SIZE,
  KVM_REGS_SIZE,
  KVM_SREGS_SIZE,
  decodeCpuid2,
  decodeFpu,
  decodeMsrs,
  decodeRegs,
  decodeSregs,
  encodeCpuid2,
  encodeFpu,
  encodeMsrs,
  encodeRegs,
  encodeSregs,
  type CpuidEntry,
  type Fpu,
  type MsrEntry,
  type Regs,
  type Sregs,
} from './structs.js';

export class Vcpu {
  /** The whole kvm_run mapping (KVM_GET_VCPU_MMAP_SIZE bytes; port-I/O data lives in its second page). */
  readonly runBytes: Uint8Array;
  readonly runView: DataView;
  private readonly runMapping: HostMapping;
  private readonly regsBuf = Buffer.alloc(KVM_REGS_SIZE);
  private readonly sregsBuf = Buffer.alloc(KVM_SREGS_SIZE);
  private closed = false;

  private constructor(
    readonly id: number,
    readonly fd: number,
    readonly mmapSize: number,
    private readonly ownsFd: boolean,
  ) {
    this.runMapping = mmap(mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, `map the kvm_run area of vCPU ${id}`);
    const ab = viewMapping(this.runMapping);
    this.runBytes = new Uint8Array(ab);
    this.runView = new DataView(ab);
  }

  /** Wrap a vCPU fd just returned by KVM_CREATE_VCPU; closing the handle closes the fd. */
  static adopt(id: number, fd: number, mmapSize: number): Vcpu {
    return new Vcpu(id, fd, mmapSize, true);
  }

  /** A second handle on a vCPU fd owned elsewhere (a worker thread's view); closing it only unmaps. */
  static fromFd(id: number, fd: number, mmapSize: number): Vcpu {
    return new Vcpu(id, fd, mmapSize, false);
  }

  /**
   * One KVM_RUN. Returns 0 when the vCPU exited (read the reason from the run area) or the
   * errno (EINTR after a kick or with immediate_exit set). Never throws: it runs in the hot loop.
   */
  run(): number {
    return ioctlValueRaw(this.fd, KVM_RUN, 0) < 0 ? lastErrno() : 0;
  }

  /** kvm_run.immediate_exit: when set, KVM_RUN returns EINTR at once instead of entering the guest. */
  set immediateExit(value: boolean) {
    this.runBytes[RUN.immediateExit] = value ? 1 : 0;
  }
  get immediateExit(): boolean {
    return this.runBytes[RUN.immediateExit] !== 0;
  }

  getRegs(): Regs {
    ioctl(this.fd, KVM_GET_REGS, this.regsBuf, `KVM_GET_REGS on vCPU ${this.id}`);
    return decodeRegs(this.regsBuf);
  }
  setRegs(regs: Regs): void {
    ioctl(this.fd, KVM_SET_REGS, encodeRegs(regs, this.regsBuf), `KVM_SET_REGS on vCPU ${this.id}`);
  }
  /** Read-modify-write of some registers. */
  updateRegs(changes: Partial<Regs>): void {
    this.setRegs({ ...this.getRegs(), ...changes });
  }

  getSregs(): Sregs {
    ioctl(this.fd, KVM_GET_SREGS, this.sregsBuf, `KVM_GET_SREGS on vCPU ${this.id}`);
    return decodeSregs(this.sregsBuf);
  }
  setSregs(sregs: Sregs): void {
    ioctl(this.fd, KVM_SET_SREGS, encodeSregs(sregs, this.sregsBuf), `KVM_SET_SREGS on vCPU ${this.id}`);
  }

  getFpu(): Fpu {
    const b = Buffer.alloc(KVM_FPU_SIZE);
    ioctl(this.fd, KVM_GET_FPU, b, `KVM_GET_FPU on vCPU ${this.id}`);
    return decodeFpu(b);
  }
  setFpu(fpu: Fpu): void {
    ioctl(this.fd, KVM_SET_FPU, encodeFpu(fpu), `KVM_SET_FPU on vCPU ${this.id}`);
  }

  /** Read the given MSRs. Throws if KVM could not read all of them (it returns how many it read). */
  getMsrs(indices: readonly number[]): MsrEntry[] {
    const b = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const n = ioctl(this.fd, KVM_GET_MSRS, b, `KVM_GET_MSRS on vCPU ${this.id}`);
    if (n !== indices.length) {
      throw new Error(`KVM_GET_MSRS on vCPU ${this.id}: MSR 0x${indices[n]?.toString(16)} is not readable (read ${n} of ${indices.length})`);
    }
    return decodeMsrs(b, n);
  }
  /** Write MSRs. Throws naming the first MSR KVM refused. */
  setMsrs(entries: readonly MsrEntry[]): void {
    const n = ioctl(this.fd, KVM_SET_MSRS, encodeMsrs(entries), `KVM_SET_MSRS on vCPU ${this.id}`);
    if (n !== entries.length) {
      throw new Error(`KVM_SET_MSRS on vCPU ${this.id}: MSR 0x${entries[n]?.index.toString(16)} was refused (wrote ${n} of ${entries.length})`);
    }
  }

  setCpuid2(entries: readonly CpuidEntry[]): void {
    ioctl(this.fd, KVM_SET_CPUID2, encodeCpuid2(entries), `KVM_SET_CPUID2 on vCPU ${this.id}`);
  }
  getCpuid2(capacity = 256): CpuidEntry[] {
    const b = encodeCpuid2([], capacity);
    ioctl(this.fd, KVM_GET_CPUID2, b, `KVM_GET_CPUID2 on vCPU ${this.id}`);
    return decodeCpuid2(b);
  }

  /** The local APIC register page (needs the in-kernel irqchip). */
  getLapic(): Uint8Array {
    const b = Buffer.alloc(KVM_LAPIC_STATE_SIZE);
    ioctl(this.fd, KVM_GET_LAPIC, b, `KVM_GET_LAPIC on vCPU ${this.id}`);
    return b;
  }
  setLapic(page: Uint8Array): void {
    if (page.length !== KVM_LAPIC_STATE_SIZE) throw new RangeError(`setLapic: the LAPIC page is ${KVM_LAPIC_STATE_SIZE} bytes, got ${page.length}`);
    ioctl(this.fd, KVM_SET_LAPIC, page, `KVM_SET_LAPIC on vCPU ${this.id}`);
  }

  /** KVM_MP_STATE_* (see MpState in constants.ts). */
  getMpState(): number {
    const b = Buffer.alloc(4);
    ioctl(this.fd, KVM_GET_MP_STATE, b, `KVM_GET_MP_STATE on vCPU ${this.id}`);
    return b.readUInt32LE(0);
  }
  setMpState(state: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(state, 0);
    ioctl(this.fd, KVM_SET_MP_STATE, b, `KVM_SET_MP_STATE on vCPU ${this.id}`);
  }

  /** Unmap the run area and, if this handle owns it, close the fd. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    munmap(this.runMapping);
    if (this.ownsFd) close(this.fd);
  }
}
