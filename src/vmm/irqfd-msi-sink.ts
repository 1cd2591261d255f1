/**
 * MSI-X delivery through KVM for one PCI function (the VMM's MsiSink): per-vector GSI routes and
 * irqfds, with KVM_SIGNAL_MSI as the fallback.
 */
import type { MsiSink } from '../devices/pci/msix.js';
import { EventFd } from '../kvm/eventfd.js';
import type { Msi } from '../kvm/structs.js';
import type { Vm } from '../kvm/vm.js';
import type { GsiRouter } from './gsi-routing.js';

/** What MSI delivery needs from the VM. */
export type MsiVm = Pick<Vm, 'signalMsi' | 'registerIrqfd' | 'unregisterIrqfd'>;

/**
 * MSI-X delivery for one function: each vector gets a GSI routed to its message and an irqfd on
 * that GSI, so raising it is one eventfd write. The route is checked against the message at every
 * delivery (three number compares) and rewritten when the guest reprogrammed the entry, e.g. on an
 * IRQ affinity change; that rewrite is the only slow path. Routes and irqfds are made lazily, on
 * a vector's first delivery. If KVM refuses (no GSI left, routing not supported), the function
 * falls back to KVM_SIGNAL_MSI with the same message, from one reused struct.
 */
export class IrqfdMsiSink implements MsiSink {
  /** Irqfds raised (for tests and metrics). */
  irqfdSignals = 0;
  /** Messages sent with KVM_SIGNAL_MSI after a fallback. */
  directSignals = 0;
  private readonly gsis: Int32Array;
  private readonly irqfds: (EventFd | undefined)[];
  private readonly msi: Msi = { addressLo: 0, addressHi: 0, data: 0 };
  private useIrqfds = true;

  constructor(
    private readonly vm: MsiVm,
    private readonly router: GsiRouter,
    vectors: number,
    private readonly name: string,
    private readonly warn: (message: string) => void,
  ) {
    this.gsis = new Int32Array(vectors).fill(-1);
    this.irqfds = new Array<EventFd | undefined>(vectors).fill(undefined);
  }

  signal(vector: number, addressLow: number, addressHigh: number, data: number): void {
    if (this.useIrqfds && vector < this.gsis.length) {
      try {
        let gsi = this.gsis[vector]!;
        let irqfd = this.irqfds[vector];
        if (gsi < 0 || irqfd === undefined) {
          gsi = this.router.allocateMsiGsi();
          this.gsis[vector] = gsi;
          this.router.setMsiRoute(gsi, addressLow, addressHigh, data);
          irqfd = new EventFd();
          try {
            this.vm.registerIrqfd(irqfd.fd, gsi);
          } catch (e) {
            irqfd.close();
            throw e;
          }
          this.irqfds[vector] = irqfd;
        } else {
          this.router.setMsiRoute(gsi, addressLow, addressHigh, data);
        }
        irqfd.signal();
        this.irqfdSignals++;
        return;
      } catch (e) {
        this.useIrqfds = false;
        this.warn(`${this.name}: MSI-X through irqfd failed, using KVM_SIGNAL_MSI: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.signalDirect(addressLow, addressHigh, data);
  }

  /** Unregister the irqfds and drop their routes; later messages (if any) go through KVM_SIGNAL_MSI. */
  close(): void {
    this.useIrqfds = false;
    for (let vector = 0; vector < this.irqfds.length; vector++) {
      const irqfd = this.irqfds[vector];
      const gsi = this.gsis[vector]!;
      if (irqfd === undefined || gsi < 0) continue;
      try {
        this.vm.unregisterIrqfd(irqfd.fd, gsi);
        this.router.removeMsiRoute(gsi);
      } catch (e) {
        this.warn(`${this.name}: could not unregister the irqfd of vector ${vector}: ${e instanceof Error ? e.message : String(e)}`);
      }
      irqfd.close();
      this.irqfds[vector] = undefined;
      this.gsis[vector] = -1;
    }
  }

  private signalDirect(addressLow: number, addressHigh: number, data: number): void {
    const msi = this.msi;
    msi.addressLo = addressLow;
    msi.addressHi = addressHigh;
    msi.data = data;
    try {
      // false means the guest's APIC did not accept it (e.g. no such destination): nothing to do, as on hardware.
      this.vm.signalMsi(msi);
      this.directSignals++;
    } catch (e) {
      this.warn(`${this.name}: MSI delivery failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
