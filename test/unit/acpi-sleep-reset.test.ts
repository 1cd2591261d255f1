/**
 * The sleep control / status / reset register device (ACPI 6.5 §4.8.3.6, §4.8.3.7), alone and
 * end to end: the register addresses are read back out of the generated FADT, the S5 sleep
 * type out of the generated DSDT, and the writes ACPICA's acpi_hw_extended_sleep() and
 * acpi_reset() would make go through a port-I/O Bus to the device.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bus } from '../../src/devices/bus.js';
import {
  AcpiSleepResetDevice,
  buildAcpiTables,
  COM1,
  DEFAULT_ACPI_LAYOUT,
  SLEEP_RESET_BLOCK_SIZE,
} from '../../src/arch/x86_64/acpi/index.js';

function recorder(): { device: AcpiSleepResetDevice; calls: string[] } {
  const calls: string[] = [];
  const device = new AcpiSleepResetDevice({ onPowerOff: () => calls.push('poweroff'), onReset: () => calls.push('reset') });
  return { device, calls };
}

test('SLP_EN with SLP_TYP = S5 powers off; other sleep types and writes without SLP_EN do not', () => {
  const { device, calls } = recorder();
  device.write(0, Uint8Array.of((1 << 2) | (1 << 5))); // S1 requested: not offered
  assert.equal(device.unsupportedSleepRequests, 1);
  device.write(0, Uint8Array.of(5 << 2)); // SLP_TYP without SLP_EN
  assert.deepEqual(calls, []);
  device.write(0, Uint8Array.of((5 << 2) | (1 << 5)));
  assert.deepEqual(calls, ['poweroff']);
  device.write(0, Uint8Array.of((5 << 2) | (1 << 5) | 0xc3)); // reserved bits ignored
  assert.deepEqual(calls, ['poweroff', 'poweroff']);
});

test('the reset register resets only on the reset value; registers read as zero', () => {
  const { device, calls } = recorder();
  device.write(2, Uint8Array.of(0x01));
  assert.deepEqual(calls, []);
  device.write(2, Uint8Array.of(DEFAULT_ACPI_LAYOUT.resetValue));
  assert.deepEqual(calls, ['reset']);
  const data = Uint8Array.of(0xaa, 0xaa, 0xaa);
  device.read(0, data);
  assert.deepEqual([...data], [0, 0, 0]);
  device.write(1, Uint8Array.of(0x80)); // clearing WAK_STS is accepted
  assert.deepEqual(calls, ['reset']);
});

test('end to end: FADT registers and the DSDT S5 type drive the device through a port Bus', () => {
  const r = buildAcpiTables({ vcpuCount: 1, legacyDevices: [COM1] });
  const fadt = r.tables.find((t) => t.signature === 'FACP')!.bytes;
  const dsdt = r.tables.find((t) => t.signature === 'DSDT')!.bytes;
  const fv = new DataView(fadt.buffer, fadt.byteOffset);
  const sleepControl = Number(fv.getBigUint64(244 + 4, true));
  const sleepStatus = Number(fv.getBigUint64(256 + 4, true));
  const resetReg = Number(fv.getBigUint64(116 + 4, true));
  const resetValue = fadt[128]!;
  // Name(\_S5_, Package(0x04){ BytePrefix SLP_TYPa, … }): 08 5C "_S5_" 12 PkgLength 04 0A typ.
  const s5 = Buffer.from(dsdt).indexOf(Buffer.from([0x08, 0x5c, ...Buffer.from('_S5_')]));
  assert.ok(s5 > 0, '\\_S5_ in the DSDT');
  assert.equal(dsdt[s5 + 6], 0x12);
  assert.equal(dsdt[s5 + 9], 0x0a);
  const slpTypA = dsdt[s5 + 10]!;

  const calls: string[] = [];
  const io = new Bus('pio');
  io.insert(
    DEFAULT_ACPI_LAYOUT.sleepResetRegisters.address,
    SLEEP_RESET_BLOCK_SIZE,
    new AcpiSleepResetDevice({ onPowerOff: () => calls.push('poweroff'), onReset: () => calls.push('reset') }),
    'acpi-sleep-reset',
  );
  // acpi_hw_extended_sleep(): clear WAK_STS, then write SLP_TYP | SLP_EN, then poll WAK_STS.
  assert.ok(io.write(sleepStatus, Uint8Array.of(0x80)));
  assert.ok(io.write(sleepControl, Uint8Array.of(((slpTypA << 2) & 0x1c) | 0x20)));
  const status = new Uint8Array(1);
  assert.ok(io.read(sleepStatus, status));
  assert.equal(status[0]! & 0x80, 0, 'never wakes from S5');
  assert.deepEqual(calls, ['poweroff']);
  // acpi_reset(): RESET_VALUE to RESET_REG.
  assert.ok(io.write(resetReg, Uint8Array.of(resetValue)));
  assert.deepEqual(calls, ['poweroff', 'reset']);
});
