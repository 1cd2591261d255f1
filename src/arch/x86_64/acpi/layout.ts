/**
 * Where the ACPI tables and the ACPI-described platform registers sit in the guest, in one
 * object: the table writers read it, and the VMM reads the same object to wire a matching
 * `AcpiSleepResetDevice` and interrupt controller — so the two cannot drift apart.
 */
import {
  ACPI_TABLES_END,
  ACPI_TABLES_START,
  IOAPIC_START,
  LAPIC_START,
} from '../layout.js';
import type { RegisterLocation } from './sdt.js';

/**
 * The hardware-reduced sleep/reset register block (ACPI 6.5 §4.8.3.6 Reset Register, §4.8.3.7
 * Sleep Control and Status Registers): three byte-wide registers at consecutive addresses.
 */
export const SLEEP_CONTROL_REGISTER_OFFSET = 0;
export const SLEEP_STATUS_REGISTER_OFFSET = 1;
export const RESET_REGISTER_OFFSET = 2;
/** Bytes the register block decodes. */
export const SLEEP_RESET_BLOCK_SIZE = 3;

export interface AcpiLayout {
  /**
   * Guest-physical range the tables are written into; the RSDP goes at its start (16-byte
   * aligned, ACPI 6.5 §5.2.5.1). Inside [0xE0000, 0x100000) Linux finds the RSDP by scanning
   * (ACPI 6.5 §5.2.5.1, "the BIOS read-only memory space between 0E0000h and 0FFFFFh");
   * anywhere else the loader must pass it: boot_params.acpi_rsdp_addr (boot protocol 2.14+)
   * or PVH hvm_start_info.rsdp_paddr. Either way the range must be e820-reserved (or ACPI).
   */
  readonly tablesStart: number;
  readonly tablesEnd: number;
  /**
   * The sleep control (+0), sleep status (+1) and reset (+2) registers. An I/O port block by
   * default: a port exit is the cheapest exit, and ports below 0x1000 are never handed out to
   * PCI I/O BARs by Linux (PCIBIOS_MIN_IO, arch/x86/include/asm/pci.h).
   */
  readonly sleepResetRegisters: RegisterLocation;
  /** The value whose write to the reset register resets the machine (FADT RESET_VALUE). */
  readonly resetValue: number;
  /** SLP_TYP value for S5 (soft off) in the \_S5 package and the sleep control register. */
  readonly s5SleepType: number;
  /** Local APIC base, MADT "Local Interrupt Controller Address" (ACPI 6.5 §5.2.12, Table 5.19). */
  readonly localApicAddress: number;
  /** The IOAPIC: base address, APIC ID and first global system interrupt (ACPI 6.5 §5.2.12.3). */
  readonly ioApic: { readonly address: number; readonly id: number; readonly gsiBase: number };
}

/**
 * tsvmm's layout. The sleep/reset ports 0x600–0x602 are clear of every legacy ISA device the
 * VMM emulates (PIC 0x20/0xA0, PIT 0x40, i8042 0x60/0x64, RTC 0x70, POST 0x80, UARTs 0x2E8–0x3FF,
 * PCI 0xCF8). The reset value 0x42 is QEMU's for its hardware-reduced GED block
 * (hw/acpi/generic_event_device.c ACPI_GED_RESET_VALUE); S5 = 5 as Firecracker and QEMU's GED
 * use, so SLP_TYP reads as the state number.
 */
export const DEFAULT_ACPI_LAYOUT: AcpiLayout = {
  tablesStart: ACPI_TABLES_START,
  tablesEnd: ACPI_TABLES_END,
  sleepResetRegisters: { space: 'io', address: 0x600 },
  resetValue: 0x42,
  s5SleepType: 5,
  localApicAddress: LAPIC_START,
  ioApic: { address: IOAPIC_START, id: 0, gsiBase: 0 },
};

/** The three registers of `layout.sleepResetRegisters`, as the FADT describes them. */
export function sleepResetRegisterLocations(layout: AcpiLayout): {
  sleepControl: RegisterLocation;
  sleepStatus: RegisterLocation;
  reset: RegisterLocation;
} {
  const { space, address } = layout.sleepResetRegisters;
  return {
    sleepControl: { space, address: address + SLEEP_CONTROL_REGISTER_OFFSET },
    sleepStatus: { space, address: address + SLEEP_STATUS_REGISTER_OFFSET },
    reset: { space, address: address + RESET_REGISTER_OFFSET },
  };
}
