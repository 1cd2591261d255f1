/**
 * The generated tables checked by an independent implementation: ACPICA's iasl (Debian package
 * acpica-tools). Each table is disassembled with `iasl -d`; the DSDT's disassembly must name the
 * devices we described and recompile without errors or warnings; each data table's disassembly
 * must recompile to the same bytes (apart from the compiler ID, which iasl stamps as its own);
 * the RSDP, which this iasl cannot read as a binary, is compiled from its fields and compared.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildAcpiTables,
  CMOS_RTC,
  COM1,
  I8042,
  type AcpiConfig,
  type AcpiTables,
} from '../../src/arch/x86_64/acpi/index.js';

const CONFIG: AcpiConfig = {
  vcpuCount: 4,
  legacyDevices: [COM1, { kind: 'serial', ioBase: 0x2f8, irq: 3 }, I8042, CMOS_RTC],
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
  virtioMmioDevices: [
    { base: 0xf000_0000, size: 0x1000, gsi: 5 },
    { base: 0xf000_1000, size: 0x1000, gsi: 6 },
  ],
};

/** Header bytes iasl rewrites when it recompiles: checksum (9) and Creator ID/Revision (28–35). */
const IASL_STAMPED_HEADER_BYTES = new Set([9, 28, 29, 30, 31, 32, 33, 34, 35]);

function iasl(args: string[], cwd: string): { status: number | null; output: string } {
  const r = spawnSync('iasl', args, { cwd, encoding: 'utf8' });
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    assert.fail('iasl is not installed: run `apt-get install acpica-tools` (the ACPI tests need its disassembler)');
  }
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

function withTempDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-acpi-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function bytesOf(r: AcpiTables, signature: string): Uint8Array {
  const t = r.tables.find((x) => x.signature === signature);
  assert.ok(t, `${signature} generated`);
  return t.bytes;
}

/** Disassemble `bytes` and return the .dsl text, failing on a non-zero exit or any error/warning. */
function disassemble(dir: string, fileStem: string, bytes: Uint8Array): string {
  writeFileSync(join(dir, `${fileStem}.dat`), bytes);
  const d = iasl(['-d', `${fileStem}.dat`], dir);
  assert.equal(d.status, 0, `iasl -d ${fileStem} failed:\n${d.output}`);
  assert.doesNotMatch(d.output, /error|warning|invalid/i, `iasl -d ${fileStem} complained:\n${d.output}`);
  return readFileSync(join(dir, `${fileStem}.dsl`), 'utf8');
}

test('iasl is installed', () => {
  const r = iasl(['-v'], tmpdir());
  assert.match(r.output, /ACPI Component Architecture/);
});

test('DSDT disassembles to the described devices and recompiles cleanly', () => {
  withTempDir((dir) => {
    const dsl = disassemble(dir, 'dsdt', bytesOf(buildAcpiTables(CONFIG), 'DSDT'));
    for (const expected of [
      'DefinitionBlock ("", "DSDT", 2, "TSVMM ", "TSVMM   ", 0x00000001)',
      'Scope (\\_SB)',
      'Device (PCI0)',
      'EisaId ("PNP0A08")',
      'Name (_CID, EisaId ("PNP0A03")',
      'WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,',
      'WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,',
      'DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,',
      'QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Prefetchable, ReadWrite,',
      'Name (_PRT, Package (0x02)',
      '0x0002FFFF',
      'Device (COM1)',
      'Device (COM2)',
      'EisaId ("PNP0501")',
      'Method (_STA, 0, NotSerialized)',
      'IRQNoFlags ()\n                    {4}',
      'IRQNoFlags ()\n                    {3}',
      'Device (KBD)',
      'EisaId ("PNP0303")',
      'Device (RTC)',
      'EisaId ("PNP0B00")',
      'Device (MBRD)',
      'EisaId ("PNP0C02")',
      'Device (V000)',
      'Device (V001)',
      'Name (_HID, "LNRO0005")',
      'Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )',
      'Name (\\_S5, Package (0x04)',
    ]) {
      assert.ok(dsl.includes(expected), `DSDT disassembly contains ${JSON.stringify(expected)}`);
    }
    assert.match(dsl, /Memory32Fixed \(ReadWrite,\s+0xE0000000,\s+\/\/ Address Base\s+0x10000000,/, 'ECAM reserved');
    assert.match(dsl, /IO \(Decode16,\s+0x03F8,\s+\/\/ Range Minimum\s+0x03F8,/);
    // Recompile what iasl understood: its compiler checks the ASL semantics (names, resources).
    const c = iasl(['dsdt.dsl'], dir);
    assert.equal(c.status, 0, c.output);
    assert.match(c.output, /Compilation successful\. 0 Errors, 0 Warnings/, c.output);
  });
});

for (const [signature, stem, expected] of [
  ['FACP', 'facp', ['Hardware Reduced (V5) : 1', 'Reset Register Supported (V2) : 1', 'Sleep Control Register', '[SystemIO]', 'FADT Minor Revision : 05']],
  ['APIC', 'apic', ['[Processor Local APIC]', '[I/O APIC]', '[Interrupt Source Override]', '[Local APIC NMI]', 'Local Apic ID : 03']],
  ['MCFG', 'mcfg', ['Base Address : 00000000E0000000', 'End Bus Number : FF']],
  ['XSDT', 'xsdt', ['ACPI Table Address   0', 'ACPI Table Address   2']],
] as const) {
  test(`${signature}: iasl decodes it, and its decoding recompiles to the same bytes`, () => {
    withTempDir((dir) => {
      const original = bytesOf(buildAcpiTables(CONFIG), signature);
      const dsl = disassemble(dir, stem, original).replace(/ +/g, ' ');
      for (const e of expected) assert.ok(dsl.includes(e.replace(/ +/g, ' ')), `${signature} decoding contains "${e}"`);
      const c = iasl([`${stem}.dsl`], dir);
      assert.equal(c.status, 0, c.output);
      const recompiled = readFileSync(join(dir, `${stem}.aml`));
      assert.equal(recompiled.length, original.length);
      for (let i = 0; i < original.length; i++) {
        if (IASL_STAMPED_HEADER_BYTES.has(i)) continue;
        assert.equal(recompiled[i], original[i], `${signature} byte ${i}`);
      }
    });
  });
}

test('RSDP: iasl compiles the same 36 bytes, checksums included, from its fields', () => {
  withTempDir((dir) => {
    const r = buildAcpiTables(CONFIG);
    const rsdp = bytesOf(r, 'RSD PTR ');
    const xsdt = r.tables.find((t) => t.signature === 'XSDT')!.gpa;
    // iasl's data-table language for the RSDP (template from `iasl -T RSDP`); checksums left 0
    // for iasl to compute.
    const source = [
      '[0008] Signature : "RSD PTR "',
      '[0001] Checksum : 00',
      '[0006] Oem ID : "TSVMM "',
      '[0001] Revision : 02',
      '[0004] RSDT Address : 00000000',
      '[0004] Length : 00000024',
      `[0008] XSDT Address : ${xsdt.toString(16).toUpperCase().padStart(16, '0')}`,
      '[0001] Extended Checksum : 00',
      '[0003] Reserved : 000000',
      '',
    ].join('\n');
    writeFileSync(join(dir, 'rsdp.asl'), source);
    const c = iasl(['rsdp.asl'], dir);
    assert.equal(c.status, 0, c.output);
    assert.deepEqual([...readFileSync(join(dir, 'rsdp.aml'))], [...rsdp]);
  });
});
