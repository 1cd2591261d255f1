/**
 * Plugs virtio devices into the running VMM over the virtio-mmio transport (virtio 1.2 §4.2), for
 * kernels that prefer it to PCI: no PCI bus to scan, one 4 KiB page and one interrupt line per
 * device. The guest finds the devices in the DSDT (acpiDevices: an LNRO0005 device each, the ID
 * Linux's virtio_mmio driver matches, with the window and the interrupt in _CRS).
 *
 * Placement. Device i sits at PLATFORM_MMIO_START + i × VIRTIO_MMIO_SLOT_SIZE, a page each as in
 * Firecracker (MMIO_LEN 0x1000), so each could later be handed to KVM on its own.
 *
 * Queue notifications. Linux's vm_notify kicks queue i with a 32-bit write of i to QueueNotify
 * (§4.2.3.3), so each queue gets one MMIO ioeventfd (base + 0x050, length 4, datamatch i) and the
 * main thread runs the queue when the poller sees it; a kick that misses the ioeventfd arrives as
 * an ordinary MMIO exit and does the same.
 *
 * Interrupts. The transport's line is level-triggered: up while InterruptStatus is non-zero,
 * down once the driver acknowledged every bit. So it is described as Level, ActiveHigh and driven
 * with KVM_IRQ_LINE on an IOAPIC input from PCI_INTX_FIRST_GSI up. An edge-triggered line (as
 * Firecracker's irqfd pulse) would lose an interrupt raised between the driver reading
 * InterruptStatus and acknowledging it; a level stays up and the IOAPIC delivers it again after
 * the EOI. Beyond PCI_INTX_GSI_COUNT devices, inputs are shared (ORed, and declared Shared;
 * Linux's vm_interrupt is registered IRQF_SHARED).
 */
import type { AcpiVirtioMmioDevice } from '../arch/x86_64/acpi/dsdt.js';
import { PLATFORM_MMIO_SIZE, PLATFORM_MMIO_START } from '../arch/x86_64/layout.js';
import type { Bus } from '../devices/bus.js';
import type { SharedIrqLines } from '../devices/irq.js';
import type { VirtioDevice } from '../devices/virtio/device.js';
import { VIRTIO_MMIO_SIZE, VirtioMmioDevice } from '../devices/virtio/mmio-transport.js';
import { EventFd } from '../kvm/eventfd.js';
import type { IoeventfdSpec, Vm } from '../kvm/vm.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { EventFdPoller } from './eventfd-poller.js';
import { PCI_INTX_FIRST_GSI, PCI_INTX_GSI_COUNT } from './virtio-pci-wiring.js';

/** The page each device takes; its registers and configuration fill the first VIRTIO_MMIO_SIZE bytes. */
export const VIRTIO_MMIO_SLOT_SIZE = 0x1000;
/** Devices that fit the platform window (it also holds nothing else). */
export const MAX_VIRTIO_MMIO_DEVICES = Math.floor(PLATFORM_MMIO_SIZE / VIRTIO_MMIO_SLOT_SIZE);

/** What the wiring needs from the VM. */
export type VirtioMmioVm = Pick<Vm, 'registerIoeventfd' | 'unregisterIoeventfd'>;

export interface VirtioMmioWiringOptions {
  readonly vm: VirtioMmioVm;
  readonly memory: GuestMemory;
  readonly mmioBus: Bus;
  readonly poller: EventFdPoller;
  /** The machine's IOAPIC inputs (shared with PCI INTx, so devices on one input are ORed). */
  readonly irqLines: SharedIrqLines;
  readonly onWarning?: (message: string) => void;
}

interface Plugged {
  readonly transport: VirtioMmioDevice;
  readonly base: number;
  readonly gsi: number;
  readonly doorbells: readonly EventFd[];
  readonly registered: (IoeventfdSpec | undefined)[];
}

export class VirtioMmioDevices {
  /** Queue notifications that arrived on an ioeventfd. */
  doorbellWakeups = 0;
  private readonly plugged: Plugged[] = [];
  private closed = false;

  constructor(private readonly options: VirtioMmioWiringOptions) {}

  /** The transports plugged so far, in order (the guest's virtio0, virtio1, … as it probes them). */
  get transports(): readonly VirtioMmioDevice[] {
    return this.plugged.map((p) => p.transport);
  }

  /** Interrupt assertions so far (low-to-high transitions of the IOAPIC inputs). */
  get interrupts(): number {
    let n = 0;
    for (const gsi of new Set(this.plugged.map((p) => p.gsi))) n += this.options.irqLines.raises(gsi);
    return n;
  }

  /** The DSDT's description of every device: window, interrupt, trigger. */
  get acpiDevices(): readonly AcpiVirtioMmioDevice[] {
    const users = new Map<number, number>();
    for (const p of this.plugged) users.set(p.gsi, (users.get(p.gsi) ?? 0) + 1);
    return this.plugged.map((p) => ({ base: p.base, size: VIRTIO_MMIO_SLOT_SIZE, gsi: p.gsi, trigger: 'level', shared: (users.get(p.gsi) ?? 0) > 1 }));
  }

  /** Put `device` in the next page of the platform window with its doorbells and interrupt line wired. */
  add(device: VirtioDevice): VirtioMmioDevice {
    if (this.closed) throw new Error(`cannot add ${device.name}: the virtio devices are closed`);
    const index = this.plugged.length;
    if (index >= MAX_VIRTIO_MMIO_DEVICES) throw new RangeError(`at most ${MAX_VIRTIO_MMIO_DEVICES} virtio-mmio devices fit the platform window`);
    const base = PLATFORM_MMIO_START + index * VIRTIO_MMIO_SLOT_SIZE;
    const gsi = PCI_INTX_FIRST_GSI + (index % PCI_INTX_GSI_COUNT);
    const warn = this.options.onWarning ?? (() => {});
    const transport = new VirtioMmioDevice(device, {
      memory: this.options.memory,
      irq: this.options.irqLines.input(gsi),
      onError: (reason) => warn(`${device.name} needs a reset: ${reason}`),
    });
    const doorbells = device.queueMaxSizes.map(() => new EventFd());
    const registered: (IoeventfdSpec | undefined)[] = doorbells.map(() => undefined);
    const plugged: Plugged = { transport, base, gsi, doorbells, registered };
    try {
      this.options.mmioBus.insert(base, VIRTIO_MMIO_SIZE, transport, `${device.name} (virtio-mmio)`);
      this.plugged.push(plugged);
      for (const d of transport.queueDoorbells(base)) {
        const doorbell = doorbells[d.queue]!;
        this.options.poller.add(
          doorbell,
          () => {
            this.doorbellWakeups++;
            transport.notifyQueue(d.queue);
          },
          { holdSafe: device.holdSafe === true },
        );
        const spec: IoeventfdSpec = { fd: doorbell.fd, addr: d.addr, len: d.len, pio: false, datamatch: d.datamatch };
        try {
          this.options.vm.registerIoeventfd(spec);
          registered[d.queue] = spec;
        } catch (e) {
          warn(`${device.name} queue ${d.queue}: no ioeventfd, kicks take the MMIO exit path: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    } catch (e) {
      this.release(plugged);
      throw e;
    }
    return transport;
  }

  /** Unregister the ioeventfds and close the doorbells. Call after the vCPUs stopped, before the VM is closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.plugged) this.release(p);
  }

  private release(p: Plugged): void {
    p.registered.forEach((spec, queue) => {
      if (spec === undefined) return;
      p.registered[queue] = undefined;
      try {
        this.options.vm.unregisterIoeventfd(spec);
      } catch (e) {
        this.options.onWarning?.(`could not unregister the ioeventfd at 0x${spec.addr.toString(16)}: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
    for (const doorbell of p.doorbells) {
      this.options.poller.remove(doorbell);
      doorbell.close();
    }
  }
}
