import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtioRng } from '../../src/devices/virtio/rng.js';
import { TestMachine, conf1Address } from '../support/virtio-driver.js';

// PCI Local Bus 3.0 §6.1 header offsets and bits, spelled out independently of the implementation.
const VENDOR = 0x00, DEVICE = 0x02, COMMAND = 0x04, STATUS = 0x06, REVISION = 0x08, CLASS = 0x08, HEADER_TYPE = 0x0e;
const BAR0 = 0x10, BAR1 = 0x14, ROM = 0x30, CAP_PTR = 0x34, INTERRUPT_LINE = 0x3c;
const CMD_MEMORY = 0x2;

function machineWithRng() {
  const machine = new TestMachine();
  const { transport, slot } = machine.addVirtio(new VirtioRng());
  return { machine, transport, slot };
}

test('mechanism #1: CONFIG_ADDRESS reads back what Linux pci_check_type1 writes', () => {
  const { machine } = machineWithRng();
  machine.out(0xcf8, 4, 0x8000_0000);
  assert.equal(machine.in(0xcf8, 4), 0x8000_0000);
  // Reserved bits 30:24 and 1:0 are not stored.
  machine.out(0xcf8, 4, 0xffff_ffff);
  assert.equal(machine.in(0xcf8, 4), 0x80ff_fffc);
  // Byte and word accesses to 0xCF8–0xCFB do not reach CONFIG_ADDRESS.
  machine.out(0xcf8, 4, 0x8000_0000);
  machine.out(0xcfb, 1, 0x01);
  machine.out(0xcf8, 2, 0x1234);
  assert.equal(machine.in(0xcf8, 4), 0x8000_0000);
});

test('the host bridge is 0:00.0 with the host-bridge class Linux looks for', () => {
  const { machine } = machineWithRng();
  assert.equal(machine.conf1Read(0, 0, 0, VENDOR, 2), 0x1b36);
  assert.equal(machine.conf1Read(0, 0, 0, DEVICE, 2), 0x0008);
  assert.equal(machine.conf1Read(0, 0, 0, CLASS, 4) >>> 8, 0x060000);
  assert.equal(machine.conf1Read(0, 0, 0, HEADER_TYPE, 1), 0);
});

test('absent functions, buses and disabled accesses read all-ones', () => {
  const { machine, slot } = machineWithRng();
  assert.equal(machine.conf1Read(0, 31, 0, VENDOR, 4), 0xffff_ffff);
  assert.equal(machine.conf1Read(0, slot, 1, VENDOR, 4), 0xffff_ffff, 'function 1 of a single-function device');
  assert.equal(machine.conf1Read(1, 0, 0, VENDOR, 4), 0xffff_ffff, 'bus 1');
  assert.equal(machine.ecamRead(0, 31, 0, VENDOR, 4), 0xffff_ffff);
  // Enable bit clear: data accesses are not configuration cycles.
  machine.out(0xcf8, 4, conf1Address(0, 0, 0, 0) & 0x7fff_ffff);
  assert.equal(machine.in(0xcfc, 4), 0xffff_ffff);
  // A data access that would cross the selected DWORD is refused.
  machine.out(0xcf8, 4, conf1Address(0, 0, 0, 0));
  assert.equal(machine.in(0xcfd, 4), 0xffff_ffff);
  // Writes to absent functions go nowhere and do not throw.
  machine.conf1Write(0, 30, 0, COMMAND, 2, 0xffff);
  machine.ecamWrite(3, 30, 7, COMMAND, 2, 0xffff);
});

test('configuration mechanism #1 and ECAM read the same bytes at every width', () => {
  const { machine, slot } = machineWithRng();
  for (const device of [0, slot, 9]) {
    for (let reg = 0; reg < 256; reg += 4) {
      assert.equal(machine.conf1Read(0, device, 0, reg, 4), machine.ecamRead(0, device, 0, reg, 4), `device ${device} reg 0x${reg.toString(16)}`);
      for (let b = 0; b < 4; b++) assert.equal(machine.conf1Read(0, device, 0, reg + b, 1), machine.ecamRead(0, device, 0, reg + b, 1));
      for (let w = 0; w < 4; w += 2) assert.equal(machine.conf1Read(0, device, 0, reg + w, 2), machine.ecamRead(0, device, 0, reg + w, 2));
    }
  }
  // A write through one mechanism is seen through the other.
  machine.ecamWrite(0, slot, 0, INTERRUPT_LINE, 1, 0x0b);
  assert.equal(machine.conf1Read(0, slot, 0, INTERRUPT_LINE, 1), 0x0b);
  machine.conf1Write(0, slot, 0, INTERRUPT_LINE, 1, 0x05);
  assert.equal(machine.ecamRead(0, slot, 0, INTERRUPT_LINE, 1), 0x05);
  // Extended configuration space of a conventional function: an empty extended capability list.
  assert.equal(machine.ecamRead(0, slot, 0, 0x100, 4), 0);
  assert.equal(machine.ecamRead(0, 31, 0, 0x100, 4), 0xffff_ffff);
});

test('read-only registers ignore writes; there is no expansion ROM', () => {
  const { machine, slot } = machineWithRng();
  const before = [VENDOR, REVISION, CAP_PTR, HEADER_TYPE].map((r) => machine.conf1Read(0, slot, 0, r, 4));
  for (const r of [VENDOR, REVISION, CAP_PTR, HEADER_TYPE]) machine.conf1Write(0, slot, 0, r, 4, 0xdead_beef);
  assert.deepEqual([VENDOR, REVISION, CAP_PTR, HEADER_TYPE].map((r) => machine.conf1Read(0, slot, 0, r, 4)), before);
  machine.conf1Write(0, slot, 0, ROM, 4, 0xffff_f800);
  assert.equal(machine.conf1Read(0, slot, 0, ROM, 4), 0, 'ROM sizing finds no ROM');
  assert.ok((machine.conf1Read(0, slot, 0, STATUS, 2) & 0x10) !== 0, 'capability list bit');
});

test('BAR sizing as __pci_read_base does it: decode off, all-ones, read, restore', () => {
  const { machine, slot } = machineWithRng();
  const cfg = (reg: number) => machine.conf1Read(0, slot, 0, reg, 4);
  const low = cfg(BAR0);
  const high = cfg(BAR1);
  assert.equal(low & 0xf, 0b0100, 'memory, 64-bit, not prefetchable');
  const address = (low & ~0xf) >>> 0;
  assert.ok(address >= TestMachine.MMIO32_WINDOW.start && address < TestMachine.MMIO32_WINDOW.start + TestMachine.MMIO32_WINDOW.size);
  assert.equal(address % 0x8000, 0, 'naturally aligned');
  assert.ok(machine.mmio.find(address) !== undefined, 'mapped by "firmware" with decode on');

  const command = machine.conf1Read(0, slot, 0, COMMAND, 2);
  machine.conf1Write(0, slot, 0, COMMAND, 2, command & ~CMD_MEMORY);
  assert.equal(machine.mmio.find(address), undefined, 'decode off unmaps the BAR');
  machine.conf1Write(0, slot, 0, BAR0, 4, 0xffff_ffff);
  machine.conf1Write(0, slot, 0, BAR1, 4, 0xffff_ffff);
  const sizeLow = cfg(BAR0);
  const sizeHigh = cfg(BAR1);
  const mask = (BigInt(sizeHigh) << 32n) | BigInt((sizeLow & ~0xf) >>> 0);
  const size = (~mask & 0xffff_ffff_ffff_ffffn) + 1n;
  assert.equal(size, 0x8000n);
  assert.equal(machine.mmio.find(0xffff_8000), undefined, 'the sizing pattern is never mapped');
  machine.conf1Write(0, slot, 0, BAR0, 4, low);
  machine.conf1Write(0, slot, 0, BAR1, 4, high);
  machine.conf1Write(0, slot, 0, COMMAND, 2, command);
  assert.ok(machine.mmio.find(address) !== undefined, 'mapped again');
});

test('the guest can move a BAR; a BAR placed over another range stays unmapped', () => {
  const { machine, slot, transport } = machineWithRng();
  const old = (machine.conf1Read(0, slot, 0, BAR0, 4) & ~0xf) >>> 0;
  const moved: (number | undefined)[] = [];
  const notifyBefore = transport.queueNotifyAddress(0);
  assert.equal(notifyBefore, old + 0x3000);
  machine.conf1Write(0, slot, 0, BAR0, 4, 0xd000_0000);
  moved.push(transport.queueNotifyAddress(0));
  assert.equal(machine.mmio.find(old), undefined);
  assert.ok(machine.mmio.find(0xd000_0000) !== undefined);
  assert.deepEqual(moved, [0xd000_3000]);
  // Over the ECAM window: refused without an exception.
  machine.conf1Write(0, slot, 0, BAR0, 4, TestMachine.ECAM_BASE);
  assert.equal(machine.pci.barConflicts, 1);
  assert.equal(transport.queueNotifyAddress(0), undefined);
  assert.equal(machine.mmio.find(TestMachine.ECAM_BASE)!.name, 'pci-ecam');
  // Above 4 GiB through the upper half.
  machine.conf1Write(0, slot, 0, BAR0, 4, 0);
  machine.conf1Write(0, slot, 0, BAR1, 4, 0x10);
  assert.ok(machine.mmio.find(0x10_0000_0000) !== undefined);
});

test('BARs are placed size-aligned without overlap for several devices', () => {
  const machine = new TestMachine();
  const slots = [0, 1, 2, 3].map(() => machine.addVirtio(new VirtioRng()).slot);
  const bases = slots.map((s) => (machine.conf1Read(0, s, 0, BAR0, 4) & ~0xf) >>> 0);
  assert.deepEqual(slots, [1, 2, 3, 4]);
  assert.equal(new Set(bases).size, 4);
  for (const b of bases) assert.equal(b % 0x8000, 0);
});
