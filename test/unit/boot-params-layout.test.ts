import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as L from '../../src/arch/x86_64/layout.js';
import { HVM_MEMMAP_ENTRY_SIZE, HVM_MODLIST_ENTRY_SIZE, HVM_START_INFO_SIZE } from '../../src/arch/x86_64/pvh.js';

test('low-memory boot structures do not overlap and stay below the EBDA', () => {
  const areas: [string, number, number][] = [
    ['GDT', L.BOOT_GDT_START, L.BOOT_GDT_MAX_ENTRIES * 8],
    ['IDT', L.BOOT_IDT_START, 8],
    ['PVH start_info', L.PVH_INFO_START, HVM_START_INFO_SIZE],
    ['PVH modlist', L.PVH_MODLIST_START, L.PVH_MODLIST_MAX_ENTRIES * HVM_MODLIST_ENTRY_SIZE],
    ['PVH memmap', L.PVH_MEMMAP_START, L.PVH_MEMMAP_MAX_ENTRIES * HVM_MEMMAP_ENTRY_SIZE],
    ['zero page', L.ZERO_PAGE_START, L.ZERO_PAGE_SIZE],
    ['stack page', L.BOOT_STACK_POINTER & ~0xfff, 0x1000],
    ['PML4', L.PML4_START, 0x1000],
    ['PDPT', L.PDPT_START, 0x1000],
    ['PD', L.PD_START, 0x1000],
    ['cmdline', L.CMDLINE_START, L.CMDLINE_MAX_SIZE],
  ];
  const sorted = [...areas].sort((a, b) => a[1] - b[1]);
  for (let i = 1; i < sorted.length; i++) {
    const [pn, ps, pl] = sorted[i - 1]!;
    assert.ok(ps + pl <= sorted[i]![1], `${pn} overlaps ${sorted[i]![0]}`);
  }
  const [, ls, ll] = sorted.at(-1)!;
  assert.ok(ls + ll <= L.EBDA_START);
  assert.ok(L.BOOT_GDT_START >= 0x500); // above the IVT and BDA
});

test('MMIO hole layout', () => {
  assert.equal(L.MMIO_HOLE_START, 0xc000_0000);
  assert.equal(L.PCI_ECAM_START, 0xe000_0000);
  assert.equal(L.PLATFORM_MMIO_START, 0xf000_0000);
  assert.ok(L.PLATFORM_MMIO_START + L.PLATFORM_MMIO_SIZE <= L.IOAPIC_START);
  assert.ok(L.IOAPIC_START + L.IOAPIC_SIZE <= L.LAPIC_START);
  assert.ok(L.LAPIC_START + L.LAPIC_MSI_WINDOW_SIZE <= L.MMIO_HOLE_END);
  assert.ok(L.ACPI_RSDP_ADDR >= 0xe0000 && L.ACPI_TABLES_END === L.HIMEM_START);
});

test('RAM split around the hole', () => {
  assert.deepEqual(L.guestRamRegions(128 * L.MiB), [{ gpa: 0, size: 128 * L.MiB }]);
  assert.deepEqual(L.guestRamRegions(4 * L.GiB), [{ gpa: 0, size: 3 * L.GiB }, { gpa: 4 * L.GiB, size: L.GiB }]);
  assert.equal(L.ramEnd(L.guestRamRegions(4 * L.GiB)), 5 * L.GiB);
});
