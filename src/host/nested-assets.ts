/**
 * What the nested host needs on this machine: QEMU and busybox-static from Debian, Debian's
 * `amd64` kernel (it has kvm-amd, virtio-pci and 9p as modules), and an initramfs built with our
 * cpio writer. The initramfs is cached under a hash of everything it is made of and rebuilt only
 * when one of those changes.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CpioWriter } from '../image/cpio.js';
import { ensureAptPackages, fetchDebianKernel } from '../image/debian.js';
import { cacheDir } from '../util/cache.js';
import { TsvmmError } from '../util/errors.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';
import { NESTED_HOST_INIT, NESTED_HOST_MODULES } from './nested-init.js';
import { extractPvhVmlinux } from './vmlinux.js';

export class NestedHostAssetError extends TsvmmError {}

/** Debian packages the nested host needs on this machine (the initramfs needs no cpio tool). */
export const NESTED_HOST_PACKAGES: readonly string[] = ['qemu-system-x86', 'busybox-static'];

/** Bump when the initramfs layout changes in a way the hashed inputs do not show. */
const LAYOUT_VERSION = 1;

export interface NestedHostAssets {
  readonly qemu: string;
  /** The kernel QEMU boots: the extracted ELF vmlinux (PVH, boots seconds faster under TCG) or else the bzImage. */
  readonly kernel: string;
  /** Debian's bzImage of that kernel. */
  readonly bzImage: string;
  readonly kernelRelease: string;
  /** The cached initramfs: busybox, modules, /init. */
  readonly initramfs: string;
}

const QEMU_CANDIDATES = ['/usr/bin/qemu-system-x86_64', '/usr/local/bin/qemu-system-x86_64'];
const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

function findQemu(): string {
  const q = QEMU_CANDIDATES.find((p) => existsSync(p));
  if (q === undefined) throw new NestedHostAssetError('qemu-system-x86_64 not found; install it with `sudo apt-get install --no-install-recommends qemu-system-x86`');
  return q;
}

/** True when an x86-64 ELF has no PT_INTERP, i.e. runs without a dynamic loader. */
function isStaticElf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const eh = Buffer.alloc(64);
    readSync(fd, eh, 0, 64, 0);
    if (eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2) return false;
    const phoff = Number(eh.readBigUInt64LE(32));
    const phentsize = eh.readUInt16LE(54);
    const phnum = eh.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } finally {
    closeSync(fd);
  }
}

function findStaticBusybox(): string {
  const found = BUSYBOX_CANDIDATES.filter((p) => existsSync(p));
  const b = found.find(isStaticElf);
  if (b === undefined) {
    throw new NestedHostAssetError(
      found.length > 0
        ? `${found[0]} is dynamically linked and cannot run in an initramfs; install \`busybox-static\` (sudo apt-get install busybox-static)`
        : 'busybox not found; install it with `sudo apt-get install busybox-static`',
    );
  }
  return b;
}

/** Module name → file, found by walking the unpacked tree (there is no modules.dep). */
function findModules(modulesDir: string, names: readonly string[]): Map<string, string> {
  const wanted = new Set(names);
  const found = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const ent of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.name.endsWith('.ko')) {
        const name = ent.name.slice(0, -3);
        if (wanted.has(name)) found.set(name, p);
      } else if (/\.ko\.(xz|zst|gz)$/.test(ent.name) && wanted.has(ent.name.replace(/\.ko\..*$/, ''))) {
        throw new NestedHostAssetError(`${p} is compressed; the nested host's busybox insmod needs plain .ko modules (use a kernel package that ships them uncompressed, like Debian 12's)`);
      }
    }
  };
  walk(join(modulesDir, 'kernel'));
  const missing = names.filter((n) => !found.has(n));
  if (missing.length > 0) throw new NestedHostAssetError(`the nested host's kernel lacks modules ${missing.join(', ')} under ${modulesDir}`);
  return found;
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * Build the initramfs into `path`: `/init`, busybox (with `/bin/sh`), the modules under `/mods`
 * with `/mods/order`, mount points, and `/dev/console` so init has a console before devtmpfs.
 */
function buildInitramfs(path: string, busybox: string, modules: Map<string, string>): void {
  const w = new CpioWriter();
  w.file('/init', NESTED_HOST_INIT, 0o755);
  w.fileFrom('/bin/busybox', busybox, 0o755);
  w.symlink('/bin/sh', 'busybox');
  for (const d of ['/proc', '/sys', '/dev', '/host', '/tmp', '/run']) w.dir(d);
  w.device('/dev/console', 'char', 5, 1, 0o600);
  w.device('/dev/null', 'char', 1, 3, 0o666);
  for (const name of NESTED_HOST_MODULES) w.fileFrom(`/mods/${name}.ko`, modules.get(name)!, 0o644);
  w.file('/mods/order', `${NESTED_HOST_MODULES.join('\n')}\n`);
  w.writeToFile(path);
}

/**
 * Install what is missing (Debian packages, kernel) and return the paths the nested host boots
 * from, building the initramfs when its inputs changed. Idempotent and cheap when all is cached.
 */
export function ensureNestedHostAssets(progress: ProgressSink = stderrProgress): NestedHostAssets {
  // Resolving the kernel asks apt-cache (about a second); within one process once is enough.
  if (resolved !== undefined && [resolved.qemu, resolved.kernel, resolved.initramfs].every((p) => existsSync(p))) return resolved;
  resolved = resolveAssets(progress);
  return resolved;
}

let resolved: NestedHostAssets | undefined;

function resolveAssets(progress: ProgressSink): NestedHostAssets {
  ensureAptPackages(NESTED_HOST_PACKAGES, progress);
  const qemu = findQemu();
  const busybox = findStaticBusybox();
  const kernel = fetchDebianKernel('amd64', progress);
  const modules = findModules(kernel.modulesDir, NESTED_HOST_MODULES);
  const key = createHash('sha256')
    .update(JSON.stringify({ LAYOUT_VERSION, release: kernel.release, init: NESTED_HOST_INIT, modules: NESTED_HOST_MODULES, busybox: sha256File(busybox) }))
    .digest('hex')
    .slice(0, 16);
  const dir = cacheDir('nested-host');
  mkdirSync(dir, { recursive: true });
  const initramfs = join(dir, `initramfs-${kernel.release}-${key}.cpio`);
  if (!existsSync(initramfs) || statSync(initramfs).size === 0) {
    progress(`building the nested host's initramfs (busybox, ${NESTED_HOST_MODULES.length} modules of ${kernel.release})`);
    mkdirSync(dir, { recursive: true });
    buildInitramfs(initramfs, busybox, modules);
    // Older builds are dead weight once the inputs moved on.
    for (const f of readdirSync(dir)) {
      if (f.startsWith('initramfs-') && f.endsWith('.cpio') && join(dir, f) !== initramfs) rmSync(join(dir, f), { force: true });
    }
  }
  return { qemu, kernel: pvhKernel(dir, kernel.bzImage, kernel.release, progress), bzImage: kernel.bzImage, kernelRelease: kernel.release, initramfs };
}

/** The ELF vmlinux for PVH boot, extracted once per release; the bzImage when that is impossible. */
function pvhKernel(dir: string, bzImage: string, release: string, progress: ProgressSink): string {
  const vmlinux = join(dir, `vmlinux-${release}`);
  const unavailable = `${vmlinux}.unavailable`;
  if (existsSync(vmlinux)) return vmlinux;
  if (existsSync(unavailable)) return bzImage;
  progress(`extracting the uncompressed kernel from ${release}'s bzImage (saves seconds on every nested boot)`);
  if (extractPvhVmlinux(bzImage, vmlinux)) {
    for (const f of readdirSync(dir)) if (f.startsWith('vmlinux-') && !f.startsWith(`vmlinux-${release}`)) rmSync(join(dir, f), { force: true });
    return vmlinux;
  }
  progress('could not extract a PVH-bootable vmlinux; booting the bzImage (slower under emulation)');
  writeFileSync(unavailable, '');
  return bzImage;
}
