/**
 * Plugs virtio devices into the running VMM over PCI: each device gets a virtio-pci transport on
 * PCI bus 0, an ioeventfd per queue so a guest's kick never stops its vCPU, and MSI-X messages
 * delivered by KVM.
 *
 * Queue notifications. Linux's virtio-pci modern driver kicks queue i with a 16-bit write of i to
 * the queue's notify address (vp_notify: iowrite16(vq->index, ...); virtio 1.2 §4.1.5.2, without
 * VIRTIO_F_NOTIFICATION_DATA). So each queue gets an MMIO ioeventfd with len 2 and datamatch i at
 * transport.queueNotifyAddress(i): KVM completes the write in the kernel, signals the eventfd and
 * resumes the vCPU; the EventFdPoller wakes the main thread, which runs the device's queue. The
 * address follows BAR 0: the transport reports every move (Linux clears memory decode while it
 * sizes BARs, and may reassign them) and the ioeventfds are moved with it. Any other write there
 * (another width or value, or one before the ioeventfd exists) still reaches the transport as an
 * ordinary MMIO exit, which notifies the same queue.
 *
 * Interrupts. Each MSI-X vector gets a GSI routed to the message the guest programmed in its table
 * entry (gsi-routing.ts keeps KVM's legacy routes in the table) and an irqfd on that GSI: raising
 * it is one eventfd write, and the same doorbell could later be rung from another thread or the
 * kernel (vhost) without the main thread. From the main thread it costs about what KVM_SIGNAL_MSI
 * does (one system call), which remains the fallback if KVM refuses a route.
 *
 * INTx fallback. A driver that does not enable MSI-X (Linux booted with `pci=nomsi`, or one whose
 * MSI-X setup failed) gets the legacy interrupt: each function's INTA is wired to an IOAPIC input
 * above the ISA range, PCI_INTX_FIRST_GSI + (slot - 1) mod PCI_INTX_GSI_COUNT, and intxRoutes
 * lists the wiring for the DSDT's _PRT. The line is level-triggered and follows the ISR (virtio
 * 1.2 §4.1.4.5); functions that share an input are ORed (SharedIrqLines), as on a real board.
 */
import type { PciIntxRoute } from '../arch/x86_64/acpi/aml.js';
import type { SharedIrqLines } from '../devices/irq.js';
import type { PciBus } from '../devices/pci/pci-bus.js';
import type { VirtioDevice } from '../devices/virtio/device.js';
import { VirtioPciDevice } from '../devices/virtio/pci-transport.js';
import { EventFd } from '../kvm/eventfd.js';
import type { IoeventfdSpec, Vm } from '../kvm/vm.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { EventFdPoller } from './eventfd-poller.js';
import { GsiRouter } from './gsi-routing.js';
import { IrqfdMsiSink } from './irqfd-msi-sink.js';

/** Width of the driver's queue notification write: the 16-bit queue index (virtio 1.2 §4.1.5.2). */
export const QUEUE_NOTIFY_WRITE_BYTES = 2;

/**
 * IOAPIC inputs for PCI INTx: 16–23, the pins above the 16 ISA IRQs on the 24-pin IOAPIC (82093AA
 * datasheet; KVM's in-kernel IOAPIC has 24 too, KVM_IOAPIC_NUM_PINS), as PC chipsets wire PIRQ lines.
 */
export const PCI_INTX_FIRST_GSI = 16;
export const PCI_INTX_GSI_COUNT = 8;
/** What the wiring needs from the VM (a narrow view, so tests can record the calls without KVM). */
export type VirtioPciVm = Pick<Vm, 'registerIoeventfd' | 'unregisterIoeventfd' | 'signalMsi' | 'setGsiRouting' | 'registerIrqfd' | 'unregisterIrqfd'>;

export interface VirtioPciWiringOptions {
  readonly vm: VirtioPciVm;
  readonly memory: GuestMemory;
  readonly pci: PciBus;
  readonly poller: EventFdPoller;
  /** The machine's IOAPIC inputs: gives each function an INTx line. Without it the interrupt pin reads 0. */
  readonly intx?: SharedIrqLines;
  /** Something went wrong that the guest will notice but the VMM survives (a device needing reset, a lost ioeventfd). */
  readonly onWarning?: (message: string) => void;
}

/** One plugged device: its transport and its queues' doorbells. */
interface Plugged {
  readonly transport: VirtioPciDevice;
  readonly doorbells: readonly EventFd[];
  /** The ioeventfd registered for each queue now, if any. */
  readonly registered: (IoeventfdSpec | undefined)[];
  readonly msi: IrqfdMsiSink;
  readonly slot: number;
}

export class VirtioPciDevices {
  /**
   * Queue notifications that arrived on an ioeventfd (the poller coalesces kicks that come before
   * it wakes). transport.notifications minus these came as MMIO exits.
   */
  doorbellWakeups = 0;
  private readonly plugged: Plugged[] = [];
  private readonly vm: VirtioPciVm;
  private readonly memory: GuestMemory;
  private readonly pci: PciBus;
  private readonly poller: EventFdPoller;
  private readonly warn: (message: string) => void;
  private readonly router: GsiRouter;
  private readonly intx: SharedIrqLines | undefined;
  private closed = false;

  constructor(options: VirtioPciWiringOptions) {
    this.vm = options.vm;
    this.memory = options.memory;
    this.pci = options.pci;
    this.poller = options.poller;
    this.warn = options.onWarning ?? (() => {});
    this.router = new GsiRouter(this.vm);
    this.intx = options.intx;
  }

  /** The IOAPIC input slot `slot`'s INTA is wired to. */
  static intxGsi(slot: number): number {
    return PCI_INTX_FIRST_GSI + ((slot - 1) % PCI_INTX_GSI_COUNT);
  }

  /** INTx wiring of the plugged functions, for the DSDT's _PRT (empty without `intx`). */
  get intxRoutes(): readonly PciIntxRoute[] {
    if (this.intx === undefined) return [];
    return this.plugged.map((p) => ({ device: p.slot, pin: 0, gsi: VirtioPciDevices.intxGsi(p.slot) }));
  }

  /** INTx assertions so far (low-to-high transitions of the IOAPIC inputs). */
  get intxRaises(): number {
    let n = 0;
    for (const gsi of new Set(this.intxRoutes.map((r) => r.gsi))) n += this.intx?.raises(gsi) ?? 0;
    return n;
  }

  /** Interrupts raised so far: through irqfds, and directly with KVM_SIGNAL_MSI (after a fallback). */
  get interrupts(): { irqfd: number; signalMsi: number } {
    let irqfd = 0;
    let signalMsi = 0;
    for (const p of this.plugged) {
      irqfd += p.msi.irqfdSignals;
      signalMsi += p.msi.directSignals;
    }
    return { irqfd, signalMsi };
  }

  /** The transports plugged so far, in slot order. */
  get transports(): readonly VirtioPciDevice[] {
    return this.plugged.map((p) => p.transport);
  }

  /** Put `device` on the PCI bus (the lowest free slot) with its doorbells and interrupts wired. */
  add(device: VirtioDevice): VirtioPciDevice {
    if (this.closed) throw new Error(`cannot add ${device.name}: the virtio devices are closed`);
    const doorbells = device.queueMaxSizes.map(() => new EventFd());
    const registered: (IoeventfdSpec | undefined)[] = doorbells.map(() => undefined);
    // One MSI-X vector per queue plus the configuration vector (pci-transport.ts).
    const msi = new IrqfdMsiSink(this.vm, this.router, device.queueMaxSizes.length + 1, device.name, this.warn);
    // The slot decides the INTx input, so it is chosen before the function is built.
    const slot = this.pci.freeSlot(device.name);
    const transport = new VirtioPciDevice(device, {
      memory: this.memory,
      msi,
      ...(this.intx !== undefined ? { intx: this.intx.input(VirtioPciDevices.intxGsi(slot)) } : {}),
      onNotifyRegionMoved: (t) => this.moveDoorbells(t, doorbells, registered),
      onError: (reason) => this.warn(`${device.name} needs a reset: ${reason}`),
    });
    try {
      doorbells.forEach((doorbell, queue) =>
        this.poller.add(
          doorbell,
          () => {
            this.doorbellWakeups++;
            transport.notifyQueue(queue);
          },
          { holdSafe: device.holdSafe === true },
        ),
      );
      this.plugged.push({ transport, doorbells, registered, msi, slot });
      // Placing BAR 0 maps it and calls moveDoorbells, which registers the ioeventfds.
      this.pci.addDevice(transport, slot);
    } catch (e) {
      this.release({ transport, doorbells, registered, msi, slot });
      const at = this.plugged.findIndex((p) => p.transport === transport);
      if (at >= 0) this.plugged.splice(at, 1);
      throw e;
    }
    return transport;
  }

  /** Unregister every ioeventfd and close the doorbells. Call after the vCPUs stopped, before the VM is closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.plugged) this.release(p);
  }

  /** BAR 0 moved or was unmapped: move each queue's ioeventfd to the queue's new notify address. */
  private moveDoorbells(transport: VirtioPciDevice, doorbells: readonly EventFd[], registered: (IoeventfdSpec | undefined)[]): void {
    for (let queue = 0; queue < doorbells.length; queue++) {
      const old = registered[queue];
      if (old !== undefined) {
        registered[queue] = undefined;
        this.unregister(old);
      }
      const addr = transport.queueNotifyAddress(queue);
      if (addr === undefined || this.closed) continue;
      const spec: IoeventfdSpec = { fd: doorbells[queue]!.fd, addr, len: QUEUE_NOTIFY_WRITE_BYTES, pio: false, datamatch: queue };
      try {
        this.vm.registerIoeventfd(spec);
        registered[queue] = spec;
      } catch (e) {
        // Kicks still work, as MMIO exits handled on the main thread: slower, not broken.
        this.warn(`${transport.name} queue ${queue}: no ioeventfd at 0x${addr.toString(16)}, kicks take the MMIO exit path: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  private unregister(spec: IoeventfdSpec): void {
    try {
      this.vm.unregisterIoeventfd(spec);
    } catch (e) {
      this.warn(`could not unregister the ioeventfd at 0x${spec.addr.toString(16)}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private release(p: Plugged): void {
    p.registered.forEach((spec, queue) => {
      if (spec !== undefined) this.unregister(spec);
      p.registered[queue] = undefined;
    });
    for (const doorbell of p.doorbells) {
      this.poller.remove(doorbell);
      doorbell.close();
    }
    p.msi.close();
  }
}
