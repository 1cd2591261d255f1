/**
 * The raw disk image both VMMs use, written in full before the first boot so every read hits
 * allocated blocks (a sparse file's holes read as zeroes without touching storage, which would
 * flatter reads) and the writes of the first VMM do not allocate blocks the second finds ready.
 *
 * Inside the nested host it lives on that host's /tmp, a tmpfs: its page cache is the storage.
 * That is deliberate: both VMMs do buffered I/O through the host page cache, and the alternative,
 * a folder of this machine shared over 9p, would put an emulated 9p round trip under every
 * request and measure 9p rather than either VMM.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { dirname, resolve } from 'node:path';

const MiB = 1 << 20;

/** Write `mib` MiB of incompressible data to `path`, replacing it. Returns the seconds it took. */
export function writeImage(path: string, mib: number): number {
  const t0 = process.hrtime.bigint();
  const chunk = randomFillSync(Buffer.allocUnsafe(MiB));
  const fd = openSync(path, 'w', 0o644);
  try {
    for (let i = 0; i < mib; i++) {
      // A different first word per MiB, so no two chunks are identical (deduplicating storage).
      chunk.writeUInt32LE(i, 0);
      for (let off = 0; off < MiB; ) off += writeSync(fd, chunk, off, MiB - off, i * MiB + off);
    }
  } finally {
    closeSync(fd);
  }
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** The file system type of the mount holding `path` (longest matching mount point in /proc/mounts). */
export function fsTypeOf(path: string): string {
  try {
    const dir = resolve(dirname(path));
    let best = '';
    let type = 'unknown';
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [, mnt, fstype] = line.split(' ');
      if (mnt === undefined || fstype === undefined) continue;
      const m = mnt.replace(/\\040/g, ' ');
      if ((dir === m || dir.startsWith(m === '/' ? '/' : `${m}/`)) && m.length >= best.length) {
        best = m;
        type = fstype;
      }
    }
    return type;
  } catch {
    return 'unknown';
  }
}
