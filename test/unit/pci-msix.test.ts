import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PciConfigSpace } from '../../src/devices/pci/config-space.js';
import { MsixCapability } from '../../src/devices/pci/msix.js';
import { RecordingMsiSink } from '../support/virtio-driver.js';

// PCI Local Bus 3.0 §6.8.2 layout, spelled out independently of the implementation.
const CONTROL = 2, TABLE = 4, PBA = 8;
const ENABLE = 0x8000, FUNCTION_MASK = 0x4000;
const ENTRY = 16, ADDR_LO = 0, ADDR_HI = 4, DATA = 8, VECTOR_CONTROL = 12;

function setup(vectors = 3) {
  const config = new PciConfigSpace({ vendorId: 0x1af4, deviceId: 0x1044, revisionId: 1, classCode: 0xff0000 });
  config.addMemoryBar(0, { size: 0x8000, is64Bit: true, prefetchable: false });
  const sink = new RecordingMsiSink();
  const changed: number[] = [];
  const msix = new MsixCapability(config, {
    vectors,
    tableBar: 0,
    tableOffset: 0x4000,
    pbaBar: 0,
    pbaOffset: 0x5000,
    sink: { signal: (...a) => sink.signal(...a), vectorChanged: (v) => changed.push(v) },
  });
  const cap = msix.capabilityOffset;
  const u32 = (v: number) => new Uint8Array([v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff]);
  const readU32 = (read: (o: number, d: Uint8Array) => void, offset: number) => {
    const d = new Uint8Array(4);
    read(offset, d);
    return (d[0]! | (d[1]! << 8) | (d[2]! << 16) | (d[3]! << 24)) >>> 0;
  };
  const control = (value: number) => config.write(cap + CONTROL, new Uint8Array([value & 0xff, value >>> 8]));
  const entry = (v: number, address: number, data: number, masked: boolean) => {
    msix.writeTable(v * ENTRY + ADDR_LO, u32(address));
    msix.writeTable(v * ENTRY + ADDR_HI, u32(0));
    msix.writeTable(v * ENTRY + DATA, u32(data));
    msix.writeTable(v * ENTRY + VECTOR_CONTROL, u32(masked ? 1 : 0));
  };
  return { config, msix, sink, changed, cap, u32, readU32, control, entry };
}

test('the capability describes table size, BIR and offsets', () => {
  const { config, cap } = setup(3);
  assert.equal(config.getU8(cap), 0x11);
  assert.equal(config.getU16(cap + CONTROL) & 0x7ff, 2, 'table size is N - 1');
  assert.equal(config.getU32(cap + TABLE), 0x4000);
  assert.equal(config.getU32(cap + PBA), 0x5000);
  // Only Enable and Function Mask are writable.
  config.write(cap + CONTROL, new Uint8Array([0xff, 0xff]));
  assert.equal(config.getU16(cap + CONTROL), 0xc002);
  config.write(cap + TABLE, new Uint8Array([0, 0, 0, 0]));
  assert.equal(config.getU32(cap + TABLE), 0x4000);
});

test('vectors start masked; a disabled function does not signal', () => {
  const { msix, sink, readU32 } = setup();
  for (let v = 0; v < 3; v++) assert.equal(readU32((o, d) => msix.readTable(o, d), v * ENTRY + VECTOR_CONTROL), 1);
  assert.equal(msix.signal(0), false);
  assert.equal(sink.messages.length, 0);
});

test('an enabled, unmasked vector sends its message', () => {
  const { msix, sink, control, entry } = setup();
  entry(1, 0xfee0_1000, 0x4041, false);
  control(ENABLE);
  assert.equal(msix.signal(1), true);
  assert.deepEqual(sink.messages, [{ vector: 1, addressLow: 0xfee0_1000, addressHigh: 0, data: 0x4041 }]);
  assert.equal(msix.signal(7), false, 'a vector beyond the table');
});

test('function mask holds messages pending and releases them when cleared (Linux enables masked first)', () => {
  const { msix, sink, control, entry, readU32 } = setup();
  control(ENABLE | FUNCTION_MASK);
  entry(0, 0xfee0_0000, 0x30, false);
  entry(2, 0xfee0_0000, 0x32, false);
  msix.signal(0);
  msix.signal(2);
  assert.equal(sink.messages.length, 0);
  assert.equal(readU32((o, d) => msix.readPba(o, d), 0), 0b101);
  control(ENABLE);
  assert.deepEqual(sink.messages.map((m) => m.data), [0x30, 0x32]);
  assert.equal(readU32((o, d) => msix.readPba(o, d), 0), 0);
});

test('a masked vector sets its pending bit; unmasking delivers it once', () => {
  const { msix, sink, control, entry, u32, readU32, changed } = setup();
  control(ENABLE);
  entry(1, 0xfee0_0000, 0x51, true);
  msix.signal(1);
  msix.signal(1);
  assert.equal(sink.messages.length, 0);
  assert.equal(msix.isPending(1), true);
  assert.equal(readU32((o, d) => msix.readPba(o, d), 0), 0b10);
  msix.writePba(0, u32(0)); // read-only
  assert.equal(msix.isPending(1), true);
  msix.writeTable(1 * ENTRY + VECTOR_CONTROL, u32(0));
  assert.deepEqual(sink.messages.map((m) => m.data), [0x51]);
  assert.equal(msix.isPending(1), false);
  assert.ok(changed.includes(1), 'the sink hears of the change (for GSI routes)');
});

test('reserved table bits stay zero and odd accesses do not throw', () => {
  const { msix, u32, readU32 } = setup();
  msix.writeTable(ADDR_LO, u32(0xfee0_0003));
  assert.equal(readU32((o, d) => msix.readTable(o, d), ADDR_LO), 0xfee0_0000);
  msix.writeTable(VECTOR_CONTROL, u32(0xffff_fffe));
  assert.equal(readU32((o, d) => msix.readTable(o, d), VECTOR_CONTROL), 0);
  // Unaligned, oversized and out-of-range accesses.
  msix.writeTable(3, new Uint8Array(8).fill(0xff));
  msix.writeTable(47, new Uint8Array(8).fill(0xff));
  msix.writeTable(1 << 20, u32(1));
  msix.writeTable(-4, u32(1));
  const d = new Uint8Array(8);
  msix.readTable(1 << 20, d);
  msix.readPba(-1, d);
  assert.deepEqual([...d], [0, 0, 0, 0, 0, 0, 0, 0]);
});

test('reset masks every vector and disables MSI-X', () => {
  const { msix, control, entry } = setup();
  control(ENABLE);
  entry(0, 0xfee0_0000, 1, false);
  msix.reset();
  assert.equal(msix.enabled, false);
  assert.equal(msix.message(0).masked, true);
  assert.equal(msix.message(0).data, 0);
});
