/**
 * Shared inputs for the loader and boot-params tests: the real Debian cloud kernel (fetched and
 * cached by src/image/debian.ts), small synthetic bzImages and ELF files to corrupt, and a
 * deterministic random source for mutation tests. Has no tests of its own.
 */
import { readFileSync } from 'node:fs';
import { fetchDebianKernel, type DebianKernel } from '../../src/image/debian.js';
import { parseBzImage, type BzImage } from '../../src/loader/bzimage.js';
import { extractVmlinux, type ExtractedVmlinux } from '../../src/loader/vmlinux.js';
import { silentProgress } from '../../src/util/progress.js';

let cached: { kernel: DebianKernel; file: Uint8Array; image: BzImage } | undefined;

/** The Debian cloud-amd64 bzImage, read once per test process. */
export function debianCloudKernel(): { kernel: DebianKernel; file: Uint8Array; image: BzImage } {
  if (cached === undefined) {
    const kernel = fetchDebianKernel('cloud-amd64', silentProgress);
    const file = new Uint8Array(readFileSync(kernel.bzImage));
    cached = { kernel, file, image: parseBzImage(file, kernel.bzImage) };
  }
  return cached;
}

let vmlinux: ExtractedVmlinux | undefined;

/** The vmlinux extracted from the Debian cloud bzImage, once per test process. */
export function debianCloudVmlinux(): ExtractedVmlinux {
  vmlinux ??= extractVmlinux(debianCloudKernel().image);
  return vmlinux;
}

export function hexBytes(hex: string): Uint8Array {
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** A small, deterministic PRNG (xorshift32) so mutation tests are reproducible. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/**
 * A synthetic bzImage: the real kernel's setup (boot sector + setup code, so the header is
 * genuine) followed by a small protected-mode part whose payload is `payload`; syssize and
 * payload_offset/length are patched to match.
 */
export function syntheticBzImage(payload: Uint8Array, payloadOffset = 0x100): Uint8Array {
  const { file } = debianCloudKernel();
  const setupSects = file[0x1f1]!;
  const setupEnd = (setupSects + 1) * 512;
  const kernelLen = payloadOffset + payload.length + 64;
  const out = new Uint8Array(setupEnd + kernelLen);
  out.set(file.subarray(0, setupEnd));
  out.set(payload, setupEnd + payloadOffset);
  const v = new DataView(out.buffer);
  v.setUint32(0x1f4, Math.floor(kernelLen / 16), true); // syssize
  v.setUint32(0x248, payloadOffset, true);
  v.setUint32(0x24c, payload.length, true);
  return out;
}

/** One segment or note for makeElf. */
export interface ElfSpec {
  readonly entry?: bigint;
  readonly segments?: readonly { paddr: number; vaddr?: bigint; data: Uint8Array; memsz?: number }[];
  /** Raw contents of one PT_NOTE segment. */
  readonly notes?: Uint8Array;
}

/** An ELF note: namesz, descsz, type, name (padded to 4), desc (padded to 4). */
export function elfNote(name: string, type: number, desc: Uint8Array): Uint8Array {
  const nameBytes = Buffer.from(`${name}\0`, 'latin1');
  const pad = (n: number) => Math.ceil(n / 4) * 4;
  const out = new Uint8Array(12 + pad(nameBytes.length) + pad(desc.length));
  const v = new DataView(out.buffer);
  v.setUint32(0, nameBytes.length, true);
  v.setUint32(4, desc.length, true);
  v.setUint32(8, type, true);
  out.set(nameBytes, 12);
  out.set(desc, 12 + pad(nameBytes.length));
  return out;
}

/** A minimal ELF64 x86-64 executable with the given PT_LOAD segments and one PT_NOTE. */
export function makeElf(spec: ElfSpec): Uint8Array {
  const segs = spec.segments ?? [{ paddr: 0x200000, data: new Uint8Array(64).fill(0x90) }];
  const phnum = segs.length + (spec.notes ? 1 : 0);
  const phoff = 64;
  let dataAt = phoff + phnum * 56;
  const placed = segs.map((s) => {
    const at = dataAt;
    dataAt += s.data.length;
    return at;
  });
  const noteAt = dataAt;
  dataAt += spec.notes?.length ?? 0;
  const out = new Uint8Array(dataAt);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  v.setUint16(0x10, 2, true); // ET_EXEC
  v.setUint16(0x12, 62, true); // EM_X86_64
  v.setUint32(0x14, 1, true);
  v.setBigUint64(0x18, spec.entry ?? BigInt(segs[0]!.paddr), true);
  v.setBigUint64(0x20, BigInt(phoff), true);
  v.setUint16(0x34, 64, true);
  v.setUint16(0x36, 56, true);
  v.setUint16(0x38, phnum, true);
  v.setUint16(0x3a, 64, true);
  segs.forEach((s, i) => {
    const ph = phoff + i * 56;
    v.setUint32(ph, 1, true); // PT_LOAD
    v.setUint32(ph + 4, 5, true); // R+X
    v.setBigUint64(ph + 8, BigInt(placed[i]!), true);
    v.setBigUint64(ph + 16, s.vaddr ?? BigInt(s.paddr), true);
    v.setBigUint64(ph + 24, BigInt(s.paddr), true);
    v.setBigUint64(ph + 32, BigInt(s.data.length), true);
    v.setBigUint64(ph + 40, BigInt(s.memsz ?? s.data.length), true);
    v.setBigUint64(ph + 48, 0x1000n, true);
    out.set(s.data, placed[i]!);
  });
  if (spec.notes) {
    const ph = phoff + segs.length * 56;
    v.setUint32(ph, 4, true); // PT_NOTE
    v.setBigUint64(ph + 8, BigInt(noteAt), true);
    v.setBigUint64(ph + 32, BigInt(spec.notes.length), true);
    v.setBigUint64(ph + 40, BigInt(spec.notes.length), true);
    v.setBigUint64(ph + 48, 4n, true);
    out.set(spec.notes, noteAt);
  }
  return out;
}

/** Offsets of each program header in a makeElf output (for corrupting them). */
export function phdrOffset(index: number): number {
  return 64 + index * 56;
}
