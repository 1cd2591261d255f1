/** ACPI for x86_64 guests: table generation and the sleep/reset register device. */
export { buildAcpiTables, type AcpiConfig, type AcpiTables, type PlacedAcpiTable } from './build.js';
export {
  COM1,
  CMOS_RTC,
  I8042,
  type AcpiCmosRtc,
  type AcpiI8042,
  type AcpiLegacyDevice,
  type AcpiPciHostBridge,
  type AcpiSerialPort,
  type AcpiVirtioMmioDevice,
  type AcpiWindow,
} from './dsdt.js';
export type { PciIntxRoute } from './aml.js';
export { type AcpiLayout, DEFAULT_ACPI_LAYOUT, SLEEP_RESET_BLOCK_SIZE } from './layout.js';
export { AcpiSleepResetDevice, type AcpiSleepResetHandlers } from './sleep-reset-device.js';
export { AcpiTableError } from './sdt.js';
