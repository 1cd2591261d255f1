/**
 * LZ4 decompression for kernel payloads: the LZ4 block format (lz4 doc/lz4_Block_format.md) and
 * the "legacy" stream format that `lz4 -l` writes and Linux's lib/decompress_unlz4.c reads:
 *
 *   u32 LE magic 0x184C2102, then blocks: u32 LE compressed size, that many bytes of one LZ4
 *   block that decompresses to at most 8 MiB. A size equal to the magic starts another
 *   concatenated stream. Blocks are independent: a match never reaches into an earlier block.
 *
 * Input is untrusted: every length, offset and copy is bounds-checked, and any inconsistency is a
 * DecompressionError (never a RangeError or a silent short output).
 */
import { DecompressionError, hex } from './errors.js';

/** Legacy frame magic (lz4 doc/lz4_Frame_format.md, "Legacy frame"; decompress_unlz4.c ARCHIVE_MAGICNUMBER). */
export const LZ4_LEGACY_MAGIC = 0x184c2102;
/** Each legacy block decompresses to at most 8 MiB (lz4_Frame_format.md; decompress_unlz4.c uncomp_chunksize). */
export const LZ4_LEGACY_BLOCK_SIZE = 8 * 1024 * 1024;
/** LZ4_compressBound(8 MiB) = n + n/255 + 16 (lz4.h): no valid block is larger. */
export const LZ4_LEGACY_MAX_COMPRESSED_BLOCK = LZ4_LEGACY_BLOCK_SIZE + Math.floor(LZ4_LEGACY_BLOCK_SIZE / 255) + 16;
/** A match is at least 4 bytes long (lz4_Block_format.md, "minmatch"). */
const MIN_MATCH = 4;
/** Nibble value meaning "more length bytes follow" (lz4_Block_format.md). */
const RUN_MASK = 15;
/** Below this many bytes a byte loop beats TypedArray.set/copyWithin in V8. */
const SMALL_COPY = 32;

/**
 * Decode one LZ4 block from `src` into `dst` starting at `dstStart`, writing no further than
 * `dstLimit`. Returns the number of bytes written. Matches may only refer back to bytes this
 * block wrote (at or after `dstStart`).
 */
export function decodeLz4Block(src: Uint8Array, dst: Uint8Array, dstStart = 0, dstLimit = dst.length): number {
  if (dstStart < 0 || dstLimit > dst.length || dstStart > dstLimit) {
    throw new DecompressionError(`LZ4: bad output window [${dstStart}, ${dstLimit}) for a ${dst.length}-byte buffer`);
  }
  const iend = src.length;
  if (iend === 0) throw new DecompressionError('LZ4: empty block');
  let ip = 0;
  let op = dstStart;
  for (;;) {
    const token = src[ip++]!;
    // Literal run.
    let lit = token >>> 4;
    if (lit === RUN_MASK) {
      let b: number;
      do {
        if (ip >= iend) throw new DecompressionError(`LZ4: block truncated inside a literal length at input offset ${ip}`);
        b = src[ip++]!;
        lit += b;
      } while (b === 255);
    }
    if (lit > iend - ip) {
      throw new DecompressionError(`LZ4: literal run of ${lit} bytes at input offset ${ip} runs past the ${iend}-byte block`);
    }
    if (lit > dstLimit - op) {
      throw new DecompressionError(`LZ4: literal run of ${lit} bytes overflows the output (${dstLimit - op} bytes left)`);
    }
    if (lit < SMALL_COPY) {
      for (let i = 0; i < lit; i++) dst[op + i] = src[ip + i]!;
    } else {
      dst.set(src.subarray(ip, ip + lit), op);
    }
    ip += lit;
    op += lit;
    // The last sequence has literals only; the block ends right after them.
    if (ip === iend) return op - dstStart;
    // Match.
    if (iend - ip < 2) throw new DecompressionError(`LZ4: block truncated inside a match offset at input offset ${ip}`);
    const offset = src[ip]! | (src[ip + 1]! << 8);
    ip += 2;
    if (offset === 0 || offset > op - dstStart) {
      throw new DecompressionError(
        `LZ4: match offset ${offset} at input offset ${ip - 2} points before the start of the block (${op - dstStart} bytes decoded)`,
      );
    }
    let len = (token & RUN_MASK) + MIN_MATCH;
    if ((token & RUN_MASK) === RUN_MASK) {
      let b: number;
      do {
        if (ip >= iend) throw new DecompressionError(`LZ4: block truncated inside a match length at input offset ${ip}`);
        b = src[ip++]!;
        len += b;
      } while (b === 255);
    }
    if (len > dstLimit - op) {
      throw new DecompressionError(`LZ4: match of ${len} bytes overflows the output (${dstLimit - op} bytes left)`);
    }
    const from = op - offset;
    if (offset >= len && len >= SMALL_COPY) {
      dst.copyWithin(op, from, from + len);
    } else {
      // Overlapping (offset < len) repeats the last `offset` bytes: copy forwards byte by byte.
      for (let i = 0; i < len; i++) dst[op + i] = dst[from + i]!;
    }
    op += len;
    // A match is never the end of a block (lz4_Block_format.md, end-of-block conditions).
    if (ip >= iend) throw new DecompressionError('LZ4: block ends with a match instead of literals (truncated block)');
  }
}

function readU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

/** Options for decodeLz4Legacy. */
export interface Lz4LegacyOptions {
  /** When known (Linux appends it to the payload), the exact decompressed size; checked. */
  readonly expectedSize?: number;
  /** Refuse to produce more than this many bytes (a decompression bomb guard). */
  readonly maxOutput: number;
}

/**
 * Decompress a legacy-format LZ4 stream (one or more concatenated). The whole input must be
 * consumed by the stream: trailing bytes that are not a complete block are an error.
 */
export function decodeLz4Legacy(input: Uint8Array, options: Lz4LegacyOptions): Uint8Array {
  const { expectedSize, maxOutput } = options;
  if (input.length < 4 || readU32(input, 0) !== LZ4_LEGACY_MAGIC) {
    throw new DecompressionError(`LZ4: no legacy frame magic ${hex(LZ4_LEGACY_MAGIC)} at the start of the data`);
  }
  if (expectedSize !== undefined && expectedSize > maxOutput) {
    throw new DecompressionError(`LZ4: claimed decompressed size ${expectedSize} exceeds the ${maxOutput}-byte limit`);
  }
  // With a known size decode straight into the result; otherwise collect blocks and join them.
  const direct = expectedSize !== undefined ? new Uint8Array(expectedSize) : undefined;
  const chunks: Uint8Array[] = [];
  let total = 0;
  let ip = 4;
  while (ip < input.length) {
    if (input.length - ip < 4) {
      throw new DecompressionError(`LZ4: ${input.length - ip} stray bytes at input offset ${ip} where a block size belongs`);
    }
    const size = readU32(input, ip);
    ip += 4;
    if (size === LZ4_LEGACY_MAGIC) continue; // next concatenated stream
    if (size === 0 || size > LZ4_LEGACY_MAX_COMPRESSED_BLOCK) {
      throw new DecompressionError(`LZ4: corrupt block length ${size} at input offset ${ip - 4}`);
    }
    if (size > input.length - ip) {
      throw new DecompressionError(
        `LZ4: block at input offset ${ip - 4} claims ${size} bytes but only ${input.length - ip} remain (truncated or corrupt)`,
      );
    }
    const block = input.subarray(ip, ip + size);
    ip += size;
    let n: number;
    if (direct !== undefined) {
      const limit = Math.min(direct.length, total + LZ4_LEGACY_BLOCK_SIZE);
      n = decodeLz4Block(block, direct, total, limit);
    } else {
      const out = new Uint8Array(Math.min(LZ4_LEGACY_BLOCK_SIZE, Math.max(0, maxOutput - total)));
      n = decodeLz4Block(block, out, 0, out.length);
      chunks.push(out.subarray(0, n));
    }
    total += n;
  }
  if (direct !== undefined) {
    if (total !== direct.length) {
      throw new DecompressionError(`LZ4: decompressed ${total} bytes, but the stream's size field says ${direct.length}`);
    }
    return direct;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
