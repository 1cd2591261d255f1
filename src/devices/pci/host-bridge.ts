/**
 * The PCI host bridge: function 0:00.0 itself, and the two ways the guest reaches configuration
 * space through it.
 *
 * - Configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): a 32-bit CONFIG_ADDRESS register
 *   at port 0xCF8 (enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2) and the
 *   CONFIG_DATA window at ports 0xCFC–0xCFF. Linux probes it without ACPI (pci_check_type1 in
 *   arch/x86/pci/direct.c writes 0x80000000 to 0xCF8 and expects to read it back, then looks
 *   for a host bridge class or a known vendor on bus 0).
 * - ECAM, the PCI Express enhanced configuration access mechanism (PCI Express Base 6.0 §7.2.2):
 *   4 KiB of configuration space per function at base + (bus << 20 | device << 15 | function << 12),
 *   described to the guest by the ACPI MCFG table (PCI Firmware spec 3.3 §4.1.2).
 *
 * Both go to the same PciConfigAccess (the PciBus), so they always agree.
 */
import type { BusDevice } from '../bus.js';
import { PCI_CONFIG_SPACE_SIZE, PciConfigSpace } from './config-space.js';
import type { PciConfigAccess, PciFunction } from './pci-function.js';

/** Ports of configuration mechanism #1: CONFIG_ADDRESS at 0xCF8, CONFIG_DATA at 0xCFC (PCI Local Bus 3.0 §3.2.2.3.2). */
export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
export const PCI_CONFIG_DATA_PORT = 0xcfc;
/** The BusDevice below decodes both registers: ports 0xCF8–0xCFF. */
export const PCI_CONFIG_PORT_COUNT = 8;
const DATA_OFFSET = PCI_CONFIG_DATA_PORT - PCI_CONFIG_ADDRESS_PORT;
const DWORD = 4;

// CONFIG_ADDRESS fields (PCI Local Bus 3.0 §3.2.2.3.2, Figure 3-2).
const CONFIG_ADDRESS_ENABLE = 0x8000_0000;
/** Bits 30:24 are reserved (read as 0) and bits 1:0 are hard-wired to 0. */
const CONFIG_ADDRESS_WRITABLE = 0x80ff_fffc;
const ADDRESS_BUS_SHIFT = 16;
const ADDRESS_DEVICE_SHIFT = 11;
const ADDRESS_FUNCTION_SHIFT = 8;
const ADDRESS_REGISTER_MASK = 0xfc;

// ECAM address fields (PCI Express Base 6.0 §7.2.2, Table 7-1).
export const ECAM_BYTES_PER_FUNCTION = 4096;
export const ECAM_BYTES_PER_BUS = 1 << 20;
const ECAM_BUS_SHIFT = 20;
const ECAM_DEVICE_SHIFT = 15;
const ECAM_FUNCTION_SHIFT = 12;

export const PCI_DEVICES_PER_BUS = 32;
export const PCI_FUNCTIONS_PER_DEVICE = 8;

/**
 * IDs of the host bridge: Red Hat's "PCIe host bridge" (vendor 0x1b36, device 0x0008, as QEMU's
 * generic host bridge uses them; PCI SIG vendor list), class 06/00/00 = bridge, host bridge
 * (PCI Code and ID Assignment spec §1.7). The class is what Linux's pci_sanity_check looks for.
 */
export const HOST_BRIDGE_VENDOR_ID = 0x1b36;
export const HOST_BRIDGE_DEVICE_ID = 0x0008;
export const PCI_CLASS_BRIDGE_HOST = 0x060000;

/** Function 0:00.0: a host bridge with no BARs, present so the guest recognises a PCI bus. */
export class PciHostBridge implements PciFunction {
  readonly name = 'host-bridge';
  readonly config = new PciConfigSpace({
    vendorId: HOST_BRIDGE_VENDOR_ID,
    deviceId: HOST_BRIDGE_DEVICE_ID,
    revisionId: 0,
    classCode: PCI_CLASS_BRIDGE_HOST,
    subsystemVendorId: HOST_BRIDGE_VENDOR_ID,
    subsystemId: HOST_BRIDGE_DEVICE_ID,
  });
  readBar(_bar: number, _offset: number, _data: Uint8Array): void {}
  writeBar(_bar: number, _offset: number, _data: Uint8Array): void {}
}

/**
 * Configuration mechanism #1 as a port-I/O BusDevice for ports 0xCF8–0xCFF.
 * Only DWORD accesses at 0xCF8 reach CONFIG_ADDRESS (§3.2.2.3.2: "other accesses pass through as
 * normal I/O"): byte and word accesses there read all-ones and are dropped, as an unclaimed port.
 */
export class PciConfigPorts implements BusDevice {
  private address = 0;

  constructor(private readonly target: PciConfigAccess) {}

  read(offset: number, data: Uint8Array): void {
    if (offset === 0 && data.length === DWORD) {
      writeLe32(data, this.address);
      return;
    }
    if (offset < DATA_OFFSET) {
      data.fill(0xff);
      return;
    }
    const within = offset - DATA_OFFSET;
    if (!this.dataAccessValid(within, data.length)) {
      data.fill(0xff);
      return;
    }
    this.target.readConfig(...this.decode(), (this.address & ADDRESS_REGISTER_MASK) + within, data);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset === 0 && data.length === DWORD) {
      this.address = (readLe32(data) & CONFIG_ADDRESS_WRITABLE) >>> 0;
      return;
    }
    if (offset < DATA_OFFSET) return;
    const within = offset - DATA_OFFSET;
    if (!this.dataAccessValid(within, data.length)) return;
    this.target.writeConfig(...this.decode(), (this.address & ADDRESS_REGISTER_MASK) + within, data);
  }

  /** CONFIG_DATA accesses must be enabled and stay within the selected DWORD. */
  private dataAccessValid(within: number, width: number): boolean {
    return (this.address & CONFIG_ADDRESS_ENABLE) !== 0 && width > 0 && within + width <= DWORD;
  }

  private decode(): [number, number, number] {
    const a = this.address;
    return [(a >>> ADDRESS_BUS_SHIFT) & 0xff, (a >>> ADDRESS_DEVICE_SHIFT) & 0x1f, (a >>> ADDRESS_FUNCTION_SHIFT) & 0x7];
  }
}

/**
 * ECAM as an MMIO BusDevice covering `busCount` buses from bus 0 (register it at the MCFG base).
 * Functions here have 256 bytes of conventional configuration space; the extended space
 * 0x100–0xFFF of a present function reads 0, which is an empty extended capability list
 * (PCI Express Base 6.0 §7.6.3: a header of 0 means no extended capabilities).
 * Accesses wider than a DWORD or crossing one are split into bytes, so nothing is left undefined.
 */
export class PciEcam implements BusDevice {
  readonly size: number;
  private readonly byte = new Uint8Array(1);
  private readonly vendor = new Uint8Array(2);

  constructor(
    private readonly target: PciConfigAccess,
    readonly busCount = 1,
  ) {
    if (!Number.isInteger(busCount) || busCount < 1 || busCount > 256) throw new RangeError(`ECAM covers 1..256 buses, got ${busCount}`);
    this.size = busCount * ECAM_BYTES_PER_BUS;
  }

  read(offset: number, data: Uint8Array): void {
    if (this.naturalDword(offset, data.length)) {
      this.readAt(offset, data);
      return;
    }
    for (let i = 0; i < data.length; i++) {
      this.readAt(offset + i, this.byte);
      data[i] = this.byte[0]!;
    }
  }

  write(offset: number, data: Uint8Array): void {
    if (this.naturalDword(offset, data.length)) {
      this.writeAt(offset, data);
      return;
    }
    for (let i = 0; i < data.length; i++) {
      this.byte[0] = data[i]!;
      this.writeAt(offset + i, this.byte);
    }
  }

  private naturalDword(offset: number, width: number): boolean {
    return width <= DWORD && (offset % DWORD) + width <= DWORD;
  }

  private readAt(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset >= this.size) {
      data.fill(0xff);
      return;
    }
    const [bus, device, fn, register] = decodeEcam(offset);
    if (register >= PCI_CONFIG_SPACE_SIZE) {
      // Extended space: all-ones for an absent function (vendor ID 0xFFFF), zeros for a present one.
      this.target.readConfig(bus, device, fn, 0, this.vendor);
      data.fill(this.vendor[0] === 0xff && this.vendor[1] === 0xff ? 0xff : 0);
      return;
    }
    this.target.readConfig(bus, device, fn, register, data);
  }

  private writeAt(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset >= this.size) return;
    const [bus, device, fn, register] = decodeEcam(offset);
    if (register >= PCI_CONFIG_SPACE_SIZE) return;
    this.target.writeConfig(bus, device, fn, register, data);
  }
}

function decodeEcam(offset: number): [number, number, number, number] {
  return [
    (offset >>> ECAM_BUS_SHIFT) & 0xff,
    (offset >>> ECAM_DEVICE_SHIFT) & 0x1f,
    (offset >>> ECAM_FUNCTION_SHIFT) & 0x7,
    offset & (ECAM_BYTES_PER_FUNCTION - 1),
  ];
}

function readLe32(data: Uint8Array): number {
  return (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
}

function writeLe32(data: Uint8Array, value: number): void {
  data[0] = value & 0xff;
  data[1] = (value >>> 8) & 0xff;
  data[2] = (value >>> 16) & 0xff;
  data[3] = (value >>> 24) & 0xff;
}
