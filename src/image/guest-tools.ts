/**
 * The default guest's initramfs with some of this machine's programs added (Debian's socat for
 * vsock and TCP tests, iperf3 for the network benchmark): busybox has neither AF_VSOCK nor a
 * throughput tool. Each program goes in with every shared object `ldd` lists and the dynamic
 * loader, at the paths the loader looks for, in one cpio archive appended to the default
 * initramfs (Linux unpacks concatenated newc archives in order), so the default guest itself is
 * untouched. Built once per set of inputs and cached; the packages come from Debian's archive.
 */
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CpioWriter } from './cpio.js';
import { ensureAptPackages } from './debian.js';
import { sharedObjects } from './ldd.js';
import { cacheDir } from '../util/cache.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';

export interface GuestTool {
  /** Absolute path of the program on this machine (and in the guest). */
  readonly program: string;
  /** The Debian package that provides it. */
  readonly package: string;
}

export const SOCAT: GuestTool = { program: '/usr/bin/socat', package: 'socat' };
export const IPERF3: GuestTool = { program: '/usr/bin/iperf3', package: 'iperf3' };

const PREFIX = 'tools-initramfs-';

/** Each set of tools has its own cache entries (tests use socat, the network benchmark iperf3). */
function prefixFor(tools: readonly GuestTool[]): string {
  return `${PREFIX}${tools.map((t) => basename(t.program)).sort().join('+')}-`;
}

function fingerprint(path: string): string {
  const real = realpathSync(path);
  const st = statSync(real);
  return `${path}->${real}:${st.size}:${st.mtimeMs}`;
}

/** Every file the tools bring (programs, libraries, loader) and the cache path keyed on all of them. */
function plan(baseInitrd: string, tools: readonly GuestTool[]): { files: string[]; objects: number; path: string } {
  const objects = [...new Map(tools.flatMap((t) => sharedObjects(t.program)).map((o) => [o.path, o])).values()];
  const files = [...tools.map((t) => t.program), ...objects.map((o) => o.path)];
  const key = createHash('sha256')
    .update(JSON.stringify({ v: 1, base: fingerprint(baseInitrd), files: files.map(fingerprint) }))
    .digest('hex')
    .slice(0, 16);
  return { files, objects: objects.length, path: join(cacheDir('guest'), `${prefixFor(tools)}${key}.cpio`) };
}

/**
 * The initramfs `baseInitrd` plus `tools`: installs the packages with apt-get if missing, builds
 * the archive if it is not cached, and returns its path. Needs a writable cache (call it before
 * entering the nested host, whose view of the cache is read-only).
 */
export function ensureToolsInitramfs(baseInitrd: string, tools: readonly GuestTool[], progress: ProgressSink = stderrProgress): string {
  ensureAptPackages(tools.map((t) => t.package), progress);
  const { files, objects, path } = plan(baseInitrd, tools);
  if (existsSync(path)) return path;
  const dir = cacheDir('guest');
  progress(`adding ${tools.map((t) => basename(t.program)).join(', ')} and ${objects} shared objects to the default guest's initramfs`);
  mkdirSync(dir, { recursive: true });
  const w = new CpioWriter();
  // Each file under the name the loader asks for, with the content of the file it resolves to
  // (Debian's sonames are symlinks to versioned files).
  for (const f of files) w.fileFrom(f, realpathSync(f), 0o755);
  writeAppendedInitramfs(baseInitrd, w, path);
  // Earlier builds of the same set (another default guest, upgraded packages) are never used again.
  const prefix = prefixFor(tools);
  for (const old of readdirSync(dir)) {
    if (old.startsWith(prefix) && old.endsWith('.cpio') && old !== basename(path)) rmSync(join(dir, old), { force: true });
  }
  return path;
}

/**
 * Write `baseInitrd` followed by the archive `w` to `path`, atomically (a partial file never has
 * the final name): Linux unpacks concatenated newc archives in order, and the base ends 4-byte
 * aligned, so the appended files land on top of the base's.
 */
export function writeAppendedInitramfs(baseInitrd: string, w: CpioWriter, path: string): void {
  const tmp = `${path}.${process.pid}.partial`;
  try {
    copyFileSync(baseInitrd, tmp);
    const fd = openSync(tmp, 'a');
    try {
      for (const chunk of w.chunks()) for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** The cached initramfs for `tools`, without building anything (inside the nested host); undefined if not built. */
export function findToolsInitramfs(baseInitrd: string, tools: readonly GuestTool[]): string | undefined {
  if (!tools.every((t) => existsSync(t.program))) return undefined;
  const { path } = plan(baseInitrd, tools);
  return existsSync(path) ? path : undefined;
}
