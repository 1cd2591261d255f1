/**
 * The pieces every ACPI system description table shares: the 36-byte header (ACPI 6.5 §5.2.6,
 * Table 5.4), the checksum, the Generic Address Structure (§5.2.3.2, Table 5.1), and a little
 * writer for little-endian fields at fixed offsets.
 */
import { TsvmmError } from '../../../util/errors.js';

/** A table that cannot be written as asked. */
export class AcpiTableError extends TsvmmError {}

/** Who made the tables; goes into every header. */
export interface AcpiTableIdentity {
  /** OEM ID, 6 ASCII characters (padded with spaces). */
  readonly oemId: string;
  /** OEM Table ID, 8 ASCII characters (padded with spaces). */
  readonly oemTableId: string;
  readonly oemRevision: number;
  /** Creator ID, 4 ASCII characters: the table generator (for a DSDT, the "ASL compiler"). */
  readonly creatorId: string;
  readonly creatorRevision: number;
}

/** tsvmm's identity in every table it writes. */
export const TSVMM_TABLE_IDENTITY: AcpiTableIdentity = {
  oemId: 'TSVMM ',
  oemTableId: 'TSVMM   ',
  oemRevision: 1,
  creatorId: 'TSVM',
  creatorRevision: 1,
};

/** Size of the System Description Table Header (§5.2.6, Table 5.4). */
export const SDT_HEADER_SIZE = 36;
/** Header field offsets (§5.2.6, Table 5.4). */
export const SDT_OFFSET = {
  signature: 0,
  length: 4,
  revision: 8,
  checksum: 9,
  oemId: 10,
  oemTableId: 16,
  oemRevision: 24,
  creatorId: 28,
  creatorRevision: 32,
} as const;

/** Little-endian fields at fixed offsets of a zero-filled byte array. */
export class TableWriter {
  readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(length: number) {
    this.bytes = new Uint8Array(length);
    this.view = new DataView(this.bytes.buffer);
  }

  u8(offset: number, value: number): void {
    checkUnsigned(value, 0xff, offset);
    this.view.setUint8(offset, value);
  }
  u16(offset: number, value: number): void {
    checkUnsigned(value, 0xffff, offset);
    this.view.setUint16(offset, value, true);
  }
  u32(offset: number, value: number): void {
    checkUnsigned(value, 0xffff_ffff, offset);
    this.view.setUint32(offset, value, true);
  }
  u64(offset: number, value: number | bigint): void {
    const v = BigInt(value);
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new AcpiTableError(`value ${value} at offset ${offset} does not fit 64 bits`);
    this.view.setBigUint64(offset, v, true);
  }
  /** ASCII text, exactly `length` bytes: padded with `pad`, refused if longer. */
  ascii(offset: number, text: string, length: number, pad = ' '): void {
    if (text.length > length || ![...text].every((c) => c.charCodeAt(0) <= 0x7f)) {
      throw new AcpiTableError(`"${text}" must be at most ${length} ASCII characters`);
    }
    const padded = text.padEnd(length, pad);
    for (let i = 0; i < length; i++) this.bytes[offset + i] = padded.charCodeAt(i);
  }
  set(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
  }
}

function checkUnsigned(value: number, max: number, offset: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new AcpiTableError(`value ${value} at table offset ${offset} does not fit 0..0x${max.toString(16)}`);
  }
}

/** The byte that makes `bytes[start, end)` sum to zero modulo 256, given that byte is now 0. */
export function checksumByte(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let sum = 0;
  for (let i = start; i < end; i++) sum = (sum + bytes[i]!) & 0xff;
  return (0x100 - sum) & 0xff;
}

/** Sum of `bytes` modulo 256 (0 for a correctly checksummed table). */
export function byteSum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}

/**
 * A complete table: header (signature, length, revision, identity) + `body`, with the checksum
 * filled in so the whole table sums to zero (§5.2.6).
 */
export function systemDescriptionTable(
  signature: string,
  revision: number,
  body: Uint8Array,
  identity: AcpiTableIdentity = TSVMM_TABLE_IDENTITY,
): Uint8Array {
  if (signature.length !== 4) throw new AcpiTableError(`table signature "${signature}" must be 4 characters`);
  const w = new TableWriter(SDT_HEADER_SIZE + body.length);
  w.ascii(SDT_OFFSET.signature, signature, 4);
  w.u32(SDT_OFFSET.length, SDT_HEADER_SIZE + body.length);
  w.u8(SDT_OFFSET.revision, revision);
  w.ascii(SDT_OFFSET.oemId, identity.oemId, 6);
  w.ascii(SDT_OFFSET.oemTableId, identity.oemTableId, 8);
  w.u32(SDT_OFFSET.oemRevision, identity.oemRevision);
  w.ascii(SDT_OFFSET.creatorId, identity.creatorId, 4);
  w.u32(SDT_OFFSET.creatorRevision, identity.creatorRevision);
  w.set(SDT_HEADER_SIZE, body);
  w.u8(SDT_OFFSET.checksum, checksumByte(w.bytes));
  return w.bytes;
}

// ---------------------------------------------------------------------------------------------
// Generic Address Structure (§5.2.3.2, Table 5.1)
// ---------------------------------------------------------------------------------------------

/** Size of a Generic Address Structure. */
export const GAS_SIZE = 12;
/** Address Space ID (Table 5.1): system memory or system I/O. */
export const GAS_SPACE_SYSTEM_MEMORY = 0;
export const GAS_SPACE_SYSTEM_IO = 1;
/** Access Size (Table 5.1): 1 = byte access. */
export const GAS_ACCESS_BYTE = 1;

/** Where a register lives: an I/O port or a physical MMIO address. */
export interface RegisterLocation {
  readonly space: 'io' | 'mmio';
  readonly address: number;
}

/** A byte-wide register's Generic Address Structure: bit width 8, offset 0, byte access. */
export function byteRegisterGas(location: RegisterLocation): Uint8Array {
  const w = new TableWriter(GAS_SIZE);
  w.u8(0, location.space === 'io' ? GAS_SPACE_SYSTEM_IO : GAS_SPACE_SYSTEM_MEMORY);
  w.u8(1, 8); // Register Bit Width
  w.u8(2, 0); // Register Bit Offset
  w.u8(3, GAS_ACCESS_BYTE);
  w.u64(4, location.address);
  return w.bytes;
}
