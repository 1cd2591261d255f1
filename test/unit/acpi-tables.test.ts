/**
 * The ACPI table writers and `buildAcpiTables`, byte by byte at the offsets ACPI 6.5 gives:
 * §5.2.5.3 Table 5.3 (RSDP), §5.2.6 Table 5.4 (header), §5.2.9 Tables 5.9–5.11 (FADT),
 * §5.2.12 Tables 5.19–5.28 and 5.34–5.35 (MADT), PCI Firmware 3.3 Table 4-3 (MCFG).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AcpiTableError,
  buildAcpiTables,
  CMOS_RTC,
  COM1,
  DEFAULT_ACPI_LAYOUT,
  I8042,
  type AcpiConfig,
  type AcpiTables,
} from '../../src/arch/x86_64/acpi/index.js';
import { withoutConfigPorts } from '../../src/arch/x86_64/acpi/dsdt.js';
import { byteSum } from '../../src/arch/x86_64/acpi/sdt.js';

const FULL_CONFIG: AcpiConfig = {
  vcpuCount: 2,
  legacyDevices: [COM1, I8042, CMOS_RTC],
  pci: {
    busStart: 0,
    busEnd: 255,
    ecamBase: 0xe000_0000,
    ioWindow: { base: 0, size: 0x10000 },
    mmio32Window: { base: 0xc000_0000, size: 0x2000_0000 },
    mmio64Window: { base: 0x100_0000_0000, size: 0x40_0000_0000 },
    intxRoutes: [
      { device: 1, pin: 0, gsi: 16 },
      { device: 2, pin: 1, gsi: 17 },
    ],
  },
  virtioMmioDevices: [{ base: 0xf000_0000, size: 0x1000, gsi: 5 }],
};

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u8 = (b: Uint8Array, o: number): number => b[o]!;
const u16 = (b: Uint8Array, o: number): number => view(b).getUint16(o, true);
const u32 = (b: Uint8Array, o: number): number => view(b).getUint32(o, true);
const u64 = (b: Uint8Array, o: number): number => Number(view(b).getBigUint64(o, true));
const text = (b: Uint8Array, o: number, n: number): string => String.fromCharCode(...b.subarray(o, o + n));

function table(r: AcpiTables, signature: string): Uint8Array {
  const t = r.tables.find((x) => x.signature === signature);
  assert.ok(t, `table ${signature} present`);
  return t.bytes;
}
function tableAt(r: AcpiTables, gpa: number): { signature: string; bytes: Uint8Array } {
  const t = r.tables.find((x) => x.gpa === gpa);
  assert.ok(t, `a table at 0x${gpa.toString(16)}`);
  return t;
}

test('every table: signature, length field, checksum sums to 0, identity fields (§5.2.6, Table 5.4)', () => {
  const r = buildAcpiTables(FULL_CONFIG);
  assert.deepEqual(r.tables.map((t) => t.signature).sort(), ['APIC', 'DSDT', 'FACP', 'MCFG', 'RSD PTR ', 'XSDT']);
  for (const t of r.tables) {
    if (t.signature === 'RSD PTR ') continue;
    const b = t.bytes;
    assert.equal(text(b, 0, 4), t.signature);
    assert.equal(u32(b, 4), b.length, `${t.signature} length`);
    assert.equal(byteSum(b), 0, `${t.signature} checksum`);
    assert.equal(text(b, 10, 6), 'TSVMM ');
    assert.equal(text(b, 16, 8), 'TSVMM   ');
    assert.equal(text(b, 28, 4), 'TSVM');
  }
});

test('RSDP: 36 bytes, revision 2, both checksums, XSDT address (§5.2.5.3, Table 5.3)', () => {
  const r = buildAcpiTables(FULL_CONFIG);
  const rsdp = table(r, 'RSD PTR ');
  assert.equal(r.rsdpAddress, DEFAULT_ACPI_LAYOUT.tablesStart);
  assert.equal(rsdp.length, 36);
  assert.equal(text(rsdp, 0, 8), 'RSD PTR ');
  assert.equal(byteSum(rsdp.subarray(0, 20)), 0, 'ACPI 1.0 checksum over bytes 0–19');
  assert.equal(byteSum(rsdp), 0, 'extended checksum over all 36 bytes');
  assert.equal(text(rsdp, 9, 6), 'TSVMM ');
  assert.equal(u8(rsdp, 15), 2);
  assert.equal(u32(rsdp, 16), 0, 'no RSDT');
  assert.equal(u32(rsdp, 20), 36);
  assert.equal(tableAt(r, u64(rsdp, 24)).signature, 'XSDT');
});

test('XSDT lists FADT, MADT and MCFG; FADT X_DSDT points at the DSDT (§5.2.8, Table 5.9)', () => {
  const r = buildAcpiTables(FULL_CONFIG);
  const xsdt = table(r, 'XSDT');
  const entries = (xsdt.length - 36) / 8;
  const sigs = Array.from({ length: entries }, (_, i) => tableAt(r, u64(xsdt, 36 + 8 * i)).signature);
  assert.deepEqual(sigs, ['FACP', 'APIC', 'MCFG']);
  const fadt = table(r, 'FACP');
  assert.equal(u32(fadt, 40), 0, '32-bit DSDT field unused');
  assert.equal(tableAt(r, u64(fadt, 140)).signature, 'DSDT');

  const noPci = buildAcpiTables({ vcpuCount: 1, legacyDevices: [COM1] });
  assert.equal(noPci.tables.some((t) => t.signature === 'MCFG'), false);
  assert.equal(table(noPci, 'XSDT').length, 36 + 16);
});

test('FADT: revision 6.5, hardware-reduced flags, registers and boot flags at their offsets (Tables 5.9–5.11)', () => {
  const fadt = table(buildAcpiTables(FULL_CONFIG), 'FACP');
  assert.equal(fadt.length, 276);
  assert.equal(u8(fadt, 8), 6, 'major revision');
  assert.equal(u8(fadt, 131), 5, 'FADT minor version');
  assert.equal(u32(fadt, 36), 0, 'no FACS');
  assert.equal(u64(fadt, 132), 0, 'no X_FACS');
  assert.equal(u16(fadt, 46), 9, 'SCI_INT matches the IRQ9 override');

  const flags = u32(fadt, 112);
  assert.ok(flags & (1 << 20), 'HW_REDUCED_ACPI (bit 20)');
  assert.ok(flags & (1 << 10), 'RESET_REG_SUP (bit 10)');
  assert.ok(flags & (1 << 4), 'PWR_BUTTON (bit 4): control-method button');
  assert.ok(flags & (1 << 5), 'SLP_BUTTON (bit 5)');
  assert.equal(flags & ~((1 << 20) | (1 << 10) | (1 << 4) | (1 << 5)), 0, 'no other flags');

  const boot = u16(fadt, 109);
  assert.ok(boot & (1 << 0), 'LEGACY_DEVICES: a serial port');
  assert.ok(boot & (1 << 1), '8042 present');
  assert.ok(boot & (1 << 2), 'VGA not present');
  assert.equal(boot & (1 << 3), 0, 'MSI allowed with PCI');
  assert.ok(boot & (1 << 4), 'no ASPM');
  assert.equal(boot & (1 << 5), 0, 'CMOS RTC present');

  // Generic Address Structures (Table 5.1): space, bit width, bit offset, access size, address.
  const gas = (o: number): number[] => [u8(fadt, o), u8(fadt, o + 1), u8(fadt, o + 2), u8(fadt, o + 3), u64(fadt, o + 4)];
  const port = DEFAULT_ACPI_LAYOUT.sleepResetRegisters.address;
  assert.deepEqual(gas(116), [1, 8, 0, 1, port + 2], 'RESET_REG: SystemIO byte');
  assert.equal(u8(fadt, 128), DEFAULT_ACPI_LAYOUT.resetValue, 'RESET_VALUE');
  assert.deepEqual(gas(244), [1, 8, 0, 1, port], 'SLEEP_CONTROL_REG');
  assert.deepEqual(gas(256), [1, 8, 0, 1, port + 1], 'SLEEP_STATUS_REG');
  assert.equal(text(fadt, 268, 8), 'TSVMM\0\0\0', 'hypervisor vendor identity');
  // The legacy fixed-hardware blocks stay empty on a hardware-reduced platform.
  assert.ok(fadt.subarray(148, 244).every((b) => b === 0), 'X_PM1a_EVT_BLK … X_GPE1_BLK zero');
  assert.ok(fadt.subarray(56, 88).every((b) => b === 0), 'PM1a_EVT_BLK … GPE1_BLK zero');
});

test('FADT boot flags follow the devices: no i8042, no RTC, no PCI', () => {
  const boot = u16(table(buildAcpiTables({ vcpuCount: 1, legacyDevices: [COM1] }), 'FACP'), 109);
  assert.equal(boot & (1 << 1), 0, 'no 8042');
  assert.ok(boot & (1 << 3), 'MSI not supported without PCI');
  assert.ok(boot & (1 << 5), 'CMOS RTC not present');
  const none = u16(table(buildAcpiTables({ vcpuCount: 1 }), 'FACP'), 109);
  assert.equal(none & 1, 0, 'no legacy devices');
});

interface MadtEntry {
  type: number;
  length: number;
  bytes: Uint8Array;
}
function madtEntries(madt: Uint8Array): MadtEntry[] {
  const out: MadtEntry[] = [];
  for (let o = 44; o < madt.length; ) {
    const e = { type: madt[o]!, length: madt[o + 1]!, bytes: madt.subarray(o, o + madt[o + 1]!) };
    assert.ok(e.length >= 2, 'structure length');
    out.push(e);
    o += e.length;
  }
  return out;
}

for (const vcpus of [1, 2, 8, 64]) {
  test(`MADT with ${vcpus} vCPU(s): one enabled Local APIC each, IOAPIC, overrides, NMI (§5.2.12)`, () => {
    const madt = table(buildAcpiTables({ ...FULL_CONFIG, vcpuCount: vcpus }), 'APIC');
    assert.equal(u32(madt, 36), 0xfee00000, 'local APIC address');
    assert.equal(u32(madt, 40), 1, 'PCAT_COMPAT');
    const entries = madtEntries(madt);
    const lapics = entries.filter((e) => e.type === 0);
    assert.equal(lapics.length, vcpus);
    lapics.forEach((e, i) => {
      assert.equal(e.length, 8);
      assert.equal(e.bytes[2], i, 'ACPI processor UID');
      assert.equal(e.bytes[3], i, 'APIC ID');
      assert.equal(u32(e.bytes, 4), 1, 'enabled');
    });
    assert.deepEqual(
      entries.slice(0, vcpus).map((e) => e.type),
      Array(vcpus).fill(0),
      'processors first, boot processor first',
    );
    const ioapics = entries.filter((e) => e.type === 1);
    assert.equal(ioapics.length, 1);
    assert.equal(ioapics[0]!.length, 12);
    assert.equal(ioapics[0]!.bytes[2], 0, 'IOAPIC ID');
    assert.equal(u32(ioapics[0]!.bytes, 4), 0xfec00000);
    assert.equal(u32(ioapics[0]!.bytes, 8), 0, 'GSI base');
    const isos = entries.filter((e) => e.type === 2).map((e) => [e.length, e.bytes[2], e.bytes[3], u32(e.bytes, 4), u16(e.bytes, 8)]);
    assert.deepEqual(isos, [
      [10, 0, 0, 2, 0x0000], // ISA IRQ0 → GSI2, conforming
      [10, 0, 9, 9, 0x000d], // ISA IRQ9 → GSI9, active-high (01) | level (11 << 2)
    ]);
    const nmis = entries.filter((e) => e.type === 4);
    assert.equal(nmis.length, 1);
    assert.deepEqual([...nmis[0]!.bytes], [4, 6, 0xff, 0, 0, 1], 'all processors, LINT1');
    assert.equal(madt.length, 44 + 8 * vcpus + 12 + 2 * 10 + 6);
  });
}

test('MADT beyond APIC ID 254 uses x2APIC structures and an x2APIC NMI (§5.2.12.12–13, Tables 5.34–5.35)', () => {
  const madt = table(buildAcpiTables({ vcpuCount: 256 }), 'APIC');
  const entries = madtEntries(madt);
  assert.equal(entries.filter((e) => e.type === 0).length, 255);
  const x2 = entries.filter((e) => e.type === 9);
  assert.equal(x2.length, 1);
  assert.equal(x2[0]!.length, 16);
  assert.equal(u32(x2[0]!.bytes, 4), 255, 'x2APIC ID');
  assert.equal(u32(x2[0]!.bytes, 8), 1, 'enabled');
  assert.equal(u32(x2[0]!.bytes, 12), 255, 'ACPI processor UID');
  const x2nmi = entries.filter((e) => e.type === 10);
  assert.equal(x2nmi.length, 1);
  assert.equal(x2nmi[0]!.length, 12);
  assert.equal(u32(x2nmi[0]!.bytes, 4), 0xffffffff);
  assert.equal(x2nmi[0]!.bytes[8], 1, 'LINT1');
});

test('without an IOAPIC: no IOAPIC or overrides, and devices with interrupts are refused', () => {
  const madt = table(buildAcpiTables({ vcpuCount: 2, ioapic: false }), 'APIC');
  assert.deepEqual(
    madtEntries(madt).map((e) => e.type),
    [0, 0, 4],
  );
  assert.throws(() => buildAcpiTables({ vcpuCount: 1, ioapic: false, legacyDevices: [COM1] }), AcpiTableError);
  assert.doesNotThrow(() => buildAcpiTables({ vcpuCount: 1, ioapic: false, legacyDevices: [{ kind: 'rtc', irq: null }] }));
});

test('MCFG: one 16-byte allocation with ECAM base, segment 0 and the bus range (PCI Firmware 3.3 Table 4-3)', () => {
  const mcfg = table(buildAcpiTables({ ...FULL_CONFIG, pci: { ...FULL_CONFIG.pci!, busEnd: 15 } }), 'MCFG');
  assert.equal(mcfg.length, 36 + 8 + 16);
  assert.equal(u8(mcfg, 8), 1, 'revision');
  assert.ok(mcfg.subarray(36, 44).every((b) => b === 0), 'reserved');
  assert.equal(u64(mcfg, 44), 0xe000_0000);
  assert.equal(u16(mcfg, 52), 0, 'segment');
  assert.equal(u8(mcfg, 54), 0, 'start bus');
  assert.equal(u8(mcfg, 55), 15, 'end bus');
  assert.equal(u32(mcfg, 56), 0, 'reserved');
});

test('placement: 16-byte aligned, non-overlapping, inside the region; too small a region is refused', () => {
  const r = buildAcpiTables(FULL_CONFIG);
  const sorted = [...r.tables].sort((a, b) => a.gpa - b.gpa);
  let end = DEFAULT_ACPI_LAYOUT.tablesStart;
  for (const t of sorted) {
    assert.equal(t.gpa % 16, 0, `${t.signature} aligned`);
    assert.ok(t.gpa >= end, `${t.signature} does not overlap`);
    end = t.gpa + t.bytes.length;
  }
  assert.equal(r.end, end);
  assert.ok(end <= DEFAULT_ACPI_LAYOUT.tablesEnd);
  const tiny = { ...DEFAULT_ACPI_LAYOUT, tablesEnd: DEFAULT_ACPI_LAYOUT.tablesStart + 256 };
  assert.throws(() => buildAcpiTables({ ...FULL_CONFIG, layout: tiny }), AcpiTableError);
  assert.throws(() => buildAcpiTables({ vcpuCount: 1, layout: { ...DEFAULT_ACPI_LAYOUT, tablesStart: 0xe0008 } }), AcpiTableError);
  assert.throws(() => buildAcpiTables({ vcpuCount: 0 }), AcpiTableError);
});

test('the PCI I/O window is split around the 0xCF8–0xCFF config ports', () => {
  assert.deepEqual(withoutConfigPorts({ base: 0, size: 0x10000 }), [
    { base: 0, size: 0xcf8 },
    { base: 0xd00, size: 0xf300 },
  ]);
  assert.deepEqual(withoutConfigPorts({ base: 0x1000, size: 0xf000 }), [{ base: 0x1000, size: 0xf000 }]);
  assert.deepEqual(withoutConfigPorts({ base: 0x800, size: 0x500 }), [{ base: 0x800, size: 0x4f8 }]);
});
