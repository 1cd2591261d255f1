/**
 * The hardware-reduced ACPI sleep control, sleep status and reset registers the FADT points at
 * (ACPI 6.5 §4.8.3.6 Reset Register, §4.8.3.7 Sleep Control and Status Registers): how a guest
 * says "power off" and "reboot". Registered on the port-I/O (or MMIO) bus at
 * `AcpiLayout.sleepResetRegisters`, one byte per register.
 */
import type { BusDevice } from '../../../devices/bus.js';
import {
  type AcpiLayout,
  DEFAULT_ACPI_LAYOUT,
  RESET_REGISTER_OFFSET,
  SLEEP_CONTROL_REGISTER_OFFSET,
  SLEEP_STATUS_REGISTER_OFFSET,
} from './layout.js';

/** Sleep control register (§4.8.3.7, Table 4.19): SLP_TYPx in bits 4:2, SLP_EN in bit 5, the rest reserved. */
export const SLEEP_CONTROL_SLP_TYP_SHIFT = 2;
export const SLEEP_CONTROL_SLP_TYP_MASK = 0b111 << SLEEP_CONTROL_SLP_TYP_SHIFT;
export const SLEEP_CONTROL_SLP_EN = 1 << 5;
/** Sleep status register (§4.8.3.7, Table 4.20): WAK_STS in bit 7, set on wake, cleared by writing 1. */
export const SLEEP_STATUS_WAK_STS = 1 << 7;

export interface AcpiSleepResetHandlers {
  /** The guest asked for S5 (soft off). Called once per request; the VMM stops the vCPUs. */
  onPowerOff(): void;
  /** The guest wrote the reset value to the reset register. */
  onReset(): void;
}

export class AcpiSleepResetDevice implements BusDevice {
  /** WAK_STS: never set, since the only sleep state offered is S5, which does not wake. */
  private wakeStatus = 0;
  /** Writes that asked for a sleep state other than S5 (not offered in the DSDT; ignored). */
  unsupportedSleepRequests = 0;

  constructor(
    private readonly handlers: AcpiSleepResetHandlers,
    private readonly layout: Pick<AcpiLayout, 's5SleepType' | 'resetValue'> = DEFAULT_ACPI_LAYOUT,
  ) {}

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      // SLP_EN and SLP_TYP are write-only and the reset register is write-only: they read 0.
      data[i] = offset + i === SLEEP_STATUS_REGISTER_OFFSET ? this.wakeStatus : 0;
    }
  }

  write(offset: number, data: Uint8Array): void {
    // Registers are byte-wide; a wider access writes consecutive registers, lowest first.
    for (let i = 0; i < data.length; i++) this.writeRegister(offset + i, data[i]!);
  }

  private writeRegister(register: number, value: number): void {
    switch (register) {
      case SLEEP_CONTROL_REGISTER_OFFSET: {
        if ((value & SLEEP_CONTROL_SLP_EN) === 0) return;
        const sleepType = (value & SLEEP_CONTROL_SLP_TYP_MASK) >> SLEEP_CONTROL_SLP_TYP_SHIFT;
        if (sleepType === this.layout.s5SleepType) this.handlers.onPowerOff();
        else this.unsupportedSleepRequests++;
        return;
      }
      case SLEEP_STATUS_REGISTER_OFFSET:
        if ((value & SLEEP_STATUS_WAK_STS) !== 0) this.wakeStatus &= ~SLEEP_STATUS_WAK_STS;
        return;
      case RESET_REGISTER_OFFSET:
        if (value === this.layout.resetValue) this.handlers.onReset();
        return;
      default:
        return;
    }
  }
}
