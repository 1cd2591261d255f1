import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BOOT_CS, BOOT_DS, bootGdt, gdtBytes, gdtEntry, segmentFromEntry } from '../../src/arch/x86_64/gdt.js';
import { configureCpuid, cpuinfoModelName, type CpuidEntry, KvmPvFeature, HYPERVISOR_TIMING_LEAF } from '../../src/arch/x86_64/cpuid.js';
import { bootMsrs, MSR_MTRR_DEF_TYPE } from '../../src/arch/x86_64/msrs.js';

test('gdtEntry encodes Firecracker/Linux boot descriptors bit-exactly', () => {
  // Known values: 64-bit code 0x00af9b000000ffff, flat data 0x00cf93000000ffff (Intel SDM Figure 3-8).
  assert.equal(gdtEntry(0xa09b, 0, 0xfffff), 0x00af9b000000ffffn);
  assert.equal(gdtEntry(0xc093, 0, 0xfffff), 0x00cf93000000ffffn);
  assert.equal(gdtEntry(0x808b, 0, 0xfffff), 0x008f8b000000ffffn);
  // Base bits are split across the descriptor.
  assert.equal(gdtEntry(0x0093, 0x12345678, 0xabcd), 0x12009334_5678abcdn);
});

test('segmentFromEntry decodes what gdtEntry encodes', () => {
  const cs = segmentFromEntry(bootGdt('long')[2]!, BOOT_CS);
  assert.deepEqual(
    { sel: cs.selector, type: cs.type, l: cs.l, db: cs.db, g: cs.g, s: cs.s, p: cs.present, limit: cs.limit, base: cs.base },
    { sel: 0x10, type: 0xb, l: 1, db: 0, g: 1, s: 1, p: 1, limit: 0xffffffff, base: 0n },
  );
  const cs32 = segmentFromEntry(bootGdt('protected32')[2]!, BOOT_CS);
  assert.equal(cs32.l, 0);
  assert.equal(cs32.db, 1);
  const ds = segmentFromEntry(bootGdt('long')[3]!, BOOT_DS);
  assert.equal(ds.type, 0x3);
  assert.equal(ds.unusable, 0);
  const tss = segmentFromEntry(bootGdt('long')[4]!, 0x20);
  assert.equal(tss.s, 0);
  assert.equal(tss.type, 0xb);
  const nul = segmentFromEntry(0n, 0);
  assert.equal(nul.unusable, 1);
});

test('gdtBytes lays descriptors little-endian, 8 bytes each', () => {
  const b = gdtBytes(bootGdt('long'));
  assert.equal(b.length, 40);
  assert.deepEqual([...b.subarray(16, 24)], [0xff, 0xff, 0, 0, 0, 0x9b, 0xaf, 0]);
});

const supported: CpuidEntry[] = [
  { function: 0, index: 0, flags: 0, eax: 0x1f, ebx: 0x68747541, ecx: 0x444d4163, edx: 0x69746e65 },
  { function: 1, index: 0, flags: 0, eax: 0x830f10, ebx: 0xff0800, ecx: 0x0, edx: 0x178bfbff },
  { function: 0xb, index: 0, flags: 1, eax: 9, ebx: 9, ecx: 9, edx: 9 },
  { function: 0xb, index: 1, flags: 1, eax: 9, ebx: 9, ecx: 9, edx: 9 },
  { function: 0xb, index: 2, flags: 1, eax: 9, ebx: 9, ecx: 9, edx: 9 },
  { function: 0x40000000, index: 0, flags: 0, eax: 0x40000001, ebx: 0, ecx: 0, edx: 0 },
  { function: 0x40000001, index: 0, flags: 0, eax: 0x01007afb, ebx: 0, ecx: 0, edx: 0 },
  { function: 0x80000008, index: 0, flags: 0, eax: 0x3030, ebx: 0, ecx: 0xffff, edx: 0 },
];

test('configureCpuid sets per-vCPU topology, the hypervisor bit and KVM leaves', () => {
  const out = configureCpuid(supported, { vcpuId: 3, vcpuCount: 4, tscKhz: 2_500_000 });
  const leaf = (f: number, i = 0): CpuidEntry => out.find((e) => e.function === f && e.index === i)!;
  assert.equal(leaf(1).ebx >>> 24, 3, 'APIC ID');
  assert.equal((leaf(1).ebx >>> 16) & 0xff, 4, 'logical processor count');
  assert.ok(leaf(1).ecx & (1 << 31), 'hypervisor bit');
  assert.ok(leaf(1).edx & (1 << 28), 'HTT with several vCPUs');
  assert.deepEqual([leaf(0xb, 0).ebx, leaf(0xb, 0).ecx, leaf(0xb, 0).edx], [1, 0x100, 3]);
  assert.deepEqual([leaf(0xb, 1).eax, leaf(0xb, 1).ebx, leaf(0xb, 1).ecx, leaf(0xb, 1).edx], [2, 4, 0x201, 3]);
  assert.equal((leaf(0xb, 2).ecx >> 8) & 0xff, 0, 'level type invalid ends the enumeration');
  const sig = leaf(0x40000000);
  const text = Buffer.alloc(12);
  text.writeUInt32LE(sig.ebx, 0);
  text.writeUInt32LE(sig.ecx, 4);
  text.writeUInt32LE(sig.edx, 8);
  assert.equal(text.toString('latin1'), 'KVMKVMKVM\0\0\0');
  assert.equal(sig.eax, HYPERVISOR_TIMING_LEAF);
  assert.equal(leaf(HYPERVISOR_TIMING_LEAF).eax, 2_500_000);
  assert.equal(leaf(0x80000008).ecx & 0xff, 3);
  assert.equal((leaf(0x80000008).ecx >> 12) & 0xf, 2);
  // Input untouched.
  assert.equal(supported[1]!.ebx, 0xff0800);
});

test('configureCpuid masks paravirtual features as asked and handles one vCPU', () => {
  const none = configureCpuid(supported, { vcpuId: 0, vcpuCount: 1, tscKhz: 0, pvFeatures: 0 });
  assert.equal(none.find((e) => e.function === 0x40000001)!.eax, 0);
  assert.equal(none.find((e) => e.function === 0x40000000)!.eax, 0x40000001);
  assert.equal(none.find((e) => e.function === 1)!.edx & (1 << 28), 0);
  assert.ok(!none.some((e) => e.function === HYPERVISOR_TIMING_LEAF));
  const some = configureCpuid(supported, { vcpuId: 0, vcpuCount: 1, tscKhz: 0, pvFeatures: KvmPvFeature.CLOCKSOURCE2 | KvmPvFeature.PV_EOI });
  assert.equal(some.find((e) => e.function === 0x40000001)!.eax, KvmPvFeature.CLOCKSOURCE2 | KvmPvFeature.PV_EOI);
});

test('boot MSRs enable write-back MTRRs', () => {
  const m = bootMsrs().find((e) => e.index === MSR_MTRR_DEF_TYPE)!;
  assert.equal(m.data, 0x806n);
});

test('configureCpuid writes the brand string into the three brand leaves, where the CPU has them', () => {
  const withExtended: CpuidEntry[] = [
    ...supported,
    { function: 0x80000000, index: 0, flags: 0, eax: 0x80000008, ebx: 0, ecx: 0, edx: 0 },
    // KVM_GET_SUPPORTED_CPUID's brand leaves are zero; 0x80000004 may be missing altogether.
    { function: 0x80000002, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
    { function: 0x80000003, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 },
  ];
  const brand = 'AMD EPYC Processor';
  const out = configureCpuid(withExtended, { vcpuId: 0, vcpuCount: 1, tscKhz: 0, brandString: brand });
  const text = Buffer.alloc(48);
  [0x80000002, 0x80000003, 0x80000004].forEach((leaf, k) => {
    const entries = out.filter((e) => e.function === leaf);
    assert.equal(entries.length, 1, `one entry for leaf ${leaf.toString(16)}`);
    const e = entries[0]!;
    [e.eax, e.ebx, e.ecx, e.edx].forEach((r, i) => text.writeUInt32LE(r, 16 * k + 4 * i));
  });
  assert.equal(text.toString('latin1').replace(/\0+$/, ''), brand);
  assert.equal(text[47], 0, 'NUL-terminated');
  // A string too long for 48 bytes keeps its terminator.
  const long = configureCpuid(withExtended, { vcpuId: 0, vcpuCount: 1, tscKhz: 0, brandString: 'x'.repeat(60) });
  assert.equal(long.find((e) => e.function === 0x80000004)!.edx >>> 24, 0);
  // No extended leaves up to 0x80000004: nothing is added (the guest would not read them).
  const plain = configureCpuid(supported, { vcpuId: 0, vcpuCount: 1, tscKhz: 0, brandString: brand });
  assert.ok(!plain.some((e) => e.function >= 0x80000002 && e.function <= 0x80000004));
});

test('cpuinfoModelName takes the first model name, printable ASCII only', () => {
  assert.equal(cpuinfoModelName('processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nflags\t: fpu\n\nmodel name\t: other\n'), 'AMD EPYC 7B13 64-Core Processor');
  assert.equal(cpuinfoModelName('processor\t: 0\n'), undefined);
  assert.equal(cpuinfoModelName('model name\t: \n'), undefined);
  assert.equal(cpuinfoModelName('model name\t: caf\u00e9\n'), undefined);
});
