import assert from 'node:assert/strict';
import { test } from 'node:test';
import { E820Type, buildE820Map, type E820Entry } from '../../src/arch/x86_64/e820.js';
import { GiB, GuestLayoutError, MiB, guestRamRegions } from '../../src/arch/x86_64/layout.js';
import { BootParamsError } from '../../src/loader/errors.js';

const { RAM, RESERVED, ACPI } = E820Type;
const LOW: [number, number, number][] = [
  [0, 0x9fc00, RAM],
  [0x9fc00, 0xe0000 - 0x9fc00, RESERVED],
  [0xe0000, 0x20000, ACPI],
];
const ECAM: [number, number, number] = [0xe0000000, 0x10000000, RESERVED];
const rows = (m: readonly E820Entry[]) => m.map((e) => [e.addr, e.size, e.type]);

function checkInvariants(map: readonly E820Entry[], memory: number): void {
  for (let i = 1; i < map.length; i++) assert.ok(map[i - 1]!.addr + map[i - 1]!.size <= map[i]!.addr, 'sorted, no overlap');
  const ram = map.filter((e) => e.type === RAM).reduce((s, e) => s + e.size, 0);
  assert.equal(ram, memory - (0x100000 - 0x9fc00)); // all of RAM but the legacy area
  for (const e of map.filter((x) => x.type === RAM)) assert.ok(e.addr + e.size <= 3 * GiB || e.addr >= 4 * GiB, 'no RAM in the hole');
}

test('128 MiB', () => {
  const map = buildE820Map(guestRamRegions(128 * MiB));
  assert.deepEqual(rows(map), [...LOW, [0x100000, 127 * MiB, RAM], ECAM]);
  checkInvariants(map, 128 * MiB);
});

test('2 GiB', () => {
  const map = buildE820Map(guestRamRegions(2 * GiB));
  assert.deepEqual(rows(map), [...LOW, [0x100000, 2 * GiB - MiB, RAM], ECAM]);
  checkInvariants(map, 2 * GiB);
});

test('exactly 3 GiB fills low memory up to the hole', () => {
  const map = buildE820Map(guestRamRegions(3 * GiB));
  assert.deepEqual(rows(map), [...LOW, [0x100000, 3 * GiB - MiB, RAM], ECAM]);
  checkInvariants(map, 3 * GiB);
});

test('4 GiB and 6.5 GiB continue above 4 GiB, across the MMIO hole', () => {
  const four = buildE820Map(guestRamRegions(4 * GiB));
  assert.deepEqual(rows(four), [...LOW, [0x100000, 3 * GiB - MiB, RAM], ECAM, [4 * GiB, 1 * GiB, RAM]]);
  checkInvariants(four, 4 * GiB);
  const big = buildE820Map(guestRamRegions(6.5 * GiB));
  assert.deepEqual(rows(big).at(-1), [4 * GiB, 3.5 * GiB, RAM]);
  checkInvariants(big, 6.5 * GiB);
});

test('ECAM reservation can be left out', () => {
  const map = buildE820Map(guestRamRegions(128 * MiB), { reservePciEcam: false });
  assert.deepEqual(rows(map), [...LOW, [0x100000, 127 * MiB, RAM]]);
});

test('bad RAM layouts are refused', () => {
  assert.throws(() => guestRamRegions(1 * MiB), GuestLayoutError);
  assert.throws(() => guestRamRegions(128 * MiB + 1), /multiple of the 4096-byte page size/);
  assert.throws(() => buildE820Map([{ gpa: 0x100000, size: 64 * MiB }]), BootParamsError);
  assert.throws(() => buildE820Map([{ gpa: 0, size: 64 * MiB }, { gpa: 32 * MiB, size: MiB }]), /overlap/);
  assert.throws(() => buildE820Map([{ gpa: 0, size: 3.75 * GiB }]), /ECAM/);
});
