import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildE820Map } from '../../src/arch/x86_64/e820.js';
import * as L from '../../src/arch/x86_64/layout.js';
import { HvmMemmapType, XEN_HVM_START_MAGIC_VALUE, buildPvhStartInfo, writePvhStartInfo } from '../../src/arch/x86_64/pvh.js';
import { BootParamsError } from '../../src/loader/errors.js';
import { BufferGuestMemory } from '../../src/loader/guest-memory.js';

const { MiB, GiB } = L;

test('hvm_start_info fields at start_info.h offsets', () => {
  const ram = L.guestRamRegions(5 * GiB);
  const map = buildE820Map(ram);
  const mem = new BufferGuestMemory([{ gpa: 0, size: 1 * MiB }]);
  const ebx = writePvhStartInfo(mem, {
    cmdline: { gpa: L.CMDLINE_START },
    modules: [{ gpa: 200 * MiB, size: 12345 }],
    memoryMap: map,
    rsdpAddr: L.ACPI_RSDP_ADDR,
  });
  assert.equal(ebx, 0x6000);
  const si = new DataView(mem.read(ebx, 56).buffer);
  assert.equal(si.getUint32(0, true), 0x336ec578);
  assert.equal(XEN_HVM_START_MAGIC_VALUE, 0x336ec578);
  assert.equal(si.getUint32(4, true), 1); // version
  assert.equal(si.getUint32(8, true), 0); // flags
  assert.equal(si.getUint32(12, true), 1); // nr_modules
  assert.equal(si.getBigUint64(16, true), 0x6040n); // modlist_paddr
  assert.equal(si.getBigUint64(24, true), 0x20000n); // cmdline_paddr
  assert.equal(si.getBigUint64(32, true), 0xe0000n); // rsdp_paddr
  assert.equal(si.getBigUint64(40, true), 0x6100n); // memmap_paddr
  assert.equal(si.getUint32(48, true), map.length); // memmap_entries
  assert.equal(si.getUint32(52, true), 0); // reserved
  const mod = new DataView(mem.read(0x6040, 32).buffer);
  assert.equal(mod.getBigUint64(0, true), BigInt(200 * MiB));
  assert.equal(mod.getBigUint64(8, true), 12345n);
  assert.equal(mod.getBigUint64(16, true), 0n);
  const mm = new DataView(mem.read(0x6100, 24 * map.length).buffer);
  map.forEach((e, i) => {
    assert.equal(mm.getBigUint64(i * 24, true), BigInt(e.addr));
    assert.equal(mm.getBigUint64(i * 24 + 8, true), BigInt(e.size));
    assert.equal(mm.getUint32(i * 24 + 16, true), e.type);
    assert.equal(mm.getUint32(i * 24 + 20, true), 0);
  });
  assert.equal(mm.getUint32(16, true), HvmMemmapType.RAM);
  assert.equal(mm.getUint32(24 * 2 + 16, true), HvmMemmapType.ACPI);
  assert.equal(Number(mm.getBigUint64(24 * (map.length - 1), true)), 4 * GiB);
});

test('no modules: nr_modules 0 and modlist_paddr 0; too many entries refused', () => {
  const { placements } = buildPvhStartInfo({ cmdline: { gpa: L.CMDLINE_START }, memoryMap: buildE820Map(L.guestRamRegions(128 * MiB)) });
  assert.equal(placements.length, 2);
  const si = new DataView(placements[0]!.bytes.buffer);
  assert.equal(si.getUint32(12, true), 0);
  assert.equal(si.getBigUint64(16, true), 0n);
  const many = Array.from({ length: 129 }, (_, i) => ({ addr: i * 4096, size: 4096, type: 1 as const }));
  assert.throws(() => buildPvhStartInfo({ cmdline: { gpa: 0 }, memoryMap: many }), BootParamsError);
  const mods = Array.from({ length: 7 }, () => ({ gpa: 0, size: 1 }));
  assert.throws(() => buildPvhStartInfo({ cmdline: { gpa: 0 }, memoryMap: [], modules: mods }), BootParamsError);
});
