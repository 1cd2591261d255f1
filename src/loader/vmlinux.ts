/**
 * Extract the ELF vmlinux from a bzImage's compressed payload, so the same kernel can boot
 * through the ELF/PVH path.
 *
 * The payload (setup header payload_offset/payload_length, boot.rst) is arch/x86/boot/compressed/
 * vmlinux.bin — the stripped vmlinux ELF with, when CONFIG_X86_NEED_RELOCS, vmlinux.relocs
 * appended — compressed by the method the kernel was built with. For every method but gzip,
 * scripts/Makefile.lib's size_append adds the decompressed size as a trailing u32 LE. Debian's
 * kernels use LZ4 (legacy format, `lz4 -l`).
 */
import { gunzipSync } from 'node:zlib';
import { type BzImage } from './bzimage.js';
import { DecompressionError, KernelImageError } from './errors.js';
import { parseElfKernel, type ElfKernel } from './elf.js';
import { decodeLz4Legacy } from './lz4.js';

/** The compression methods Linux can build a bzImage with (arch/x86/boot/compressed/Makefile), plus a raw ELF. */
export type PayloadCompression = 'lz4' | 'gzip' | 'bzip2' | 'lzma' | 'xz' | 'lzo' | 'zstd' | 'elf' | 'unknown';

/** Leading bytes of each format (the "magic"), as lib/decompress.c's compressed_formats table. */
const MAGICS: readonly { readonly kind: PayloadCompression; readonly bytes: readonly number[] }[] = [
  { kind: 'lz4', bytes: [0x02, 0x21, 0x4c, 0x18] }, // LZ4 legacy frame, 0x184C2102 LE
  { kind: 'gzip', bytes: [0x1f, 0x8b] },
  { kind: 'bzip2', bytes: [0x42, 0x5a, 0x68] }, // "BZh"
  { kind: 'lzma', bytes: [0x5d, 0x00, 0x00] },
  { kind: 'xz', bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { kind: 'lzo', bytes: [0x89, 0x4c, 0x5a, 0x4f] }, // "\x89LZO"
  { kind: 'zstd', bytes: [0x28, 0xb5, 0x2f, 0xfd] },
  { kind: 'elf', bytes: [0x7f, 0x45, 0x4c, 0x46] },
];

/**
 * No vmlinux gets near this; a larger claimed size is a corrupt payload or a decompression bomb.
 * (Debian 6.1 cloud: 51 MiB.)
 */
export const MAX_VMLINUX_SIZE = 512 * 1024 * 1024;

/** Which compression a payload uses, by its magic bytes. */
export function detectCompression(payload: Uint8Array): PayloadCompression {
  for (const m of MAGICS) {
    if (payload.length >= m.bytes.length && m.bytes.every((b, i) => payload[i] === b)) return m.kind;
  }
  return 'unknown';
}

/** The result of extractVmlinux. */
export interface ExtractedVmlinux {
  /** The ELF vmlinux (without the appended relocation table). */
  readonly elf: Uint8Array;
  /** The parsed, validated ELF. */
  readonly kernel: ElfKernel;
  readonly compression: PayloadCompression;
  readonly compressedSize: number;
  /** Decompressed bytes, relocation table included. */
  readonly decompressedSize: number;
}

function decompress(payload: Uint8Array, kind: PayloadCompression, source: string): Uint8Array {
  switch (kind) {
    case 'lz4': {
      if (payload.length < 8) throw new DecompressionError(`LZ4 payload of ${source} is truncated (${payload.length} bytes)`);
      const end = payload.length - 4;
      const size = (payload[end]! | (payload[end + 1]! << 8) | (payload[end + 2]! << 16) | (payload[end + 3]! << 24)) >>> 0;
      try {
        return decodeLz4Legacy(payload.subarray(0, end), { expectedSize: size, maxOutput: MAX_VMLINUX_SIZE });
      } catch (e) {
        if (e instanceof DecompressionError) throw new DecompressionError(`cannot decompress the kernel in ${source}: ${e.message}`);
        throw e;
      }
    }
    case 'gzip':
      try {
        return gunzipSync(payload, { maxOutputLength: MAX_VMLINUX_SIZE });
      } catch (e) {
        throw new DecompressionError(`cannot decompress the gzip kernel in ${source}: ${(e as Error).message}`);
      }
    case 'elf':
      return payload;
    case 'unknown':
      throw new DecompressionError(
        `unsupported compression in ${source}: unknown payload magic ${Buffer.from(payload.subarray(0, 6)).toString('hex')}`,
      );
    default:
      throw new DecompressionError(
        `unsupported compression ${kind} in ${source}: tsvmm can extract LZ4 and gzip kernels; boot this one as a bzImage instead`,
      );
  }
}

/**
 * Decompress a bzImage's payload and return the ELF vmlinux inside it, parsed and validated.
 * Takes about a second for a 50 MiB kernel (LZ4 decoded in JavaScript).
 */
export function extractVmlinux(image: BzImage): ExtractedVmlinux {
  const payload = image.payload;
  if (payload.length === 0) throw new KernelImageError(`${image.source} has no compressed payload (payload_length 0)`);
  const compression = detectCompression(payload);
  const raw = decompress(payload, compression, image.source);
  const parsed = parseElfKernel(raw, `vmlinux inside ${image.source}`);
  const elf = raw.subarray(0, parsed.extent);
  return {
    elf,
    kernel: { ...parsed, bytes: elf },
    compression,
    compressedSize: payload.length,
    decompressedSize: raw.length,
  };
}
