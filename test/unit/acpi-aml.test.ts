/**
 * The AML builder, byte by byte against ACPI 6.5 §20.2 (AML grammar) and §6.4 (resource
 * descriptors). Expected bytes are written out by hand from the spec, not computed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AmlError,
  AML_ONES,
  buffer,
  device,
  dwordMemory,
  eisaId,
  eisaIdValue,
  encodePkgLength,
  extendedInterrupt,
  integer,
  ioPort,
  irqNoFlags,
  memory32Fixed,
  method,
  name,
  nameString,
  ones,
  pkg,
  pkgLength,
  prt,
  qwordMemory,
  resourceTemplate,
  returnValue,
  scope,
  sleepStateS5,
  string,
  wordBusNumber,
  wordIo,
} from '../../src/arch/x86_64/acpi/aml.js';

const bytes = (u: Uint8Array): number[] => [...u];
const ascii = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

test('PkgLength: each form up to its limit, and the next value takes the next form (§20.2.4)', () => {
  assert.deepEqual(bytes(encodePkgLength(0)), [0x00]);
  assert.deepEqual(bytes(encodePkgLength(63)), [0x3f]);
  // 64: two bytes; lead = 01 (one following byte) << 6 | low nibble 0; then 64 >> 4 = 4.
  assert.deepEqual(bytes(encodePkgLength(64)), [0x40, 0x04]);
  assert.deepEqual(bytes(encodePkgLength(0x123)), [0x43, 0x12]);
  assert.deepEqual(bytes(encodePkgLength(4095)), [0x4f, 0xff]);
  assert.deepEqual(bytes(encodePkgLength(4096)), [0x80, 0x00, 0x01]);
  assert.deepEqual(bytes(encodePkgLength(0xfffff)), [0x8f, 0xff, 0xff]);
  assert.deepEqual(bytes(encodePkgLength(0x100000)), [0xc0, 0x00, 0x00, 0x01]);
  assert.deepEqual(bytes(encodePkgLength(0xfffffff)), [0xcf, 0xff, 0xff, 0xff]);
  assert.throws(() => encodePkgLength(0x10000000), AmlError);
  assert.throws(() => encodePkgLength(-1), AmlError);
});

test('pkgLength(body) counts its own bytes: 62/63 and 4093/4094 body bytes switch forms', () => {
  assert.deepEqual(bytes(pkgLength(0)), [0x01]);
  assert.deepEqual(bytes(pkgLength(62)), [63]);
  assert.deepEqual(bytes(pkgLength(63)), [0x41, 0x04]); // 63 + 2 = 65 = 0x41
  assert.deepEqual(bytes(pkgLength(4093)), [0x4f, 0xff]); // 4093 + 2 = 4095
  assert.deepEqual(bytes(pkgLength(4094)), [0x81, 0x00, 0x01]); // 4094 + 3 = 4097
  assert.deepEqual(bytes(pkgLength(0xfffff - 3)), [0x8f, 0xff, 0xff]);
  assert.deepEqual(bytes(pkgLength(0xfffff - 2)), [0xc1, 0x00, 0x00, 0x01]); // + 4 = 0x100001
  assert.throws(() => pkgLength(0xfffffff), AmlError);
});

test('a buffer whose PkgLength crosses the one-byte limit is encoded and measured correctly', () => {
  // BufferOp, PkgLength, BytePrefix n, n bytes: body = 2 + n.
  const small = buffer(new Uint8Array(61)); // body 63 → 2-byte PkgLength 65
  assert.deepEqual(bytes(small.subarray(0, 5)), [0x11, 0x41, 0x04, 0x0a, 61]);
  assert.equal(small.length, 1 + 2 + 2 + 61);
  const smaller = buffer(new Uint8Array(60)); // body 62 → PkgLength 63
  assert.deepEqual(bytes(smaller.subarray(0, 4)), [0x11, 63, 0x0a, 60]);
  const big = buffer(new Uint8Array(5000)); // WordPrefix size, body 5003 → 3-byte form 5006
  assert.deepEqual(bytes(big.subarray(0, 7)), [0x11, 0x8e, 0x38, 0x01, 0x0b, 0x88, 0x13]);
  assert.equal(big.length, 1 + 3 + 3 + 5000);
});

test('integers take the shortest encoding (§20.2.3)', () => {
  assert.deepEqual(bytes(integer(0)), [0x00]);
  assert.deepEqual(bytes(integer(1)), [0x01]);
  assert.deepEqual(bytes(integer(2)), [0x0a, 0x02]);
  assert.deepEqual(bytes(integer(0xff)), [0x0a, 0xff]);
  assert.deepEqual(bytes(integer(0x100)), [0x0b, 0x00, 0x01]);
  assert.deepEqual(bytes(integer(0xffff)), [0x0b, 0xff, 0xff]);
  assert.deepEqual(bytes(integer(0x10000)), [0x0c, 0x00, 0x00, 0x01, 0x00]);
  assert.deepEqual(bytes(integer(0xffffffff)), [0x0c, 0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(bytes(integer(0x1_0000_0000)), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
  assert.deepEqual(bytes(integer(0x0123_4567_89ab_cdefn)), [0x0e, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01]);
  assert.deepEqual(bytes(integer(AML_ONES)), [0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assert.deepEqual(bytes(ones()), [0xff]);
  assert.throws(() => integer(-1), AmlError);
  assert.throws(() => integer(1.5), AmlError);
  assert.throws(() => integer(AML_ONES + 1n), AmlError);
  assert.throws(() => integer(2 ** 60), AmlError, 'unsafe JS numbers must come as bigint');
});

test('name strings: padding, root and parent prefixes, dual and multi segments (§20.2.2)', () => {
  assert.deepEqual(bytes(nameString('_SB')), ascii('_SB_'));
  assert.deepEqual(bytes(nameString('COM1')), ascii('COM1'));
  assert.deepEqual(bytes(nameString('\\_SB_')), [0x5c, ...ascii('_SB_')]);
  assert.deepEqual(bytes(nameString('_SB.PCI0')), [0x2e, ...ascii('_SB_PCI0')]);
  assert.deepEqual(bytes(nameString('\\_SB.PCI0.S08')), [0x5c, 0x2f, 3, ...ascii('_SB_PCI0S08_')]);
  assert.deepEqual(bytes(nameString('^^FOO')), [0x5e, 0x5e, ...ascii('FOO_')]);
  assert.deepEqual(bytes(nameString('\\')), [0x5c, 0x00]);
  for (const bad of ['', '1ABC', 'ABCDE', 'com1', 'A-B', '_SB..X', '\\^A']) {
    assert.throws(() => nameString(bad), AmlError, bad);
  }
});

test('strings are ASCII, NUL-terminated after StringPrefix', () => {
  assert.deepEqual(bytes(string('LNRO0005')), [0x0d, ...ascii('LNRO0005'), 0x00]);
  assert.deepEqual(bytes(string('')), [0x0d, 0x00]);
  assert.throws(() => string('é'), AmlError);
  assert.throws(() => string('a\0b'), AmlError);
});

test('EISAID compresses three letters and four hex digits into a byte-swapped DWord', () => {
  assert.equal(eisaIdValue('PNP0A03'), 0x030ad041);
  assert.equal(eisaIdValue('PNP0A08'), 0x080ad041);
  assert.equal(eisaIdValue('PNP0501'), 0x0105d041);
  assert.equal(eisaIdValue('PNP0303'), 0x0303d041);
  assert.equal(eisaIdValue('PNP0B00'), 0x000bd041);
  assert.deepEqual(bytes(eisaId('PNP0A03')), [0x0c, 0x41, 0xd0, 0x0a, 0x03]);
  assert.throws(() => eisaIdValue('pnp0a03'), AmlError);
  assert.throws(() => eisaIdValue('PNP0A0'), AmlError);
});

test('Name, Package, Method, Return, Device and Scope encodings', () => {
  assert.deepEqual(bytes(name('_UID', 1)), [0x08, ...ascii('_UID'), 0x01]);
  assert.deepEqual(bytes(name('_HID', 'LNRO0005')), [0x08, ...ascii('_HID'), 0x0d, ...ascii('LNRO0005'), 0x00]);
  // PackageOp PkgLength NumElements elements: 1 + 1 + 1 + 2 = 5.
  assert.deepEqual(bytes(pkg([1, 2])), [0x12, 0x05, 0x02, 0x01, 0x0a, 0x02]);
  assert.deepEqual(bytes(pkg([])), [0x12, 0x02, 0x00]);
  const big = pkg(Array.from({ length: 256 }, () => 0));
  assert.equal(big[0], 0x13, 'more than 255 elements need VarPackageOp');
  assert.deepEqual(bytes(returnValue(0x0f)), [0xa4, 0x0a, 0x0f]);
  // MethodOp PkgLength(1 + 4 + 1 + 3 = 9) "_STA" flags ReturnOp BytePrefix 0x0F.
  assert.deepEqual(bytes(method('_STA', { argCount: 0 }, [returnValue(0x0f)])), [0x14, 0x09, ...ascii('_STA'), 0x00, 0xa4, 0x0a, 0x0f]);
  // 2 arguments, serialized (bit 3), sync level 3 (bits 7:4).
  assert.equal(method('FOO', { argCount: 2, serialized: true, syncLevel: 3 }, [])[6], 0x3a);
  assert.throws(() => method('FOO', { argCount: 8 }, []), AmlError);
  assert.deepEqual(bytes(device('COM1', [])), [0x5b, 0x82, 0x05, ...ascii('COM1')]);
  assert.deepEqual(bytes(scope('\\_SB_', [])), [0x10, 0x06, 0x5c, ...ascii('_SB_')]);
  // A device whose body crosses 63 bytes gets a 2-byte PkgLength.
  const d = device('DEV0', [name('_STR', 'x'.repeat(60))]);
  // body: "DEV0"(4) + NameOp(1) + "_STR"(4) + String(1 + 60 + 1) = 71 → PkgLength 73 = 0x49.
  assert.deepEqual(bytes(d.subarray(0, 4)), [0x5b, 0x82, 0x49, 0x04]);
  assert.equal(d.length, 2 + 2 + 71);
});

test('small resource descriptors: IO, IRQNoFlags (§6.4.2.1, §6.4.2.5)', () => {
  assert.deepEqual(bytes(ioPort(0x3f8, 0x3f8, 8, 8)), [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x08, 0x08]);
  assert.deepEqual(bytes(irqNoFlags([4])), [0x22, 0x10, 0x00]);
  assert.deepEqual(bytes(irqNoFlags([1, 12])), [0x22, 0x02, 0x10]);
  assert.throws(() => irqNoFlags([16]), AmlError);
  assert.throws(() => ioPort(0x10000, 0, 1, 1), AmlError);
});

test('large resource descriptors: Memory32Fixed, Interrupt, Word/DWord/QWord address spaces (§6.4.3)', () => {
  assert.deepEqual(bytes(memory32Fixed(0xf0000000, 0x1000)), [0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0xf0, 0x00, 0x10, 0, 0]);
  assert.deepEqual(bytes(extendedInterrupt([5], { trigger: 'edge', polarity: 'high' })), [0x89, 0x06, 0x00, 0x03, 0x01, 5, 0, 0, 0]);
  // Level (bit 1 clear), active-low (bit 2), shared (bit 3), consumer (bit 0): 0x0D.
  assert.equal(extendedInterrupt([16, 17], { trigger: 'level', polarity: 'low', shared: true })[3], 0x0d);
  assert.equal(extendedInterrupt([16, 17], { trigger: 'level', polarity: 'low' })[1], 2 + 4 * 2);

  const bus = wordBusNumber({ min: 0, length: 256 });
  assert.deepEqual(bytes(bus), [0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0, 0, 0x00, 0x00, 0xff, 0x00, 0, 0, 0x00, 0x01]);
  const io = wordIo({ min: 0x1000, length: 0xf000 });
  assert.deepEqual(bytes(io.subarray(0, 6)), [0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03]);
  assert.equal(io.length, 16);

  const m32 = dwordMemory({ min: 0xc0000000, length: 0x20000000 });
  assert.equal(m32.length, 3 + 23);
  assert.deepEqual(bytes(m32.subarray(0, 6)), [0x87, 0x17, 0x00, 0x00, 0x0c, 0x01]); // RW, non-cacheable
  assert.deepEqual(bytes(m32.subarray(10, 18)), [0, 0, 0, 0xc0, 0xff, 0xff, 0xff, 0xdf]); // min, max
  assert.deepEqual(bytes(m32.subarray(22, 26)), [0, 0, 0, 0x20]); // length

  const m64 = qwordMemory({ min: 0x100_0000_0000, length: 0x40_0000_0000 }, { cacheability: 'prefetchable' });
  assert.equal(m64.length, 3 + 43);
  assert.deepEqual(bytes(m64.subarray(0, 6)), [0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x07]); // RW | prefetchable << 1
  assert.throws(() => dwordMemory({ min: 0xf0000000, length: 0x20000000 }), AmlError, 'must not cross 4 GiB');
});

test('ResourceTemplate: a Buffer ending in an End Tag whose checksum zeroes the resource bytes (§6.4.2.9)', () => {
  const t = resourceTemplate([ioPort(0x60, 0x60, 1, 1), irqNoFlags([1])]);
  // BufferOp PkgLength BytePrefix 13 | 8 + 3 + 2 bytes of resources
  assert.deepEqual(bytes(t.subarray(0, 4)), [0x11, 16, 0x0a, 13]);
  const data = t.subarray(4);
  assert.equal(data.length, 13);
  assert.equal(data[11], 0x79);
  assert.equal(data.reduce((s, b) => (s + b) & 0xff, 0), 0);
});

test('_PRT entries are {device << 16 | 0xFFFF, pin, 0, GSI} (§6.2.13)', () => {
  const p = prt([{ device: 1, pin: 0, gsi: 16 }]);
  const entry = [0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x0a, 0x10];
  assert.deepEqual(bytes(p), [0x08, ...ascii('_PRT'), 0x12, 2 + entry.length, 0x01, ...entry]);
  assert.throws(() => prt([{ device: 32, pin: 0, gsi: 16 }]), AmlError);
});

test('\\_S5 package names SLP_TYP for soft-off', () => {
  assert.deepEqual(bytes(sleepStateS5(5)), [0x08, 0x5c, ...ascii('_S5_'), 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00]);
  assert.throws(() => sleepStateS5(8), AmlError);
});
