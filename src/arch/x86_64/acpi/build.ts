/**
 * `buildAcpiTables`: every ACPI table a tsvmm guest needs, placed in guest memory.
 *
 * RSDP → XSDT → { FADT → DSDT, MADT, MCFG }. The VMM copies each `{ gpa, bytes }` into guest
 * RAM, keeps [layout.tablesStart, end) out of usable e820 RAM, and, when the RSDP is outside
 * [0xE0000, 0x100000), passes `rsdpAddress` in boot_params.acpi_rsdp_addr or the PVH start info.
 */
import { buildDsdtAml, type AcpiLegacyDevice, type AcpiPciHostBridge, type AcpiVirtioMmioDevice } from './dsdt.js';
import { type AcpiLayout, DEFAULT_ACPI_LAYOUT, sleepResetRegisterLocations } from './layout.js';
import { AcpiTableError, TSVMM_TABLE_IDENTITY } from './sdt.js';
import {
  iapcBootArchFlags,
  PC_INTERRUPT_SOURCE_OVERRIDES,
  RSDP_SIZE,
  writeDsdt,
  writeFadt,
  writeMadt,
  writeMcfg,
  writeRsdp,
  writeXsdt,
} from './tables.js';

export interface AcpiConfig {
  /** Number of vCPUs; vCPU i has APIC ID i (CPUID leaf 1 EBX[31:24] and leaf 0xB must agree). */
  readonly vcpuCount: number;
  /** Addresses of tables and platform registers. Default DEFAULT_ACPI_LAYOUT. */
  readonly layout?: AcpiLayout;
  /**
   * Whether the guest has an IOAPIC (KVM_CREATE_IRQCHIP gives one). Default true. Without it a
   * hardware-reduced guest has no interrupt controller for device interrupts at all (Linux
   * replaces the 8259 with a null PIC on such platforms), so no interrupt-using device may be
   * described.
   */
  readonly ioapic?: boolean;
  /**
   * Set the MADT PCAT_COMPAT flag. Default true: KVM's in-kernel irqchip does contain the dual
   * 8259, so the flag is the truth, and it tells the OS to mask the 8259s while it uses the
   * APICs (ACPI 6.5 §5.2.12, Table 5.20). A hardware-reduced Linux does not drive the 8259 anyway.
   */
  readonly pcatCompat?: boolean;
  readonly pci?: AcpiPciHostBridge;
  readonly legacyDevices?: readonly AcpiLegacyDevice[];
  readonly virtioMmioDevices?: readonly AcpiVirtioMmioDevice[];
}

/** One table and where it goes. */
export interface PlacedAcpiTable {
  readonly signature: string;
  readonly gpa: number;
  readonly bytes: Uint8Array;
}

export interface AcpiTables {
  readonly tables: PlacedAcpiTable[];
  readonly rsdpAddress: number;
  /** First byte after the last table. */
  readonly end: number;
}

/** Tables start 16-byte aligned: required of the RSDP (§5.2.5.1), kept for the rest for tidiness. */
const TABLE_ALIGNMENT = 16;
/** The NMI line of every local APIC: LINT1, as PC firmware wires it (Intel MP spec 1.4 §5.1, QEMU). */
const NMI_LINT = 1;
/** The most vCPUs KVM allows on x86 (KVM_MAX_VCPUS); the MADT itself has no lower limit. */
const MAX_VCPUS = 1024;
/** FADT SCI_INT: IRQ 9, matching the IRQ9 interrupt source override (see FadtOptions.sciInterrupt). */
const SCI_INTERRUPT = 9;

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

export function buildAcpiTables(config: AcpiConfig): AcpiTables {
  const layout = config.layout ?? DEFAULT_ACPI_LAYOUT;
  const ioapic = config.ioapic ?? true;
  const legacy = config.legacyDevices ?? [];
  const virtio = config.virtioMmioDevices ?? [];
  if (!Number.isInteger(config.vcpuCount) || config.vcpuCount < 1 || config.vcpuCount > MAX_VCPUS) {
    throw new AcpiTableError(`vCPU count ${config.vcpuCount} must be 1..${MAX_VCPUS}`);
  }
  if (layout.tablesStart % TABLE_ALIGNMENT !== 0) {
    throw new AcpiTableError(`ACPI tables start 0x${layout.tablesStart.toString(16)} must be 16-byte aligned (the RSDP must be)`);
  }
  if (!ioapic) {
    const usesInterrupts =
      virtio.length > 0 ||
      (config.pci?.intxRoutes ?? []).length > 0 ||
      legacy.some((d) => d.kind !== 'rtc' || (d.irq !== null));
    if (usesInterrupts) {
      throw new AcpiTableError(
        'devices with interrupts need the IOAPIC: a hardware-reduced ACPI guest has no 8259 to fall back on; enable the IOAPIC or drop the devices',
      );
    }
  }

  const dsdt = writeDsdt(buildDsdtAml({ layout, pci: config.pci, legacyDevices: legacy, virtioMmioDevices: virtio }));
  const apicIds = Array.from({ length: config.vcpuCount }, (_, i) => i);
  const madt = writeMadt({
    apicIds,
    localApicAddress: layout.localApicAddress,
    pcatCompat: config.pcatCompat ?? true,
    ...(ioapic ? { ioApic: layout.ioApic } : {}),
    interruptSourceOverrides: ioapic ? PC_INTERRUPT_SOURCE_OVERRIDES : [],
    nmiLint: NMI_LINT,
  });
  const pci = config.pci;
  const mcfg =
    pci?.ecamBase !== undefined
      ? writeMcfg([{ baseAddress: pci.ecamBase, segment: 0, busStart: pci.busStart, busEnd: pci.busEnd }])
      : undefined;

  // Place: RSDP, then DSDT, FADT, MADT, MCFG, XSDT — each table's address is known before the
  // table that points at it is written.
  let cursor = layout.tablesStart;
  const take = (length: number): number => {
    const at = alignUp(cursor, TABLE_ALIGNMENT);
    cursor = at + length;
    return at;
  };
  const rsdpAddress = take(RSDP_SIZE);
  const dsdtAddress = take(dsdt.length);
  const regs = sleepResetRegisterLocations(layout);
  const fadt = writeFadt({
    dsdtAddress,
    ...regs,
    resetValue: layout.resetValue,
    iapcBootArch: iapcBootArchFlags({
      legacyDevices: legacy.some((d) => d.kind === 'serial'),
      i8042: legacy.some((d) => d.kind === 'i8042'),
      msi: pci !== undefined && (pci.msi ?? true),
      cmosRtc: legacy.some((d) => d.kind === 'rtc'),
    }),
    sciInterrupt: SCI_INTERRUPT,
  });
  const fadtAddress = take(fadt.length);
  const madtAddress = take(madt.length);
  const mcfgAddress = mcfg !== undefined ? take(mcfg.length) : undefined;
  const xsdt = writeXsdt([fadtAddress, madtAddress, ...(mcfgAddress !== undefined ? [mcfgAddress] : [])]);
  const xsdtAddress = take(xsdt.length);
  const rsdp = writeRsdp(xsdtAddress, TSVMM_TABLE_IDENTITY);

  if (cursor > layout.tablesEnd) {
    throw new AcpiTableError(
      `ACPI tables need 0x${(cursor - layout.tablesStart).toString(16)} bytes but the region ` +
        `0x${layout.tablesStart.toString(16)}–0x${layout.tablesEnd.toString(16)} is smaller; enlarge it or describe fewer devices`,
    );
  }
  const tables: PlacedAcpiTable[] = [
    { signature: 'RSD PTR ', gpa: rsdpAddress, bytes: rsdp },
    { signature: 'DSDT', gpa: dsdtAddress, bytes: dsdt },
    { signature: 'FACP', gpa: fadtAddress, bytes: fadt },
    { signature: 'APIC', gpa: madtAddress, bytes: madt },
    ...(mcfg !== undefined && mcfgAddress !== undefined ? [{ signature: 'MCFG', gpa: mcfgAddress, bytes: mcfg }] : []),
    { signature: 'XSDT', gpa: xsdtAddress, bytes: xsdt },
  ];
  return { tables, rsdpAddress, end: cursor };
}
