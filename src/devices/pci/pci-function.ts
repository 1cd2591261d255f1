/**
 * What the PCI bus needs from a device model: its configuration space and its memory BARs.
 * The bus (pci-bus.ts) places the BARs on the MMIO bus while the function's memory decode is
 * enabled and forwards accesses to them here, as offsets within the BAR.
 */
import type { PciConfigSpace } from './config-space.js';

export interface PciFunction {
  /** Short name for bus listings and messages ("virtio-rng", "host-bridge"). */
  readonly name: string;
  readonly config: PciConfigSpace;
  /** A guest read of memory BAR `bar` (the lower index of a 64-bit BAR) at `offset` within it. */
  readBar(bar: number, offset: number, data: Uint8Array): void;
  /** A guest write of memory BAR `bar` at `offset` within it. */
  writeBar(bar: number, offset: number, data: Uint8Array): void;
  /**
   * The bus mapped BAR `bar` at guest physical `address`, or unmapped it (undefined): the guest
   * moved it or switched memory decode. The VMM uses this to move ioeventfds with the BAR.
   */
  barMapped?(bar: number, address: number | undefined): void;
}

/** Configuration access by bus/device/function, as both configuration mechanisms need it. */
export interface PciConfigAccess {
  /** Fill `data` from the function's configuration space; absent functions read all-ones. */
  readConfig(bus: number, device: number, fn: number, offset: number, data: Uint8Array): void;
  /** Write the function's configuration space; writes to absent functions are dropped. */
  writeConfig(bus: number, device: number, fn: number, offset: number, data: Uint8Array): void;
}
