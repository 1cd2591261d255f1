/**
 * The uncompressed kernel (ELF vmlinux) inside a bzImage, for booting the nested host through
 * PVH. Why: Debian's amd64 bzImage carries an xz payload, and xz decompression under TCG takes
 * the emulated CPU several seconds on every boot; QEMU loads an ELF vmlinux with the PVH note
 * straight into memory instead. Extracted once, next to the cached initramfs.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';

/** XEN_ELFNOTE_PHYS32_ENTRY: the PVH entry point QEMU needs to boot an ELF kernel. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;
const PT_NOTE = 4;

/** True when `path` is an x86-64 ELF with the PVH entry note. */
export function hasPvhNote(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const eh = Buffer.alloc(64);
    if (readSync(fd, eh, 0, 64, 0) < 64 || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2) return false;
    const phoff = Number(eh.readBigUInt64LE(32));
    const phentsize = eh.readUInt16LE(54);
    const phnum = eh.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const base = i * phentsize;
      if (ph.readUInt32LE(base) !== PT_NOTE) continue;
      const off = Number(ph.readBigUInt64LE(base + 8));
      const size = Number(ph.readBigUInt64LE(base + 32));
      const notes = Buffer.alloc(size);
      readSync(fd, notes, 0, size, off);
      let p = 0;
      while (p + 12 <= size) {
        const namesz = notes.readUInt32LE(p);
        const descsz = notes.readUInt32LE(p + 4);
        const type = notes.readUInt32LE(p + 8);
        const name = notes.toString('latin1', p + 12, p + 12 + Math.max(0, namesz - 1));
        if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
        p += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
      }
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/** The compressed payload of a bzImage (boot protocol 2.08+: payload_offset/length at 0x248/0x24c). */
function payload(bz: Buffer): Buffer | undefined {
  if (bz.length < 0x250 || bz.toString('latin1', 0x202, 0x206) !== 'HdrS' || bz.readUInt16LE(0x206) < 0x208) return undefined;
  const setupSects = bz[0x1f1] === 0 ? 4 : bz[0x1f1]!;
  const start = (setupSects + 1) * 512 + bz.readUInt32LE(0x248);
  const end = start + bz.readUInt32LE(0x24c);
  return end <= bz.length ? bz.subarray(start, end) : undefined;
}

function decompressWith(tool: string, args: string[], input: Buffer): Buffer | undefined {
  const r = spawnSync(tool, args, { input, maxBuffer: 512 * 1024 * 1024 });
  return r.status === 0 && r.stdout.length > 0 ? r.stdout : undefined;
}

/**
 * Write the bzImage's ELF vmlinux to `out` and return true, or return false (leaving nothing)
 * when the payload's format or tool is unavailable or the result cannot be PVH-booted; the
 * caller then boots the bzImage itself, which only costs time.
 */
export function extractPvhVmlinux(bzImage: string, out: string): boolean {
  const data = payload(readFileSync(bzImage));
  if (data === undefined) return false;
  let elf: Buffer | undefined;
  if (data.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) elf = decompressWith('xz', ['-dc', '--single-stream'], data);
  else if (data[0] === 0x1f && data[1] === 0x8b) {
    try {
      elf = gunzipSync(data);
    } catch {
      elf = undefined;
    }
  }
  else if (data.readUInt32LE(0) === 0x184c2102) elf = decompressWith('lz4', ['-dc'], data);
  else if (data.readUInt32LE(0) === 0xfd2fb528) elf = decompressWith('zstd', ['-dc'], data);
  if (elf === undefined) return false;
  const tmp = `${out}.${process.pid}.partial`;
  writeFileSync(tmp, elf);
  if (!hasPvhNote(tmp)) {
    rmSync(tmp, { force: true });
    return false;
  }
  renameSync(tmp, out);
  return true;
}
