/** A VM handle: memory slots, the in-kernel irqchip and PIT, interrupt injection, eventfds, vCPUs. */
import {
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_PIT2,
  KVM_CREATE_VCPU,
  KVM_IOEVENTFD,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
  KVM_IRQ_LINE,
  KVM_PIT_SPEAKER_DUMMY,
  KVM_SET_GSI_ROUTING,
  KVM_SET_IDENTITY_MAP_ADDR,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
  KVM_SIGNAL_MSI,
} from './constants.js';
import { close, ioctl, ioctlValue } from './libc.js';
import {
  encodeIoeventfd,
  encodeIrqLevel,
  encodeIrqRouting,
  encodeIrqfd,
  encodeMsi,
  encodePitConfig,
  encodeUserMemoryRegion,
  type IrqRoute,
  type Msi,
  type UserMemoryRegion,
} from './structs.js';
import { Vcpu } from './vcpu.js';

/** Where KVM should raise an eventfd when the guest writes: a port or an MMIO address. */
export interface IoeventfdSpec {
  /** The eventfd KVM signals. */
  fd: number;
  /** Port number (pio) or guest physical address. */
  addr: number;
  /** Access width that matches: 1, 2, 4 or 8 (0 matches any width for MMIO). */
  len: number;
  /** true for port I/O, false for MMIO. */
  pio: boolean;
  /** Only writes of exactly this value signal (virtio queue notify uses the queue index). */
  datamatch?: bigint | number;
}

/** Default places for the x86 TSS and identity-map pages: just below the 4 GiB BIOS area, as QEMU and Firecracker do. */
export const DEFAULT_TSS_ADDR = 0xfffb_d000;
export const DEFAULT_IDENTITY_MAP_ADDR = 0xfffb_c000;

export class Vm {
  private readonly irqLevelBuf = Buffer.alloc(8);
  private readonly msiBuf = Buffer.alloc(32);
  private closed = false;

  /** @param vcpuMmapSize KVM_GET_VCPU_MMAP_SIZE, needed to map each vCPU's run area. */
  constructor(
    readonly fd: number,
    readonly vcpuMmapSize: number,
  ) {}

  setUserMemoryRegion(region: UserMemoryRegion): void {
    ioctl(
      this.fd,
      KVM_SET_USER_MEMORY_REGION,
      encodeUserMemoryRegion(region),
      `register guest memory slot ${region.slot} at GPA 0x${region.guestPhysAddr.toString(16)} (${region.memorySize} bytes)`,
    );
  }

  /** The in-kernel PIC pair, IOAPIC and local APICs. Create before any vCPU. */
  createIrqchip(): void {
    ioctlValue(this.fd, KVM_CREATE_IRQCHIP, 0, 'KVM_CREATE_IRQCHIP (in-kernel PIC/IOAPIC/LAPIC)');
  }

  /** The in-kernel i8254 PIT, with a dummy speaker port so port 0x61 still works. Needs the irqchip. */
  createPit2(): void {
    ioctl(this.fd, KVM_CREATE_PIT2, encodePitConfig(KVM_PIT_SPEAKER_DUMMY), 'KVM_CREATE_PIT2 (in-kernel i8254 timer)');
  }

  /** Three pages of guest physical space KVM uses for the real-mode TSS on Intel; harmless on AMD, so always set. */
  setTssAddr(addr = DEFAULT_TSS_ADDR): void {
    ioctlValue(this.fd, KVM_SET_TSS_ADDR, addr, `KVM_SET_TSS_ADDR 0x${addr.toString(16)}`);
  }

  /** One page KVM uses for the identity-mapped page table of unrestricted-guest-less Intel CPUs. */
  setIdentityMapAddr(addr = DEFAULT_IDENTITY_MAP_ADDR): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(addr));
    ioctl(this.fd, KVM_SET_IDENTITY_MAP_ADDR, b, `KVM_SET_IDENTITY_MAP_ADDR 0x${addr.toString(16)}`);
  }

  /** Drive an irqchip input (GSI) high or low. */
  irqLine(gsi: number, level: boolean): void {
    ioctl(this.fd, KVM_IRQ_LINE, encodeIrqLevel(gsi, level ? 1 : 0, this.irqLevelBuf), `KVM_IRQ_LINE gsi ${gsi}`);
  }

  /** Inject one MSI. Returns true if delivered, false if the guest had it masked/blocked (KVM returns 0). */
  signalMsi(msi: Msi): boolean {
    return ioctl(this.fd, KVM_SIGNAL_MSI, encodeMsi(msi, this.msiBuf), 'KVM_SIGNAL_MSI') > 0;
  }

  /** Replace the whole GSI routing table (KVM has no incremental update). */
  setGsiRouting(routes: readonly IrqRoute[]): void {
    ioctl(this.fd, KVM_SET_GSI_ROUTING, encodeIrqRouting(routes), `KVM_SET_GSI_ROUTING (${routes.length} routes)`);
  }

  registerIoeventfd(spec: IoeventfdSpec): void {
    this.ioeventfd(spec, 0, 'register');
  }
  unregisterIoeventfd(spec: IoeventfdSpec): void {
    this.ioeventfd(spec, KVM_IOEVENTFD_FLAG_DEASSIGN, 'unregister');
  }
  private ioeventfd(spec: IoeventfdSpec, extraFlags: number, verb: string): void {
    let flags = extraFlags;
    if (spec.pio) flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (spec.datamatch !== undefined) flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    const where = spec.pio ? `port 0x${spec.addr.toString(16)}` : `MMIO 0x${spec.addr.toString(16)}`;
    ioctl(
      this.fd,
      KVM_IOEVENTFD,
      encodeIoeventfd({ datamatch: BigInt(spec.datamatch ?? 0), addr: spec.addr, len: spec.len, fd: spec.fd, flags }),
      `${verb} ioeventfd ${spec.fd} on ${where}/${spec.len}`,
    );
  }

  /**
   * Make signalling `fd` assert `gsi`. With `resampleFd`, the line is level-triggered: KVM
   * deasserts it on guest EOI and signals `resampleFd` so the device can re-raise it.
   */
  registerIrqfd(fd: number, gsi: number, resampleFd?: number): void {
    const flags = resampleFd === undefined ? 0 : KVM_IRQFD_FLAG_RESAMPLE;
    ioctl(this.fd, KVM_IRQFD, encodeIrqfd({ fd, gsi, flags, resamplefd: resampleFd ?? 0 }), `register irqfd ${fd} for gsi ${gsi}`);
  }
  unregisterIrqfd(fd: number, gsi: number): void {
    ioctl(this.fd, KVM_IRQFD, encodeIrqfd({ fd, gsi, flags: KVM_IRQFD_FLAG_DEASSIGN, resamplefd: 0 }), `unregister irqfd ${fd} for gsi ${gsi}`);
  }

  createVcpu(id: number): Vcpu {
    const fd = ioctlValue(this.fd, KVM_CREATE_VCPU, id, `KVM_CREATE_VCPU ${id}`);
    return Vcpu.adopt(id, fd, this.vcpuMmapSize);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
