/**
 * Writers for the ACPI tables a tsvmm guest gets: RSDP, XSDT, FADT, MADT, MCFG and DSDT.
 * Each returns the table's bytes with its header and checksum(s) filled in; where tables go in
 * guest memory is `buildAcpiTables`'s job (build.ts).
 *
 * References: ACPI 6.5 §5.2 (ACPI System Description Tables) and the PCI Firmware Specification
 * 3.3 §4.1.2 (MCFG).
 */
import type { Aml } from './aml.js';
import {
  AcpiTableError,
  type AcpiTableIdentity,
  byteRegisterGas,
  checksumByte,
  type RegisterLocation,
  SDT_HEADER_SIZE,
  systemDescriptionTable,
  TableWriter,
  TSVMM_TABLE_IDENTITY,
} from './sdt.js';

// ---------------------------------------------------------------------------------------------
// RSDP (§5.2.5.3, Table 5.3)
// ---------------------------------------------------------------------------------------------

/** RSDP signature, with its trailing space. */
export const RSDP_SIGNATURE = 'RSD PTR ';
/** Size of the ACPI 2.0+ RSDP. */
export const RSDP_SIZE = 36;
/** RSDP revision 2: ACPI 2.0 and later, with Length, XsdtAddress and Extended Checksum. */
export const RSDP_REVISION = 2;
/** The ACPI 1.0 checksum covers the first 20 bytes only (Table 5.3). */
export const RSDP_V1_CHECKSUMMED_LENGTH = 20;
export const RSDP_OFFSET = {
  signature: 0,
  checksum: 8,
  oemId: 9,
  revision: 15,
  rsdtAddress: 16,
  length: 20,
  xsdtAddress: 24,
  extendedChecksum: 32,
} as const;

/**
 * The Root System Description Pointer. RsdtAddress stays 0: there is no RSDT, and an OS that
 * reads revision 2 uses the XSDT.
 */
export function writeRsdp(xsdtAddress: number, identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY): Uint8Array {
  const w = new TableWriter(RSDP_SIZE);
  w.ascii(RSDP_OFFSET.signature, RSDP_SIGNATURE, 8);
  w.ascii(RSDP_OFFSET.oemId, identity.oemId, 6);
  w.u8(RSDP_OFFSET.revision, RSDP_REVISION);
  w.u32(RSDP_OFFSET.rsdtAddress, 0);
  w.u32(RSDP_OFFSET.length, RSDP_SIZE);
  w.u64(RSDP_OFFSET.xsdtAddress, xsdtAddress);
  w.u8(RSDP_OFFSET.checksum, checksumByte(w.bytes, 0, RSDP_V1_CHECKSUMMED_LENGTH));
  w.u8(RSDP_OFFSET.extendedChecksum, checksumByte(w.bytes, 0, RSDP_SIZE));
  return w.bytes;
}

// ---------------------------------------------------------------------------------------------
// XSDT (§5.2.8, Table 5.8)
// ---------------------------------------------------------------------------------------------

export const XSDT_REVISION = 1;

/** The Extended System Description Table: 64-bit addresses of the other tables (not the DSDT). */
export function writeXsdt(tableAddresses: readonly number[], identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY): Uint8Array {
  const w = new TableWriter(8 * tableAddresses.length);
  tableAddresses.forEach((a, i) => w.u64(8 * i, a));
  return systemDescriptionTable('XSDT', XSDT_REVISION, w.bytes, identity);
}

// ---------------------------------------------------------------------------------------------
// FADT (§5.2.9, Table 5.9)
// ---------------------------------------------------------------------------------------------

/** FADT revision 6 (ACPI 6.0+) with minor version 5: ACPI 6.5 (Table 5.9 "Major Version", "FADT Minor Version"). */
export const FADT_REVISION = 6;
export const FADT_MINOR_VERSION = 5;
/** Length of a revision 6 FADT: everything up to and including Hypervisor Vendor Identity. */
export const FADT_SIZE = 276;
/** Byte offsets of the FADT fields we set (Table 5.9). */
export const FADT_OFFSET = {
  firmwareCtrl: 36,
  dsdt: 40,
  preferredPmProfile: 45,
  sciInt: 46,
  iapcBootArch: 109,
  flags: 112,
  resetReg: 116,
  resetValue: 128,
  armBootArch: 129,
  minorVersion: 131,
  xFirmwareCtrl: 132,
  xDsdt: 140,
  sleepControlReg: 244,
  sleepStatusReg: 256,
  hypervisorVendorIdentity: 268,
} as const;

/** Fixed Feature Flags (§5.2.9, Table 5.10): the bits we set. */
export const FADT_FLAG = {
  /** Bit 4: the power button, if any, is a control-method device, not fixed hardware. */
  PWR_BUTTON: 1 << 4,
  /** Bit 5: the sleep button, likewise. */
  SLP_BUTTON: 1 << 5,
  /** Bit 10: RESET_REG describes a working reset register. */
  RESET_REG_SUP: 1 << 10,
  /** Bit 20: hardware-reduced ACPI — no fixed PM1/GPE/PM timer hardware, no SCI, no FACS needed. */
  HW_REDUCED_ACPI: 1 << 20,
} as const;

/** IA-PC Boot Architecture Flags (§5.2.9.3, Table 5.11). */
export const IAPC_BOOT_ARCH = {
  /** Bit 0: user-visible ISA/LPC devices (serial ports…) exist. */
  LEGACY_DEVICES: 1 << 0,
  /** Bit 1: an 8042-compatible keyboard controller at ports 0x60/0x64. Linux skips the i8042 without it. */
  I8042: 1 << 1,
  /** Bit 2: no VGA hardware; the OS must not probe it. */
  VGA_NOT_PRESENT: 1 << 2,
  /** Bit 3: MSI must not be enabled. Linux then calls pci_no_msi(). */
  MSI_NOT_SUPPORTED: 1 << 3,
  /** Bit 4: the OS must not enable PCIe ASPM. */
  PCIE_ASPM_CONTROLS: 1 << 4,
  /** Bit 5: no CMOS RTC at ports 0x70–0x71 (Linux then registers no rtc_cmos device). */
  CMOS_RTC_NOT_PRESENT: 1 << 5,
} as const;

/** What the guest platform has, for the IA-PC boot architecture flags. */
export interface IapcPlatform {
  readonly legacyDevices: boolean;
  readonly i8042: boolean;
  readonly msi: boolean;
  readonly cmosRtc: boolean;
}

/** IAPC_BOOT_ARCH for a platform: never VGA, never ASPM (no PCIe links to manage). */
export function iapcBootArchFlags(p: IapcPlatform): number {
  return (
    (p.legacyDevices ? IAPC_BOOT_ARCH.LEGACY_DEVICES : 0) |
    (p.i8042 ? IAPC_BOOT_ARCH.I8042 : 0) |
    IAPC_BOOT_ARCH.VGA_NOT_PRESENT |
    (p.msi ? 0 : IAPC_BOOT_ARCH.MSI_NOT_SUPPORTED) |
    IAPC_BOOT_ARCH.PCIE_ASPM_CONTROLS |
    (p.cmosRtc ? 0 : IAPC_BOOT_ARCH.CMOS_RTC_NOT_PRESENT)
  );
}

export interface FadtOptions {
  readonly dsdtAddress: number;
  readonly sleepControl: RegisterLocation;
  readonly sleepStatus: RegisterLocation;
  readonly reset: RegisterLocation;
  readonly resetValue: number;
  /** From `iapcBootArchFlags`. */
  readonly iapcBootArch: number;
  /**
   * SCI_INT. A hardware-reduced platform has no SCI, but Linux still compares every MADT
   * interrupt source override's source IRQ with this field and treats a match as the SCI's
   * override (arch/x86/kernel/acpi/boot.c acpi_parse_int_src_ovr): left at 0, the IRQ0→GSI2
   * override would turn the timer IRQ level-triggered, active-low. 9 matches the IRQ9 override,
   * as on QEMU's PC machines.
   */
  readonly sciInterrupt: number;
  /** Hypervisor Vendor Identity, up to 8 ASCII characters, zero-padded (Table 5.9). */
  readonly hypervisorVendorIdentity?: string;
}

/** FADT Hypervisor Vendor Identity written by tsvmm. */
export const TSVMM_HYPERVISOR_VENDOR_IDENTITY = 'TSVMM';

/**
 * A hardware-reduced FADT (§4.1): only X_DSDT, the reset register and the sleep control/status
 * registers describe hardware. FIRMWARE_CTRL and X_FIRMWARE_CTRL stay 0: a hardware-reduced
 * platform may go without a FACS (Table 5.9, FIRMWARE_CTRL). The 32-bit DSDT field stays 0
 * so there is one, 64-bit, DSDT pointer.
 */
export function writeFadt(o: FadtOptions, identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY): Uint8Array {
  const w = new TableWriter(FADT_SIZE - SDT_HEADER_SIZE);
  const at = (offset: number): number => offset - SDT_HEADER_SIZE;
  w.u16(at(FADT_OFFSET.sciInt), o.sciInterrupt);
  w.u16(at(FADT_OFFSET.iapcBootArch), o.iapcBootArch);
  w.u32(at(FADT_OFFSET.flags), FADT_FLAG.HW_REDUCED_ACPI | FADT_FLAG.RESET_REG_SUP | FADT_FLAG.PWR_BUTTON | FADT_FLAG.SLP_BUTTON);
  w.set(at(FADT_OFFSET.resetReg), byteRegisterGas(o.reset));
  w.u8(at(FADT_OFFSET.resetValue), o.resetValue);
  w.u8(at(FADT_OFFSET.minorVersion), FADT_MINOR_VERSION);
  w.u64(at(FADT_OFFSET.xDsdt), o.dsdtAddress);
  w.set(at(FADT_OFFSET.sleepControlReg), byteRegisterGas(o.sleepControl));
  w.set(at(FADT_OFFSET.sleepStatusReg), byteRegisterGas(o.sleepStatus));
  w.ascii(at(FADT_OFFSET.hypervisorVendorIdentity), o.hypervisorVendorIdentity ?? TSVMM_HYPERVISOR_VENDOR_IDENTITY, 8, '\0');
  return systemDescriptionTable('FACP', FADT_REVISION, w.bytes, identity);
}

// ---------------------------------------------------------------------------------------------
// MADT (§5.2.12, Table 5.19)
// ---------------------------------------------------------------------------------------------

/**
 * MADT revision written: 5. Every structure here predates it (x2APIC came with revision 3), so an
 * OS reading any newer-revision layout reads these the same; not cross-checked against 6.5's value.
 */
export const MADT_REVISION = 5;
export const MADT_OFFSET = { localApicAddress: 36, flags: 40, structures: 44 } as const;
/** Multiple APIC Flags (Table 5.20), bit 0: the system also has dual 8259 PICs, to be masked when using the APICs. */
export const MADT_PCAT_COMPAT = 1 << 0;

/** Interrupt Controller Structure Types and lengths (Table 5.21 and the table of each type). */
export const MADT_STRUCTURE = {
  LOCAL_APIC: { type: 0, length: 8 }, // §5.2.12.2, Table 5.22
  IO_APIC: { type: 1, length: 12 }, // §5.2.12.3, Table 5.24
  INTERRUPT_SOURCE_OVERRIDE: { type: 2, length: 10 }, // §5.2.12.5, Table 5.25
  LOCAL_APIC_NMI: { type: 4, length: 6 }, // §5.2.12.7, Table 5.28
  LOCAL_X2APIC: { type: 9, length: 16 }, // §5.2.12.12, Table 5.34
  LOCAL_X2APIC_NMI: { type: 0x0a, length: 12 }, // §5.2.12.13, Table 5.35
} as const;

/** Local APIC Flags (Table 5.23), bit 0: the processor is usable. */
export const LOCAL_APIC_ENABLED = 1 << 0;
/**
 * The Processor Local APIC structure holds an 8-bit APIC ID and 0xFF is the broadcast ID, so
 * APIC IDs from 255 up need Processor Local x2APIC structures (§5.2.12.12).
 */
export const MAX_XAPIC_ID = 0xfe;
/** ACPI Processor UID meaning "all processors" in a Local APIC NMI structure (§5.2.12.7). */
export const ALL_PROCESSORS_UID = 0xff;
export const ALL_PROCESSORS_X2APIC_UID = 0xffff_ffff;
/** The ISA bus in an Interrupt Source Override (§5.2.12.5: "0 Constant, meaning ISA"). */
const ISA_BUS = 0;

/** MPS INTI Flags (§5.2.12.5, Table 5.26): polarity in bits 1:0, trigger mode in bits 3:2. */
export const MPS_INTI = {
  POLARITY_CONFORMING: 0b00,
  POLARITY_ACTIVE_HIGH: 0b01,
  POLARITY_ACTIVE_LOW: 0b11,
  TRIGGER_CONFORMING: 0b00 << 2,
  TRIGGER_EDGE: 0b01 << 2,
  TRIGGER_LEVEL: 0b11 << 2,
} as const;

/** An ISA IRQ that reaches the IOAPIC on another pin, or with non-ISA signalling (§5.2.12.5). */
export interface InterruptSourceOverride {
  /** ISA IRQ, 0–15. */
  readonly source: number;
  readonly gsi: number;
  /** MPS INTI flags, from MPS_INTI. */
  readonly flags: number;
}

/**
 * The overrides PC-compatible machines declare, as QEMU's (hw/i386/acpi-common.c): the timer
 * IRQ 0 on IOAPIC pin 2 (where the 8254 output is wired on real chipsets), and IRQ 9, the SCI's
 * conventional line, level-triggered active-high. A VMM using KVM's in-kernel PIT must then
 * route the PIT's GSI to IOAPIC pin 2 (KVM_SET_GSI_ROUTING) if the guest is to use it through
 * the IOAPIC; a hardware-reduced Linux guest does not (it skips the PIT clockevent), and no
 * device may be given IRQ 9 as an edge interrupt.
 */
export const PC_INTERRUPT_SOURCE_OVERRIDES: readonly InterruptSourceOverride[] = [
  { source: 0, gsi: 2, flags: MPS_INTI.POLARITY_CONFORMING | MPS_INTI.TRIGGER_CONFORMING },
  { source: 9, gsi: 9, flags: MPS_INTI.POLARITY_ACTIVE_HIGH | MPS_INTI.TRIGGER_LEVEL },
];

export interface MadtOptions {
  /** APIC ID of each vCPU, in vCPU order; vCPU i gets ACPI Processor UID i. */
  readonly apicIds: readonly number[];
  readonly localApicAddress: number;
  /** Set MADT_PCAT_COMPAT. */
  readonly pcatCompat: boolean;
  /** The IOAPIC, or none. */
  readonly ioApic?: { readonly id: number; readonly address: number; readonly gsiBase: number };
  readonly interruptSourceOverrides: readonly InterruptSourceOverride[];
  /** Local APIC input LINT0/LINT1 that receives NMIs on every processor, or none. */
  readonly nmiLint?: 0 | 1;
}

/**
 * The Multiple APIC Description Table. Processor structures come first, in vCPU order: OSPM
 * initializes processors in MADT order and firmware lists the boot processor first (§5.2.12.1);
 * the boot vCPU is vCPU 0.
 */
export function writeMadt(o: MadtOptions, identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY): Uint8Array {
  if (o.apicIds.length === 0) throw new AcpiTableError('the MADT needs at least one processor');
  const structures: Uint8Array[] = [];
  const useX2apic = o.apicIds.some((id) => id > MAX_XAPIC_ID);
  o.apicIds.forEach((apicId, uid) => {
    if (apicId <= MAX_XAPIC_ID && uid <= 0xff) {
      const s = new TableWriter(MADT_STRUCTURE.LOCAL_APIC.length);
      s.u8(0, MADT_STRUCTURE.LOCAL_APIC.type);
      s.u8(1, MADT_STRUCTURE.LOCAL_APIC.length);
      s.u8(2, uid); // ACPI Processor UID
      s.u8(3, apicId);
      s.u32(4, LOCAL_APIC_ENABLED);
      structures.push(s.bytes);
    } else {
      const s = new TableWriter(MADT_STRUCTURE.LOCAL_X2APIC.length);
      s.u8(0, MADT_STRUCTURE.LOCAL_X2APIC.type);
      s.u8(1, MADT_STRUCTURE.LOCAL_X2APIC.length);
      // bytes 2–3 reserved
      s.u32(4, apicId);
      s.u32(8, LOCAL_APIC_ENABLED);
      s.u32(12, uid);
      structures.push(s.bytes);
    }
  });
  if (o.ioApic !== undefined) {
    const s = new TableWriter(MADT_STRUCTURE.IO_APIC.length);
    s.u8(0, MADT_STRUCTURE.IO_APIC.type);
    s.u8(1, MADT_STRUCTURE.IO_APIC.length);
    s.u8(2, o.ioApic.id);
    // byte 3 reserved
    s.u32(4, o.ioApic.address);
    s.u32(8, o.ioApic.gsiBase);
    structures.push(s.bytes);
  }
  for (const iso of o.interruptSourceOverrides) {
    const s = new TableWriter(MADT_STRUCTURE.INTERRUPT_SOURCE_OVERRIDE.length);
    s.u8(0, MADT_STRUCTURE.INTERRUPT_SOURCE_OVERRIDE.type);
    s.u8(1, MADT_STRUCTURE.INTERRUPT_SOURCE_OVERRIDE.length);
    s.u8(2, ISA_BUS);
    s.u8(3, iso.source);
    s.u32(4, iso.gsi);
    s.u16(8, iso.flags);
    structures.push(s.bytes);
  }
  if (o.nmiLint !== undefined) {
    const s = new TableWriter(MADT_STRUCTURE.LOCAL_APIC_NMI.length);
    s.u8(0, MADT_STRUCTURE.LOCAL_APIC_NMI.type);
    s.u8(1, MADT_STRUCTURE.LOCAL_APIC_NMI.length);
    s.u8(2, ALL_PROCESSORS_UID);
    s.u16(3, MPS_INTI.POLARITY_CONFORMING | MPS_INTI.TRIGGER_CONFORMING);
    s.u8(5, o.nmiLint);
    structures.push(s.bytes);
    if (useX2apic) {
      const x = new TableWriter(MADT_STRUCTURE.LOCAL_X2APIC_NMI.length);
      x.u8(0, MADT_STRUCTURE.LOCAL_X2APIC_NMI.type);
      x.u8(1, MADT_STRUCTURE.LOCAL_X2APIC_NMI.length);
      x.u16(2, MPS_INTI.POLARITY_CONFORMING | MPS_INTI.TRIGGER_CONFORMING);
      x.u32(4, ALL_PROCESSORS_X2APIC_UID);
      x.u8(8, o.nmiLint);
      // bytes 9–11 reserved
      structures.push(x.bytes);
    }
  }
  const fixed = new TableWriter(MADT_OFFSET.structures - SDT_HEADER_SIZE);
  fixed.u32(MADT_OFFSET.localApicAddress - SDT_HEADER_SIZE, o.localApicAddress);
  fixed.u32(MADT_OFFSET.flags - SDT_HEADER_SIZE, o.pcatCompat ? MADT_PCAT_COMPAT : 0);
  const body = concatBytes([fixed.bytes, ...structures]);
  return systemDescriptionTable('APIC', MADT_REVISION, body, identity);
}

// ---------------------------------------------------------------------------------------------
// MCFG (PCI Firmware Specification 3.3 §4.1.2, Tables 4-2 and 4-3)
// ---------------------------------------------------------------------------------------------

export const MCFG_REVISION = 1;
/** 8 reserved bytes follow the header (Table 4-2). */
export const MCFG_RESERVED_SIZE = 8;
/** Each Configuration Space Base Address Allocation Structure is 16 bytes (Table 4-3). */
export const MCFG_ALLOCATION_SIZE = 16;

/** One ECAM region: the config space of buses busStart..busEnd of a PCI segment group. */
export interface EcamAllocation {
  /** ECAM base address: the address bus 0 would have, whatever busStart is (Table 4-3). */
  readonly baseAddress: number;
  readonly segment: number;
  readonly busStart: number;
  readonly busEnd: number;
}

/** The PCI Express memory-mapped configuration space table. */
export function writeMcfg(allocations: readonly EcamAllocation[], identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY): Uint8Array {
  const w = new TableWriter(MCFG_RESERVED_SIZE + MCFG_ALLOCATION_SIZE * allocations.length);
  allocations.forEach((a, i) => {
    if (a.busStart > a.busEnd) throw new AcpiTableError(`MCFG bus range ${a.busStart}..${a.busEnd} is empty`);
    const off = MCFG_RESERVED_SIZE + MCFG_ALLOCATION_SIZE * i;
    w.u64(off, a.baseAddress);
    w.u16(off + 8, a.segment);
    w.u8(off + 10, a.busStart);
    w.u8(off + 11, a.busEnd);
    // bytes 12–15 reserved
  });
  return systemDescriptionTable('MCFG', MCFG_REVISION, w.bytes, identity);
}

// ---------------------------------------------------------------------------------------------
// DSDT (§5.2.11.1)
// ---------------------------------------------------------------------------------------------

/** DSDT revision 2: integers in its AML are 64 bits wide (§5.2.11.1, Table 5.17 "Revision"). */
export const DSDT_REVISION = 2;

/** The Differentiated System Description Table: the header around an AML definition block. */
export function writeDsdt(definitionBlock: Aml, identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY): Uint8Array {
  return systemDescriptionTable('DSDT', DSDT_REVISION, definitionBlock, identity);
}

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
