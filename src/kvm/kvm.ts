/** The /dev/kvm handle: API version and capability checks, supported CPUID, VM creation. */
import {
  KVM_API_VERSION,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_VM,
  KVM_GET_API_VERSION,
  KVM_GET_SUPPORTED_CPUID,
  KVM_GET_VCPU_MMAP_SIZE,
  KvmCap,
  REQUIRED_CAPS,
  type KvmCapName,
} from './constants.js';
import { KvmApiVersionError, KvmCapabilityError, KvmUnavailableError } from './errors.js';
import { O_CLOEXEC, O_RDWR, SystemCallError, close, errno, ioctl, ioctlValue, ioctlValueRaw, open } from './libc.js';
import { decodeCpuid2, encodeCpuid2, type CpuidEntry } from './structs.js';
import { Vm } from './vm.js';

export class Kvm {
  /** KVM_GET_VCPU_MMAP_SIZE: length of each vCPU's run-area mapping. */
  readonly vcpuMmapSize: number;
  private closed = false;

  private constructor(readonly fd: number) {
    this.vcpuMmapSize = ioctlValue(fd, KVM_GET_VCPU_MMAP_SIZE, 0, 'KVM_GET_VCPU_MMAP_SIZE');
  }

  /**
   * Open /dev/kvm and check it is usable: API version 12 and every capability in
   * REQUIRED_CAPS. Throws KvmUnavailableError, KvmApiVersionError or KvmCapabilityError.
   */
  static open(path = '/dev/kvm', requiredCaps: readonly KvmCapName[] = REQUIRED_CAPS): Kvm {
    let fd: number;
    try {
      fd = open(path, O_RDWR | O_CLOEXEC);
    } catch (e) {
      if (e instanceof SystemCallError) throw new KvmUnavailableError(path, e.code);
      throw e;
    }
    try {
      const version = ioctlValue(fd, KVM_GET_API_VERSION, 0, 'KVM_GET_API_VERSION');
      if (version !== KVM_API_VERSION) throw new KvmApiVersionError(version);
      const kvm = new Kvm(fd);
      for (const cap of requiredCaps) {
        if (kvm.checkExtension(cap) <= 0) throw new KvmCapabilityError(cap);
      }
      return kvm;
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /** KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific positive value. */
  checkExtension(cap: KvmCapName | number): number {
    const num = typeof cap === 'number' ? cap : KvmCap[cap];
    const r = ioctlValueRaw(this.fd, KVM_CHECK_EXTENSION, num);
    return r < 0 ? 0 : r;
  }

  /** The CPUID leaves KVM can expose on this host (the base to build a guest's CPUID from). */
  getSupportedCpuid(): CpuidEntry[] {
    // The kernel answers E2BIG when the buffer is too small; grow until it fits.
    for (let capacity = 128; capacity <= 4096; capacity *= 2) {
      const b = encodeCpuid2([], capacity);
      try {
        ioctl(this.fd, KVM_GET_SUPPORTED_CPUID, b, 'KVM_GET_SUPPORTED_CPUID');
        return decodeCpuid2(b);
      } catch (e) {
        if (e instanceof SystemCallError && e.errno === errno.E2BIG) continue;
        throw e;
      }
    }
    throw new Error('KVM_GET_SUPPORTED_CPUID: more than 4096 entries, which no real CPU has');
  }

  /** Create an empty VM (no memory, no irqchip, no vCPUs). */
  createVm(): Vm {
    const fd = ioctlValue(this.fd, KVM_CREATE_VM, 0, 'KVM_CREATE_VM');
    return new Vm(fd, this.vcpuMmapSize);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
