/**
 * The DSDT's AML for a tsvmm guest: the devices an OS cannot discover by probing. Under \_SB
 * go the PCI host bridge, the legacy ISA devices (which Linux only binds through ACPI PNP IDs
 * once ACPI is on: the i8042 driver looks for PNP0303, rtc_cmos for PNP0B00), a motherboard
 * resource device reserving the ECAM window and the sleep/reset ports, and the virtio-mmio
 * devices; at the root, the \_S5 package that makes "poweroff" possible.
 */
// The devices' own files own their ports and IRQs; the DSDT describes what they decode.
import { I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KEYBOARD_IRQ } from '../../../devices/legacy/i8042.js';
import { RTC_IRQ, RTC_PORT_BASE, RTC_PORT_COUNT } from '../../../devices/legacy/rtc.js';
import { COM1_IRQ, COM1_PORT_BASE, SERIAL_PORT_COUNT } from '../../../devices/legacy/serial.js';
import { ECAM_BYTES_PER_BUS, PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT } from '../../../devices/pci/host-bridge.js';
import {
  type Aml,
  cid,
  concat,
  crs,
  device,
  dwordMemory,
  extendedInterrupt,
  hid,
  ioPort,
  irqNoFlags,
  memory32Fixed,
  name,
  type PciIntxRoute,
  prt,
  qwordMemory,
  type ResourceDescriptor,
  scope,
  sleepStateS5,
  sta,
  uid,
  wordBusNumber,
  wordIo,
} from './aml.js';
import { type AcpiLayout, SLEEP_RESET_BLOCK_SIZE } from './layout.js';
import { AcpiTableError } from './sdt.js';

/** A 16550-compatible UART on ISA ports. */
export interface AcpiSerialPort {
  readonly kind: 'serial';
  /** First of its 8 I/O ports. */
  readonly ioBase: number;
  /** ISA IRQ. */
  readonly irq: number;
}
/** The 8042 keyboard controller at ports 0x60 and 0x64 (keyboard only, no AUX/mouse port). */
export interface AcpiI8042 {
  readonly kind: 'i8042';
  /** Keyboard IRQ; 1 unless told. */
  readonly irq?: number;
}
/** The MC146818-style CMOS RTC at ports 0x70–0x71. */
export interface AcpiCmosRtc {
  readonly kind: 'rtc';
  /** Its alarm/update IRQ (8 unless told); null when the device model raises none. */
  readonly irq?: number | null;
}
export type AcpiLegacyDevice = AcpiSerialPort | AcpiI8042 | AcpiCmosRtc;

/** COM1: ports 0x3F8–0x3FF, IRQ 4 (the IBM PC assignment). */
export const COM1: AcpiSerialPort = { kind: 'serial', ioBase: COM1_PORT_BASE, irq: COM1_IRQ };
export const I8042: AcpiI8042 = { kind: 'i8042' };
export const CMOS_RTC: AcpiCmosRtc = { kind: 'rtc' };

/** A virtio-mmio transport (virtio 1.2 §4.2) the guest must be told about. */
export interface AcpiVirtioMmioDevice {
  readonly base: number;
  readonly size: number;
  readonly gsi: number;
  /** Edge unless told: an irqfd delivers a pulse (Firecracker describes its devices the same way). */
  readonly trigger?: 'edge' | 'level';
  /** Other devices use the same interrupt (declared Shared, so the OS lets their handlers share it). */
  readonly shared?: boolean;
}

/** An address window [base, base + size). */
export interface AcpiWindow {
  readonly base: number;
  readonly size: number;
}

/** The PCI host bridge of segment 0. */
export interface AcpiPciHostBridge {
  readonly busStart: number;
  readonly busEnd: number;
  /**
   * ECAM (MMCONFIG) base for the MCFG: the address of bus 0's configuration space. With it the
   * bridge is PCI Express (PNP0A08, compatible PNP0A03); without it, conventional PCI through
   * ports 0xCF8/0xCFC only (PNP0A03) and no MCFG.
   */
  readonly ecamBase?: number;
  /** I/O port window for BARs; 0xCF8–0xCFF is cut out of it (those are the config ports). */
  readonly ioWindow?: AcpiWindow;
  /** Memory window below 4 GiB. */
  readonly mmio32Window?: AcpiWindow;
  /** Memory window above 4 GiB (prefetchable BARs). */
  readonly mmio64Window?: AcpiWindow;
  /** INTx wiring for _PRT; empty when devices use MSI-X only. */
  readonly intxRoutes?: readonly PciIntxRoute[];
  /** Whether MSI/MSI-X may be used (IAPC_BOOT_ARCH). Default true. */
  readonly msi?: boolean;
}

/** Serial ports are named COM1..COM4. */
const MAX_SERIAL_PORTS = 4;
const FOUR_GIB = 0x1_0000_0000;

/** Plug and Play IDs (PNP ID registry; Linux drivers match on these). */
export const PNP_ID = {
  PCIE_HOST_BRIDGE: 'PNP0A08',
  PCI_HOST_BRIDGE: 'PNP0A03',
  UART_16550: 'PNP0501',
  PS2_KEYBOARD: 'PNP0303',
  CMOS_RTC: 'PNP0B00',
  MOTHERBOARD_RESOURCES: 'PNP0C02',
  /** virtio-mmio, as Linux's drivers/virtio/virtio_mmio.c matches it. */
  VIRTIO_MMIO: 'LNRO0005',
} as const;

export interface DsdtConfig {
  readonly layout: AcpiLayout;
  readonly pci?: AcpiPciHostBridge;
  readonly legacyDevices: readonly AcpiLegacyDevice[];
  readonly virtioMmioDevices: readonly AcpiVirtioMmioDevice[];
}

/** The AML definition block of the DSDT (without the table header). */
export function buildDsdtAml(config: DsdtConfig): Aml {
  const devices: Aml[] = [];
  if (config.pci !== undefined) devices.push(pciHostBridge(config.pci));
  devices.push(...legacyDevices(config.legacyDevices));
  devices.push(motherboardResources(config));
  config.virtioMmioDevices.forEach((d, i) => devices.push(virtioMmioDevice(d, i)));
  return concat([scope('\\_SB_', devices), sleepStateS5(config.layout.s5SleepType)]);
}

/** Size in bytes of the ECAM window for a bus range. */
export function ecamSize(pci: AcpiPciHostBridge): number {
  return (pci.busEnd + 1 - pci.busStart) * ECAM_BYTES_PER_BUS;
}

function pciHostBridge(pci: AcpiPciHostBridge): Aml {
  if (pci.busStart < 0 || pci.busEnd > 0xff || pci.busStart > pci.busEnd) {
    throw new AcpiTableError(`PCI bus range ${pci.busStart}..${pci.busEnd} must lie within 0..255`);
  }
  const resources: ResourceDescriptor[] = [
    wordBusNumber({ min: pci.busStart, length: pci.busEnd - pci.busStart + 1 }),
    // The config ports themselves are consumed by the bridge, not forwarded to its children.
    ioPort(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_ADDRESS_PORT, 1, PCI_CONFIG_PORT_COUNT),
  ];
  if (pci.ioWindow !== undefined) {
    for (const w of withoutConfigPorts(pci.ioWindow)) resources.push(wordIo({ min: w.base, length: w.size }));
  }
  if (pci.mmio32Window !== undefined) {
    const w = pci.mmio32Window;
    if (w.base + w.size > FOUR_GIB) throw new AcpiTableError('the 32-bit PCI memory window must end at or below 4 GiB');
    resources.push(dwordMemory({ min: w.base, length: w.size }, { cacheability: 'non-cacheable' }));
  }
  if (pci.mmio64Window !== undefined) {
    const w = pci.mmio64Window;
    resources.push(qwordMemory({ min: w.base, length: w.size }, { cacheability: 'prefetchable' }));
  }
  const pcie = pci.ecamBase !== undefined;
  return device('PCI0', [
    hid(pcie ? PNP_ID.PCIE_HOST_BRIDGE : PNP_ID.PCI_HOST_BRIDGE),
    ...(pcie ? [cid(PNP_ID.PCI_HOST_BRIDGE)] : []),
    // No _ADR: a device has a _HID or an _ADR, not both (ACPI 6.5 §6.1).
    name('_SEG', 0), // PCI segment group (§6.5.6)
    name('_BBN', pci.busStart), // base bus number (§6.5.5)
    uid(0),
    crs(resources),
    prt(pci.intxRoutes ?? []),
  ]);
}

/** The I/O window minus the configuration mechanism ports, as one or two ranges. */
export function withoutConfigPorts(window: AcpiWindow): AcpiWindow[] {
  const end = window.base + window.size;
  if (window.size <= 0 || end > 0x10000) throw new AcpiTableError('the PCI I/O window must be non-empty and within ports 0..0xFFFF');
  const holeStart = PCI_CONFIG_ADDRESS_PORT;
  const holeEnd = PCI_CONFIG_ADDRESS_PORT + PCI_CONFIG_PORT_COUNT;
  const out: AcpiWindow[] = [];
  if (window.base < holeStart) out.push({ base: window.base, size: Math.min(end, holeStart) - window.base });
  if (end > holeEnd) out.push({ base: Math.max(window.base, holeEnd), size: end - Math.max(window.base, holeEnd) });
  return out;
}

function legacyDevices(list: readonly AcpiLegacyDevice[]): Aml[] {
  const out: Aml[] = [];
  const serials = list.filter((d): d is AcpiSerialPort => d.kind === 'serial');
  if (serials.length > MAX_SERIAL_PORTS) throw new AcpiTableError(`at most ${MAX_SERIAL_PORTS} serial ports can be described`);
  if (list.filter((d) => d.kind === 'i8042').length > 1 || list.filter((d) => d.kind === 'rtc').length > 1) {
    throw new AcpiTableError('describe at most one i8042 and one RTC');
  }
  serials.forEach((s, i) => {
    out.push(
      device(`COM${i + 1}`, [
        hid(PNP_ID.UART_16550),
        uid(i + 1),
        sta(),
        crs([ioPort(s.ioBase, s.ioBase, SERIAL_PORT_COUNT, SERIAL_PORT_COUNT), irqNoFlags([s.irq])]),
      ]),
    );
  });
  for (const d of list) {
    if (d.kind === 'i8042') {
      out.push(
        device('KBD_', [
          hid(PNP_ID.PS2_KEYBOARD),
          uid(0),
          sta(),
          crs([
            ioPort(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1),
            ioPort(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1),
            irqNoFlags([d.irq ?? I8042_KEYBOARD_IRQ]),
          ]),
        ]),
      );
    } else if (d.kind === 'rtc') {
      const irq = d.irq === undefined ? RTC_IRQ : d.irq;
      out.push(
        device('RTC_', [
          hid(PNP_ID.CMOS_RTC),
          uid(0),
          sta(),
          crs([ioPort(RTC_PORT_BASE, RTC_PORT_BASE, 1, RTC_PORT_COUNT), ...(irq === null ? [] : [irqNoFlags([irq])])]),
        ]),
      );
    }
  }
  return out;
}

/**
 * PNP0C02 "motherboard resources": address ranges in use by the platform itself. Linux checks
 * the ECAM window against these before trusting the MCFG (arch/x86/pci/mmconfig-shared.c
 * pci_mmcfg_check_reserved), and reserves the listed ports so no driver claims them.
 */
function motherboardResources(config: DsdtConfig): Aml {
  const resources: ResourceDescriptor[] = [];
  const regs = config.layout.sleepResetRegisters;
  if (regs.space === 'io') {
    resources.push(ioPort(regs.address, regs.address, 1, SLEEP_RESET_BLOCK_SIZE));
  } else {
    resources.push(memory32Fixed(regs.address, SLEEP_RESET_BLOCK_SIZE));
  }
  const pci = config.pci;
  if (pci?.ecamBase !== undefined) {
    const start = pci.ecamBase + pci.busStart * ECAM_BYTES_PER_BUS;
    const size = ecamSize(pci);
    resources.push(
      start + size <= FOUR_GIB
        ? memory32Fixed(start, size)
        : qwordMemory({ min: start, length: size }, { usage: 'consumer', cacheability: 'non-cacheable' }),
    );
  }
  return device('MBRD', [hid(PNP_ID.MOTHERBOARD_RESOURCES), uid(0), crs(resources)]);
}

const MAX_VIRTIO_MMIO_DEVICES = 1000; // names V000..V999

function virtioMmioDevice(d: AcpiVirtioMmioDevice, index: number): Aml {
  if (index >= MAX_VIRTIO_MMIO_DEVICES) throw new AcpiTableError(`at most ${MAX_VIRTIO_MMIO_DEVICES} virtio-mmio devices can be described`);
  return device(`V${String(index).padStart(3, '0')}`, [
    hid(PNP_ID.VIRTIO_MMIO),
    uid(index),
    crs([
      memory32Fixed(d.base, d.size),
      extendedInterrupt([d.gsi], { trigger: d.trigger ?? 'edge', polarity: 'high', shared: d.shared ?? false }),
    ]),
  ]);
}
