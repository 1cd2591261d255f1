/**
 * PCI bus 0: functions by slot, BAR placement in the MMIO windows, and the mapping of BARs onto
 * the VMM's MMIO Bus.
 *
 * Placement is what firmware does before the OS starts: each memory BAR gets a size-aligned
 * address from a window, memory decode is switched on, and Linux then claims those addresses
 * (pcibios_resource_survey) instead of assigning its own. Prefetchable 64-bit BARs go to the
 * 64-bit window when there is one (the DSDT describes that window as prefetchable, and Linux
 * refuses to claim a non-prefetchable BAR inside a prefetchable window); everything else goes to
 * the 32-bit window.
 *
 * Mapping follows the guest: after every configuration write the bus compares each BAR's
 * address and the command register's Memory Space bit with what is on the MMIO Bus and moves
 * the range. Linux clears Memory Space while it sizes BARs (__pci_read_base), so the all-ones
 * sizing pattern is never mapped. A guest that points a BAR over another device's range gets an
 * unmapped BAR (counted in barConflicts), not an exception.
 *
 * Only function 0 of each slot is populated (single-function devices); slot 0 holds the host bridge.
 */
import type { Bus, BusDevice } from '../bus.js';
import { PCI_COMMAND, PCI_COMMAND_MEMORY, PCI_CONFIG_SPACE_SIZE } from './config-space.js';
import { PCI_DEVICES_PER_BUS, PciHostBridge } from './host-bridge.js';
import type { PciConfigAccess, PciFunction } from './pci-function.js';

/** A window of guest physical addresses [start, start + size) that BARs are placed in. */
export interface PciWindow {
  readonly start: number;
  readonly size: number;
}

/** The windows must be the ones the DSDT's PCI0 _CRS announces (arch/x86_64/layout.ts PCI_MMIO32_*), or Linux reassigns every BAR. */
export interface PciBusOptions {
  /** The MMIO Bus BARs are mapped on. */
  readonly mmio: Bus;
  /** Window below 4 GiB for 32-bit and non-prefetchable BARs. */
  readonly mmio32Window: PciWindow;
  /** Optional window above 4 GiB for prefetchable 64-bit BARs. */
  readonly mmio64Window?: PciWindow;
}

/** Where a function sits: bus 0, its slot (device number), function 0. */
export interface PciAddress {
  readonly bus: number;
  readonly device: number;
  readonly function: number;
}

interface Slot {
  readonly fn: PciFunction;
  /** Current MMIO Bus base of each BAR index, undefined while unmapped. */
  readonly mapped: (number | undefined)[];
  /** One BusDevice per BAR, made once, forwarding to the function with the BAR index. */
  readonly adapters: (BusDevice | undefined)[];
}

export class PciBus implements PciConfigAccess {
  readonly hostBridge = new PciHostBridge();
  /** BAR mappings refused because the guest placed a BAR over another range. */
  barConflicts = 0;
  private readonly mmio: Bus;
  private readonly slots: (Slot | undefined)[] = new Array<Slot | undefined>(PCI_DEVICES_PER_BUS).fill(undefined);
  private readonly next32: { cursor: number; end: number };
  private readonly next64: { cursor: number; end: number } | undefined;

  constructor(options: PciBusOptions) {
    this.mmio = options.mmio;
    this.next32 = windowCursor(options.mmio32Window, '32-bit');
    this.next64 = options.mmio64Window === undefined ? undefined : windowCursor(options.mmio64Window, '64-bit');
    this.addDevice(this.hostBridge, 0);
  }

  /**
   * Plug `fn` into `slot` (the lowest free one by default), place its BARs and enable memory
   * decode. Throws when the bus or a window is full: that is a VMM configuration error.
   */
  addDevice(fn: PciFunction, slot?: number): PciAddress {
    const device = slot ?? this.freeSlot(fn.name);
    if (!Number.isInteger(device) || device >= PCI_DEVICES_PER_BUS) throw new RangeError(`PCI slot ${device} does not exist`);
    if (this.slots[device] !== undefined) throw new RangeError(`PCI slot ${device} is taken by ${this.slots[device]!.fn.name}`);
    const adapters: (BusDevice | undefined)[] = [];
    for (const bar of fn.config.memoryBars()) {
      fn.config.setBarAddress(bar.index, this.allocate(bar.size, bar.is64Bit && bar.prefetchable, fn.name));
      const index = bar.index;
      adapters[index] = {
        read: (offset, data) => fn.readBar(index, offset, data),
        write: (offset, data) => fn.writeBar(index, offset, data),
      };
    }
    const entry: Slot = { fn, mapped: [], adapters };
    this.slots[device] = entry;
    if (adapters.length > 0) {
      fn.config.setU16(PCI_COMMAND, fn.config.command | PCI_COMMAND_MEMORY);
      this.refreshMappings(entry);
    }
    return { bus: 0, device, function: 0 };
  }

  /** The lowest free slot, where addDevice puts a function by default; throws when the bus is full. */
  freeSlot(adding: string): number {
    const slot = this.slots.findIndex((s) => s === undefined);
    if (slot < 0) throw new RangeError(`PCI bus 0 is full (${PCI_DEVICES_PER_BUS} slots) adding ${adding}`);
    return slot;
  }

  /** The function in `slot`, if any. */
  functionAt(slot: number): PciFunction | undefined {
    return this.slots[slot]?.fn;
  }

  /** Populated slots and their functions. */
  devices(): { slot: number; fn: PciFunction }[] {
    const out: { slot: number; fn: PciFunction }[] = [];
    this.slots.forEach((s, slot) => s !== undefined && out.push({ slot, fn: s.fn }));
    return out;
  }

  readConfig(bus: number, device: number, fn: number, offset: number, data: Uint8Array): void {
    const entry = this.lookup(bus, device, fn);
    if (entry === undefined || offset < 0 || offset + data.length > PCI_CONFIG_SPACE_SIZE) {
      data.fill(0xff);
      return;
    }
    entry.fn.config.read(offset, data);
  }

  writeConfig(bus: number, device: number, fn: number, offset: number, data: Uint8Array): void {
    const entry = this.lookup(bus, device, fn);
    if (entry === undefined || offset < 0 || offset + data.length > PCI_CONFIG_SPACE_SIZE) return;
    entry.fn.config.write(offset, data);
    if (entry.adapters.length > 0) this.refreshMappings(entry);
  }

  private lookup(bus: number, device: number, fn: number): Slot | undefined {
    if (bus !== 0 || fn !== 0 || device < 0 || device >= PCI_DEVICES_PER_BUS) return undefined;
    return this.slots[device];
  }

  /** Bring the MMIO Bus in line with the function's BAR registers and Memory Space bit. */
  private refreshMappings(entry: Slot): void {
    const { fn } = entry;
    const decode = fn.config.memoryDecodeEnabled;
    for (const bar of fn.config.memoryBars()) {
      const address = fn.config.barAddress(bar.index);
      const wanted = decode && address !== undefined && Number.isSafeInteger(address + bar.size) ? address : undefined;
      const current = entry.mapped[bar.index];
      if (wanted === current) continue;
      if (current !== undefined) this.mmio.remove(current);
      entry.mapped[bar.index] = undefined;
      if (wanted !== undefined) {
        try {
          this.mmio.insert(wanted, bar.size, entry.adapters[bar.index]!, `${fn.name} BAR${bar.index}`);
          entry.mapped[bar.index] = wanted;
        } catch {
          // Overlap with another range (or an address the Bus refuses): leave the BAR unmapped.
          this.barConflicts++;
        }
      }
      fn.barMapped?.(bar.index, entry.mapped[bar.index]);
    }
  }

  private allocate(size: number, high: boolean, name: string): number {
    const window = high && this.next64 !== undefined ? this.next64 : this.next32;
    const start = Math.ceil(window.cursor / size) * size;
    if (start + size > window.end) throw new RangeError(`no room for a ${size}-byte BAR of ${name} in the PCI MMIO window`);
    window.cursor = start + size;
    return start;
  }
}

function windowCursor(window: PciWindow, what: string): { cursor: number; end: number } {
  if (!Number.isSafeInteger(window.start) || !Number.isSafeInteger(window.size) || window.start < 0 || window.size <= 0) {
    throw new RangeError(`invalid ${what} PCI window: start ${window.start}, size ${window.size}`);
  }
  return { cursor: window.start, end: window.start + window.size };
}
