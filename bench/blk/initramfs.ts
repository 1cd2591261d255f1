/**
 * The benchmark guest's initramfs: the default guest's (busybox, the kernel's virtio modules, the
 * init that runs the command from the kernel command line) with one more cpio archive appended,
 * holding Debian's fio, every shared object it loads and the job script (guest-script.ts).
 *
 * Appending rather than rebuilding keeps the default guest exactly as tests and `tsvmm start` boot
 * it: Linux unpacks concatenated newc archives in order (the default archive ends 4-byte aligned,
 * as src/host/nested.ts relies on too). The result is cached under the cache folder, keyed on
 * every input (the default initramfs, fio, each library, the script), and built once.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CpioWriter } from '../../src/image/cpio.js';
import { ensureAptPackages } from '../../src/image/debian.js';
import { writeAppendedInitramfs } from '../../src/image/guest-tools.js';
import { cacheDir } from '../../src/util/cache.js';
import type { ProgressSink } from '../../src/util/progress.js';
import { GUEST_MARK_PATH, GUEST_SCRIPT_PATH, guestScript, markScript } from './guest-script.js';
import { sharedObjects } from '../../src/image/ldd.js';

const FIO = '/usr/bin/fio';
const PREFIX = 'blk-initramfs-';

/** Size and mtime: enough to notice a package upgrade without hashing 80 MB of libraries on every run. */
function fingerprint(path: string): string {
  const real = realpathSync(path);
  const st = statSync(real);
  return `${path}->${real}:${st.size}:${st.mtimeMs}`;
}

export interface BenchInitramfs {
  readonly path: string;
  readonly bytes: number;
  /** What the appended archive adds (fio, libraries, loader, script). */
  readonly addedFiles: number;
  readonly addedBytes: number;
}

/** Install fio (Debian's package, on this machine) and build the bench initramfs if it is not cached. */
export function ensureBenchInitramfs(defaultInitrd: string, progress: ProgressSink): BenchInitramfs {
  ensureAptPackages(['fio'], progress);
  const objects = sharedObjects(FIO);
  const libraryPath = [...new Set(objects.filter((o) => !o.loader).map((o) => dirname(o.path)))];
  const script = guestScript(libraryPath);
  const key = createHash('sha256')
    .update(JSON.stringify({ v: 1, base: fingerprint(defaultInitrd), fio: fingerprint(FIO), objects: objects.map((o) => fingerprint(o.path)), script, mark: markScript() }))
    .digest('hex')
    .slice(0, 16);
  const dir = cacheDir('bench');
  const path = join(dir, `${PREFIX}${key}.cpio`);
  const files = [FIO, ...objects.map((o) => o.path)];
  const addedBytes = files.reduce((sum, f) => sum + statSync(realpathSync(f)).size, 0) + script.length;
  if (!existsSync(path)) {
    progress(`building the block benchmark's initramfs: the default guest's + fio and ${objects.length} shared objects (${(addedBytes / 2 ** 20).toFixed(0)} MiB)`);
    mkdirSync(dir, { recursive: true });
    const w = new CpioWriter();
    w.fileFrom(FIO, FIO, 0o755);
    // Each object under the name the loader asks for, with the content of the file it resolves to
    // (Debian's sonames are symlinks to versioned files).
    for (const o of objects) w.fileFrom(o.path, realpathSync(o.path), 0o755);
    w.file(GUEST_SCRIPT_PATH, script, 0o755);
    w.file(GUEST_MARK_PATH, markScript(), 0o755);
    writeAppendedInitramfs(defaultInitrd, w, path);
    // Earlier builds (another fio, another default guest) are never used again.
    for (const old of readdirSync(dir)) {
      if (old.startsWith(PREFIX) && old.endsWith('.cpio') && old !== basename(path)) rmSync(join(dir, old), { force: true });
    }
  }
  return { path, bytes: statSync(path).size, addedFiles: files.length + 2, addedBytes };
}
