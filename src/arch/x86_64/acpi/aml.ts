/**
 * A small typed builder for ACPI Machine Language (AML), the byte code of the DSDT.
 *
 * Each function returns the encoded bytes of one AML term, so a DSDT body is plain composition:
 * `scope('\\_SB_', [device('COM1', [name('_HID', eisaId('PNP0501')), …])])`. Only the subset a
 * VMM needs to describe its devices is here: names, integers, strings, buffers, packages, Name,
 * Scope, Device, Method, Return and resource templates. Grammar references are to ACPI 6.5
 * §20.2 (AML Grammar Definition); resource descriptors to §6.4 (Resource Data Types).
 */
import { TsvmmError } from '../../../util/errors.js';

declare const amlBrand: unique symbol;
/** Encoded AML: one term or data object, ready to be concatenated into a definition block. */
export type Aml = Uint8Array & { readonly [amlBrand]: 'aml' };

declare const resourceBrand: unique symbol;
/** One encoded resource descriptor (ACPI 6.5 §6.4), an element of `resourceTemplate()`. */
export type ResourceDescriptor = Uint8Array & { readonly [resourceBrand]: 'resource' };

/**
 * What may stand where AML expects a data object (Name value, Package element, Return value):
 * encoded AML, a JS integer (encoded by `integer`), or a JS string (encoded by `string`).
 */
export type AmlData = Aml | number | bigint | string;

/** A name, value or structure that cannot be encoded. */
export class AmlError extends TsvmmError {}

// --- Opcodes and prefixes: ACPI 6.5 §20.2.2 (Name Objects), §20.2.3 (Data Objects), §20.2.5 (Term Objects).
const ZERO_OP = 0x00;
const ONE_OP = 0x01;
const NAME_OP = 0x08;
const BYTE_PREFIX = 0x0a;
const WORD_PREFIX = 0x0b;
const DWORD_PREFIX = 0x0c;
const STRING_PREFIX = 0x0d;
const QWORD_PREFIX = 0x0e;
const SCOPE_OP = 0x10;
const BUFFER_OP = 0x11;
const PACKAGE_OP = 0x12;
const VAR_PACKAGE_OP = 0x13;
const METHOD_OP = 0x14;
const DUAL_NAME_PREFIX = 0x2e;
const MULTI_NAME_PREFIX = 0x2f;
const EXT_OP_PREFIX = 0x5b;
/** DeviceOp is ExtOpPrefix 0x82 (§20.2.5.2). */
const DEVICE_OP_SUFFIX = 0x82;
const ROOT_CHAR = 0x5c; // '\'
const PARENT_PREFIX_CHAR = 0x5e; // '^'
const NULL_NAME = 0x00;
const RETURN_OP = 0xa4;
const ONES_OP = 0xff;

/** A NameSeg is exactly four characters (§20.2.2); shorter names are padded with '_'. */
const NAME_SEG_LENGTH = 4;
/** Most arguments a control method can declare: MethodFlags bits 2:0 (§20.2.5.2). */
const MAX_METHOD_ARGS = 7;
/** MethodFlags bit 3: SerializeFlag (§20.2.5.2). */
const METHOD_SERIALIZED = 1 << 3;
/** Highest SyncLevel, MethodFlags bits 7:4 (§20.2.5.2). */
const MAX_SYNC_LEVEL = 15;
/** PackageOp's NumElements is a ByteData; longer packages need VarPackageOp (§20.2.5.4). */
const MAX_PACKAGE_ELEMENTS = 0xff;

/** The all-ones 64-bit integer that OnesOp stands for in a revision ≥ 2 definition block (§19.6.95). */
export const AML_ONES = 0xffff_ffff_ffff_ffffn;

function aml(bytes: ArrayLike<number>): Aml {
  return Uint8Array.from(bytes) as Aml;
}

/** Concatenate encoded pieces into one. */
export function concat(parts: readonly Uint8Array[]): Aml {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out as Aml;
}

// ---------------------------------------------------------------------------------------------
// PkgLength (§20.2.4)
// ---------------------------------------------------------------------------------------------

/**
 * Largest value each PkgLength form holds (§20.2.4): the one-byte form keeps the value in bits
 * 5:0; the longer forms keep the low nibble in the lead byte (bits 3:0) and 8 more bits per
 * following byte, their count in lead-byte bits 7:6.
 */
const PKG_LENGTH_MAX_BY_SIZE = [0, 0x3f, 0xfff, 0xf_ffff, 0xfff_ffff] as const;

/** Encode `value` as a PkgLength using the shortest form that holds it. */
export function encodePkgLength(value: number): Aml {
  if (!Number.isSafeInteger(value) || value < 0 || value > PKG_LENGTH_MAX_BY_SIZE[4]) {
    throw new AmlError(`PkgLength ${value} is out of range 0..0x${PKG_LENGTH_MAX_BY_SIZE[4].toString(16)}`);
  }
  if (value <= PKG_LENGTH_MAX_BY_SIZE[1]) return aml([value]);
  const following = value <= PKG_LENGTH_MAX_BY_SIZE[2] ? 1 : value <= PKG_LENGTH_MAX_BY_SIZE[3] ? 2 : 3;
  const out = [(following << 6) | (value & 0x0f)];
  for (let i = 0; i < following; i++) out.push((value >>> (4 + 8 * i)) & 0xff);
  return aml(out);
}

/**
 * The PkgLength that precedes a body of `bodyLength` bytes. A PkgLength counts its own bytes
 * too (§20.2.4), so the form is the smallest `n` with `bodyLength + n` fitting an `n`-byte
 * encoding: a 63-byte body needs the 2-byte form (65 > 63), a 62-byte body does not (63).
 */
export function pkgLength(bodyLength: number): Aml {
  for (let size = 1; size <= 4; size++) {
    const total = bodyLength + size;
    if (total <= PKG_LENGTH_MAX_BY_SIZE[size as 1 | 2 | 3 | 4]) return encodePkgLength(total);
  }
  throw new AmlError(`an AML package body of ${bodyLength} bytes is too long for a PkgLength`);
}

/** `op PkgLength body` — the shape of every length-prefixed term. */
function withPkgLength(op: readonly number[], body: readonly Uint8Array[]): Aml {
  const inner = concat(body);
  return concat([aml(op), pkgLength(inner.length), inner]);
}

// ---------------------------------------------------------------------------------------------
// Names (§20.2.2)
// ---------------------------------------------------------------------------------------------

const LEAD_NAME_CHAR = /^[A-Z_]$/;
const NAME_CHAR = /^[A-Z0-9_]$/;

function nameSeg(seg: string, path: string): number[] {
  if (seg.length === 0 || seg.length > NAME_SEG_LENGTH) {
    throw new AmlError(`AML name segment "${seg}" in "${path}" must be 1 to 4 characters`);
  }
  const padded = seg.padEnd(NAME_SEG_LENGTH, '_');
  if (!LEAD_NAME_CHAR.test(padded[0]!) || ![...padded.slice(1)].every((c) => NAME_CHAR.test(c))) {
    throw new AmlError(`AML name segment "${seg}" in "${path}" must be A-Z or _ then A-Z, 0-9 or _`);
  }
  return [...padded].map((c) => c.charCodeAt(0));
}

/**
 * Encode a NameString: an optional root ('\') or parent prefixes ('^'), then dot-separated
 * segments of up to four characters, each padded with '_' ("PCI0", "_SB.PCI0", "\_S5", "^^FOO").
 * One segment is written bare, two after DualNamePrefix, more after MultiNamePrefix and a count;
 * a bare prefix ("\") ends in NullName.
 */
export function nameString(path: string): Aml {
  let i = 0;
  const prefix: number[] = [];
  if (path.startsWith('\\')) {
    prefix.push(ROOT_CHAR);
    i = 1;
  } else {
    while (path[i] === '^') {
      prefix.push(PARENT_PREFIX_CHAR);
      i++;
    }
  }
  const rest = path.slice(i);
  const segs = rest === '' ? [] : rest.split('.');
  if (segs.length === 0 && prefix.length === 0) throw new AmlError('an AML name cannot be empty');
  if (segs.length > 0xff) throw new AmlError(`AML name "${path}" has more than 255 segments`);
  const encoded = segs.flatMap((s) => nameSeg(s, path));
  switch (segs.length) {
    case 0:
      return aml([...prefix, NULL_NAME]);
    case 1:
      return aml([...prefix, ...encoded]);
    case 2:
      return aml([...prefix, DUAL_NAME_PREFIX, ...encoded]);
    default:
      return aml([...prefix, MULTI_NAME_PREFIX, segs.length, ...encoded]);
  }
}

// ---------------------------------------------------------------------------------------------
// Data objects (§20.2.3)
// ---------------------------------------------------------------------------------------------

function littleEndian(value: bigint, bytes: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < bytes; i++) out.push(Number((value >> BigInt(8 * i)) & 0xffn));
  return out;
}

function toUint64(value: number | bigint, what: string): bigint {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new AmlError(`${what} ${value} is not an integer (use a bigint beyond 2^53)`);
  }
  const v = BigInt(value);
  if (v < 0n || v > AML_ONES) throw new AmlError(`${what} ${value} does not fit an unsigned 64-bit AML integer`);
  return v;
}

/**
 * An integer in its shortest encoding: ZeroOp, OneOp, then Byte/Word/DWord/QWord prefix by
 * magnitude (§20.2.3 ComputationalData, ConstObj). All-ones is spelled out as a QWord: OnesOp
 * means all-ones of the *table's* integer width, which `ones()` asks for explicitly.
 */
export function integer(value: number | bigint): Aml {
  const v = toUint64(value, 'AML integer');
  if (v === 0n) return aml([ZERO_OP]);
  if (v === 1n) return aml([ONE_OP]);
  if (v <= 0xffn) return aml([BYTE_PREFIX, Number(v)]);
  if (v <= 0xffffn) return aml([WORD_PREFIX, ...littleEndian(v, 2)]);
  if (v <= 0xffff_ffffn) return aml([DWORD_PREFIX, ...littleEndian(v, 4)]);
  return aml([QWORD_PREFIX, ...littleEndian(v, 8)]);
}

/** An integer always written as DWordPrefix + 4 bytes (how ASL compilers emit EISAID values). */
export function dword(value: number): Aml {
  const v = toUint64(value, 'AML DWord');
  if (v > 0xffff_ffffn) throw new AmlError(`AML DWord 0x${v.toString(16)} does not fit 32 bits`);
  return aml([DWORD_PREFIX, ...littleEndian(v, 4)]);
}

/** ZeroOp. */
export function zero(): Aml {
  return aml([ZERO_OP]);
}
/** OneOp. */
export function one(): Aml {
  return aml([ONE_OP]);
}
/** OnesOp: all bits set in the definition block's integer width (§20.2.3). */
export function ones(): Aml {
  return aml([ONES_OP]);
}

/** A String: StringPrefix, ASCII characters 0x01–0x7F, NUL (§20.2.3). */
export function string(s: string): Aml {
  const codes = [...s].map((c) => c.charCodeAt(0));
  if (codes.some((c) => c < 0x01 || c > 0x7f)) throw new AmlError(`AML string "${s}" must be ASCII without NUL`);
  return aml([STRING_PREFIX, ...codes, 0x00]);
}

/** A Buffer of fixed bytes: BufferOp PkgLength BufferSize ByteList (§20.2.5.4 DefBuffer). */
export function buffer(bytes: ArrayLike<number>): Aml {
  const data = Uint8Array.from(bytes);
  return withPkgLength([BUFFER_OP], [integer(data.length), data]);
}

function dataObject(value: AmlData): Aml {
  if (typeof value === 'number' || typeof value === 'bigint') return integer(value);
  if (typeof value === 'string') return string(value);
  return value;
}

/**
 * A Package (§20.2.5.4 DefPackage): PackageOp PkgLength NumElements elements; more than 255
 * elements use VarPackageOp, whose count is an integer term.
 */
export function pkg(elements: readonly AmlData[]): Aml {
  const encoded = elements.map(dataObject);
  if (elements.length <= MAX_PACKAGE_ELEMENTS) {
    return withPkgLength([PACKAGE_OP], [aml([elements.length]), ...encoded]);
  }
  return withPkgLength([VAR_PACKAGE_OP], [integer(elements.length), ...encoded]);
}

// ---------------------------------------------------------------------------------------------
// Named objects and statements (§20.2.5)
// ---------------------------------------------------------------------------------------------

/** Name(path, value): NameOp NameString DataRefObject (§20.2.5.1 DefName). */
export function name(path: string, value: AmlData): Aml {
  return concat([aml([NAME_OP]), nameString(path), dataObject(value)]);
}

/** Scope(path) { terms }: ScopeOp PkgLength NameString TermList (§20.2.5.1 DefScope). */
export function scope(path: string, terms: readonly Aml[]): Aml {
  return withPkgLength([SCOPE_OP], [nameString(path), ...terms]);
}

/** Device(path) { terms }: ExtOpPrefix DeviceOp PkgLength NameString TermList (§20.2.5.2 DefDevice). */
export function device(path: string, terms: readonly Aml[]): Aml {
  return withPkgLength([EXT_OP_PREFIX, DEVICE_OP_SUFFIX], [nameString(path), ...terms]);
}

/** How a control method is declared (§20.2.5.2 MethodFlags). */
export interface MethodOptions {
  /** Number of arguments, 0–7. */
  readonly argCount: number;
  /** Serialized methods run one at a time (SerializeFlag). Default false. */
  readonly serialized?: boolean;
  /** SyncLevel 0–15; only meaningful when serialized. Default 0. */
  readonly syncLevel?: number;
}

/** Method(path, …) { terms }: MethodOp PkgLength NameString MethodFlags TermList (§20.2.5.2 DefMethod). */
export function method(path: string, options: MethodOptions, terms: readonly Aml[]): Aml {
  const { argCount, serialized = false, syncLevel = 0 } = options;
  if (!Number.isInteger(argCount) || argCount < 0 || argCount > MAX_METHOD_ARGS) {
    throw new AmlError(`method ${path}: argument count ${argCount} must be 0..${MAX_METHOD_ARGS}`);
  }
  if (!Number.isInteger(syncLevel) || syncLevel < 0 || syncLevel > MAX_SYNC_LEVEL) {
    throw new AmlError(`method ${path}: sync level ${syncLevel} must be 0..${MAX_SYNC_LEVEL}`);
  }
  const flags = argCount | (serialized ? METHOD_SERIALIZED : 0) | (syncLevel << 4);
  return withPkgLength([METHOD_OP], [nameString(path), aml([flags]), ...terms]);
}

/** Return(value): ReturnOp ArgObject (§20.2.5.3 DefReturn). */
export function returnValue(value: AmlData): Aml {
  return concat([aml([RETURN_OP]), dataObject(value)]);
}

// ---------------------------------------------------------------------------------------------
// EISA IDs (§6.1.5 _HID; ASL EISAID macro §19.6.35)
// ---------------------------------------------------------------------------------------------

const EISA_ID_PATTERN = /^[A-Z]{3}[0-9A-F]{4}$/;

/**
 * The 32-bit compressed EISA ID of "LLLhhhh": three letters of 5 bits each (A = 1) and four hex
 * digits form a big-endian 32-bit value, stored in the AML integer little-endian — so the
 * integer is that value byte-swapped: EisaId("PNP0A03") = 0x030AD041.
 */
export function eisaIdValue(id: string): number {
  if (!EISA_ID_PATTERN.test(id)) throw new AmlError(`EISA ID "${id}" must be 3 capital letters and 4 hex digits`);
  const letters = ((id.charCodeAt(0) & 0x1f) << 10) | ((id.charCodeAt(1) & 0x1f) << 5) | (id.charCodeAt(2) & 0x1f);
  const product = parseInt(id.slice(3), 16);
  const bigEndian = ((letters << 16) | product) >>> 0;
  return (
    (((bigEndian & 0xff) << 24) | ((bigEndian & 0xff00) << 8) | ((bigEndian >>> 8) & 0xff00) | (bigEndian >>> 24)) >>> 0
  );
}

/** EISAID("PNP0501") as the DWord integer an ASL compiler emits. */
export function eisaId(id: string): Aml {
  return dword(eisaIdValue(id));
}

// ---------------------------------------------------------------------------------------------
// Resource descriptors (§6.4) and ResourceTemplate
// ---------------------------------------------------------------------------------------------

/** Small resource item tags: name in bits 6:3, byte length in bits 2:0 (§6.4.2). */
const SMALL_IRQ_NO_FLAGS_TAG = 0x22; // IRQ descriptor, length 2 (§6.4.2.1, Table 6.28)
const SMALL_IO_PORT_TAG = 0x47; // I/O port descriptor, length 7 (§6.4.2.5, Table 6.33)
const SMALL_END_TAG = 0x79; // End tag, length 1 (§6.4.2.9, Table 6.37)
/** Large resource item tags: bit 7 set, name in bits 6:0, then a 16-bit length (§6.4.3). */
const LARGE_MEMORY32_FIXED_TAG = 0x86; // §6.4.3.4, Table 6.43
const LARGE_DWORD_ADDRESS_TAG = 0x87; // §6.4.3.5.2, Table 6.46
const LARGE_WORD_ADDRESS_TAG = 0x88; // §6.4.3.5.3, Table 6.47
const LARGE_EXTENDED_IRQ_TAG = 0x89; // §6.4.3.6, Table 6.52
const LARGE_QWORD_ADDRESS_TAG = 0x8a; // §6.4.3.5.1, Table 6.45

/** I/O port descriptor Information bit 0: decodes 16 address lines (§6.4.2.5). */
const IO_DECODE_16 = 0x01;
/** Memory32Fixed Information bit 0: read-write (§6.4.3.4). */
const MEMORY_READ_WRITE = 0x01;
/** ISA IRQs are 0–15; the IRQ descriptor carries them as a 16-bit mask (§6.4.2.1). */
const MAX_ISA_IRQ = 15;

/** Address space Resource Type byte (§6.4.3.5.1). */
const ADDRESS_SPACE_MEMORY = 0;
const ADDRESS_SPACE_IO = 1;
const ADDRESS_SPACE_BUS_NUMBER = 2;
/** Address space General Flags (§6.4.3.5.1): bit 0 consumer, bit 1 subtractive decode, bit 2 _MIF, bit 3 _MAF. */
const ADDRESS_CONSUMER = 1 << 0;
const ADDRESS_MIN_FIXED = 1 << 2;
const ADDRESS_MAX_FIXED = 1 << 3;
/** Memory Resource Flags (§6.4.3.5.4, Table 6.49): bit 0 _RW, bits 2:1 _MEM. */
const MEMORY_TYPE_READ_WRITE = 1 << 0;
const MEMORY_CACHEABILITY_SHIFT = 1;
/** I/O Resource Flags (§6.4.3.5.4, Table 6.50): bits 1:0 _RNG, 3 = both ISA and non-ISA ranges. */
const IO_RANGE_ENTIRE = 0x03;

/** Extended Interrupt Vector Flags (§6.4.3.6): bit 0 consumer, 1 edge, 2 active-low, 3 shared. */
const INTERRUPT_CONSUMER = 1 << 0;
const INTERRUPT_EDGE = 1 << 1;
const INTERRUPT_ACTIVE_LOW = 1 << 2;
const INTERRUPT_SHARED = 1 << 3;

function resource(bytes: ArrayLike<number>): ResourceDescriptor {
  return Uint8Array.from(bytes) as ResourceDescriptor;
}

function checkRange(what: string, value: number, max: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new AmlError(`${what} 0x${value.toString(16)} is out of range 0..0x${max.toString(16)}`);
  }
}

function le(value: number | bigint, bytes: number): number[] {
  return littleEndian(BigInt(value), bytes);
}

function largeItem(tag: number, body: readonly number[]): ResourceDescriptor {
  return resource([tag, ...le(body.length, 2), ...body]);
}

/** IO(Decode16, min, max, alignment, length): I/O port descriptor (§6.4.2.5). */
export function ioPort(min: number, max: number, alignment: number, length: number): ResourceDescriptor {
  checkRange('IO minimum base', min, 0xffff);
  checkRange('IO maximum base', max, 0xffff);
  checkRange('IO alignment', alignment, 0xff);
  checkRange('IO length', length, 0xff);
  return resource([SMALL_IO_PORT_TAG, IO_DECODE_16, ...le(min, 2), ...le(max, 2), alignment, length]);
}

/** IRQNoFlags(){irqs}: ISA IRQs, edge-triggered, active-high, exclusive (§6.4.2.1, 2-byte form). */
export function irqNoFlags(irqs: readonly number[]): ResourceDescriptor {
  let mask = 0;
  for (const irq of irqs) {
    checkRange('ISA IRQ', irq, MAX_ISA_IRQ);
    mask |= 1 << irq;
  }
  return resource([SMALL_IRQ_NO_FLAGS_TAG, ...le(mask, 2)]);
}

/** Memory32Fixed(ReadWrite|ReadOnly, base, length) (§6.4.3.4). */
export function memory32Fixed(base: number, length: number, readWrite = true): ResourceDescriptor {
  checkRange('Memory32Fixed base', base, 0xffff_ffff);
  checkRange('Memory32Fixed length', length, 0xffff_ffff);
  checkRange('Memory32Fixed end', base + length - 1, 0xffff_ffff);
  return largeItem(LARGE_MEMORY32_FIXED_TAG, [readWrite ? MEMORY_READ_WRITE : 0, ...le(base, 4), ...le(length, 4)]);
}

/** How an interrupt is signalled. */
export interface InterruptOptions {
  /** 'edge' or 'level'. */
  readonly trigger: 'edge' | 'level';
  /** 'high' or 'low'. */
  readonly polarity: 'high' | 'low';
  /** Whether other devices may share the line. Default false. */
  readonly shared?: boolean;
}

/** Interrupt(ResourceConsumer, …){gsis}: Extended Interrupt descriptor (§6.4.3.6). */
export function extendedInterrupt(gsis: readonly number[], options: InterruptOptions): ResourceDescriptor {
  if (gsis.length === 0 || gsis.length > 0xff) throw new AmlError('an Interrupt descriptor lists 1 to 255 interrupts');
  for (const g of gsis) checkRange('interrupt number', g, 0xffff_ffff);
  const flags =
    INTERRUPT_CONSUMER |
    (options.trigger === 'edge' ? INTERRUPT_EDGE : 0) |
    (options.polarity === 'low' ? INTERRUPT_ACTIVE_LOW : 0) |
    (options.shared === true ? INTERRUPT_SHARED : 0);
  return largeItem(LARGE_EXTENDED_IRQ_TAG, [flags, gsis.length, ...gsis.flatMap((g) => le(g, 4))]);
}

/** Who owns an address range: a bridge producing it for children, or a device consuming it. */
export type ResourceUsage = 'producer' | 'consumer';

/** Memory cacheability of an address-space window (§6.4.3.5.4 _MEM). */
export type MemoryCacheability = 'non-cacheable' | 'cacheable' | 'write-combining' | 'prefetchable';
const CACHEABILITY_CODE: Record<MemoryCacheability, number> = {
  'non-cacheable': 0,
  cacheable: 1,
  'write-combining': 2,
  prefetchable: 3,
};

/** A fixed [min, min + length) range for Word/DWord/QWord address-space descriptors. */
export interface AddressRange {
  readonly min: number | bigint;
  readonly length: number | bigint;
}

/** Options of a memory window descriptor. */
export interface MemoryWindowOptions {
  readonly usage?: ResourceUsage;
  readonly cacheability?: MemoryCacheability;
  readonly readWrite?: boolean;
}

/**
 * The shared body of Word/DWord/QWord address-space descriptors (§6.4.3.5.1–3): resource type,
 * general flags (positive decode, min and max fixed), type-specific flags, then granularity,
 * minimum, maximum, translation offset and length, each `width` bytes.
 */
function addressSpace(
  tag: number,
  width: 2 | 4 | 8,
  resourceType: number,
  usage: ResourceUsage,
  typeFlags: number,
  range: AddressRange,
): ResourceDescriptor {
  const min = BigInt(range.min);
  const length = BigInt(range.length);
  const limit = (1n << BigInt(8 * width)) - 1n;
  if (min < 0n || length <= 0n || min + length - 1n > limit) {
    throw new AmlError(`address range 0x${min.toString(16)}+0x${length.toString(16)} does not fit a ${8 * width}-bit descriptor`);
  }
  const max = min + length - 1n;
  const general = (usage === 'consumer' ? ADDRESS_CONSUMER : 0) | ADDRESS_MIN_FIXED | ADDRESS_MAX_FIXED;
  const granularity = 0n; // no alignment constraint: the range is fixed (_MIF and _MAF both set)
  const translation = 0n;
  return largeItem(tag, [
    resourceType,
    general,
    typeFlags,
    ...le(granularity, width),
    ...le(min, width),
    ...le(max, width),
    ...le(translation, width),
    ...le(length, width),
  ]);
}

function memoryTypeFlags(options: MemoryWindowOptions): number {
  const cache = CACHEABILITY_CODE[options.cacheability ?? 'non-cacheable'];
  return ((options.readWrite ?? true) ? MEMORY_TYPE_READ_WRITE : 0) | (cache << MEMORY_CACHEABILITY_SHIFT);
}

/** WordBusNumber(…, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, length) (§6.4.3.5.3). */
export function wordBusNumber(range: AddressRange, usage: ResourceUsage = 'producer'): ResourceDescriptor {
  return addressSpace(LARGE_WORD_ADDRESS_TAG, 2, ADDRESS_SPACE_BUS_NUMBER, usage, 0, range);
}

/** WordIO(…, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length) (§6.4.3.5.3). */
export function wordIo(range: AddressRange, usage: ResourceUsage = 'producer'): ResourceDescriptor {
  return addressSpace(LARGE_WORD_ADDRESS_TAG, 2, ADDRESS_SPACE_IO, usage, IO_RANGE_ENTIRE, range);
}

/** DWordMemory(…, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite, …) (§6.4.3.5.2). */
export function dwordMemory(range: AddressRange, options: MemoryWindowOptions = {}): ResourceDescriptor {
  return addressSpace(LARGE_DWORD_ADDRESS_TAG, 4, ADDRESS_SPACE_MEMORY, options.usage ?? 'producer', memoryTypeFlags(options), range);
}

/** QWordMemory(…, PosDecode, MinFixed, MaxFixed, cacheability, ReadWrite, …) (§6.4.3.5.1). */
export function qwordMemory(range: AddressRange, options: MemoryWindowOptions = {}): ResourceDescriptor {
  return addressSpace(LARGE_QWORD_ADDRESS_TAG, 8, ADDRESS_SPACE_MEMORY, options.usage ?? 'producer', memoryTypeFlags(options), range);
}

/**
 * ResourceTemplate(){ descriptors }: a Buffer holding the descriptors and an End Tag whose
 * checksum byte makes all the resource bytes sum to zero (§6.4.2.9; 0 would also be accepted as
 * "no checksum", but a real one costs nothing).
 */
export function resourceTemplate(descriptors: readonly ResourceDescriptor[]): Aml {
  const body = concat([...descriptors, aml([SMALL_END_TAG])]);
  const sum = body.reduce((s, b) => (s + b) & 0xff, 0);
  return buffer([...body, (0x100 - sum) & 0xff]);
}

// ---------------------------------------------------------------------------------------------
// Common device objects (§6.1 Device Identification, §6.2 Device Configuration, §6.3 _STA)
// ---------------------------------------------------------------------------------------------

/** _STA bits (§6.3.7): present, enabled, shown in UI, functioning. */
export const STA_PRESENT_ENABLED_SHOWN_FUNCTIONING = 0x0f;

/** Name(_HID, EISAID(id)) for an EISA-style ID, or Name(_HID, "id") for an ACPI ID like "LNRO0005". */
export function hid(id: string): Aml {
  return name('_HID', EISA_ID_PATTERN.test(id) ? eisaId(id) : string(id));
}

/** Name(_CID, EISAID(id)) (§6.1.2). */
export function cid(id: string): Aml {
  return name('_CID', EISA_ID_PATTERN.test(id) ? eisaId(id) : string(id));
}

/** Name(_UID, n) (§6.1.12). */
export function uid(n: number): Aml {
  return name('_UID', n);
}

/** Name(_ADR, address) (§6.1.1); for PCI, (device << 16) | function. */
export function adr(address: number): Aml {
  return name('_ADR', address);
}

/** Name(_CRS, ResourceTemplate(){…}) (§6.2.2). */
export function crs(descriptors: readonly ResourceDescriptor[]): Aml {
  return name('_CRS', resourceTemplate(descriptors));
}

/** Method(_STA){ Return(status) } (§6.3.7); a method because _STA is evaluated as one. */
export function sta(status: number = STA_PRESENT_ENABLED_SHOWN_FUNCTIONING): Aml {
  return method('_STA', { argCount: 0 }, [returnValue(status)]);
}

/** One PCI INTx routing entry: device `device`'s pin INTA..INTD raises global system interrupt `gsi`. */
export interface PciIntxRoute {
  /** PCI device (slot) number on the root bus, 0–31. */
  readonly device: number;
  /** Interrupt pin: 0 = INTA, 1 = INTB, 2 = INTC, 3 = INTD. */
  readonly pin: 0 | 1 | 2 | 3;
  /** The IOAPIC input (GSI) it is wired to. */
  readonly gsi: number;
}

/** _PRT Address: device in the high word, 0xFFFF (any function) in the low word (§6.2.13). */
const PRT_ANY_FUNCTION = 0xffff;
const MAX_PCI_DEVICE = 31;

/**
 * Name(_PRT, Package(){ Package(){ Address, Pin, Source, SourceIndex }, … }) (§6.2.13). Source
 * Zero means SourceIndex is a global system interrupt wired directly, with no link device; the
 * OS then treats the interrupt as level-triggered, active-low, shareable.
 */
export function prt(routes: readonly PciIntxRoute[]): Aml {
  return name(
    '_PRT',
    pkg(
      routes.map((r) => {
        checkRange('PCI device number', r.device, MAX_PCI_DEVICE);
        return pkg([(r.device << 16) | PRT_ANY_FUNCTION, r.pin, 0, r.gsi]);
      }),
    ),
  );
}

/**
 * Name(\_S5_, Package(){ SLP_TYPa, SLP_TYPb, 0, 0 }) (§7.4.2 \_Sx System States). On a
 * hardware-reduced platform OSPM writes SLP_TYPa to the sleep control register (§4.8.3.7).
 */
export function sleepStateS5(sleepType: number): Aml {
  checkRange('SLP_TYP', sleepType, 7);
  return name('\\_S5_', pkg([sleepType, sleepType, 0, 0]));
}
