/**
 * ext4 root file-system images built from a folder with Debian's e2fsprogs: `mkfs.ext4 -d` fills
 * the file system from the folder while creating it, so neither root nor a loop device is needed.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, lstatSync, openSync, readdirSync, renameSync, rmSync, statSync, ftruncateSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TsvmmError } from '../util/errors.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';
import { ensureAptPackages } from './debian.js';

export class RootfsImageError extends TsvmmError {}

export interface Ext4ImageOptions {
  /** The folder whose contents become the file system's root. */
  readonly sourceDir: string;
  /** The image file to write (replaced if it exists). */
  readonly output: string;
  /** Image size in MiB; default: the content's size × 1.5 + 16 MiB, rounded up. */
  readonly sizeMiB?: number;
  readonly progress?: ProgressSink;
}

export interface Ext4Image {
  readonly path: string;
  readonly sizeMiB: number;
}

const MiB = 1024 * 1024;
/** What one file costs at least: a 4 KiB block (and ext4 spends an inode per entry, paid from the slack). */
const BLOCK = 4096;

/** Bytes the folder's contents take, counting every entry as whole 4 KiB blocks. */
export function contentBytes(dir: string): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      total += BLOCK + contentBytes(path);
    } else {
      // lstat: symlinks are stored as links, not followed.
      const size = entry.isFile() ? lstatSync(path).size : 0;
      total += Math.max(BLOCK, Math.ceil(size / BLOCK) * BLOCK);
    }
  }
  return total;
}

/** The default image size: content × 1.5 + 16 MiB (journal and metadata of a small ext4), in whole MiB. */
export function defaultImageSizeMiB(bytes: number): number {
  return Math.ceil((bytes * 1.5) / MiB) + 16;
}

/** Build an ext4 image of `sourceDir` at `output`, labelled `rootfs`. */
export function buildExt4Image(opts: Ext4ImageOptions): Ext4Image {
  const progress = opts.progress ?? stderrProgress;
  const source = resolve(opts.sourceDir);
  const output = resolve(opts.output);
  let stat;
  try {
    stat = statSync(source);
  } catch {
    throw new RootfsImageError(`image source ${source} does not exist; give an existing folder with --from`);
  }
  if (!stat.isDirectory()) throw new RootfsImageError(`image source ${source} is not a directory; give a folder with --from`);
  if (opts.sizeMiB !== undefined && (!Number.isInteger(opts.sizeMiB) || opts.sizeMiB < 2)) {
    throw new RootfsImageError(`image size ${opts.sizeMiB} MiB is too small; give at least 2 MiB`);
  }
  const sizeMiB = opts.sizeMiB ?? defaultImageSizeMiB(contentBytes(source));

  ensureAptPackages(['e2fsprogs'], progress);
  progress(`building ext4 image ${output} (${sizeMiB} MiB) from ${source}`);
  // Build beside the target and rename, so a failed build never leaves a half-written image.
  const tmp = `${output}.partial`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      ftruncateSync(fd, sizeMiB * MiB);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    throw new RootfsImageError(`cannot create ${tmp}: ${(e as NodeJS.ErrnoException).code ?? String(e)}; check the output folder exists and is writable`);
  }
  // root_owner: the file system's root belongs to root whoever builds it.
  const r = spawnSync('mkfs.ext4', ['-q', '-F', '-L', 'rootfs', '-E', 'root_owner=0:0', '-d', source, tmp], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    const why = r.error?.message ?? (r.stderr || r.stdout || '').trim().split('\n').filter((l) => l.trim() !== '').slice(-1)[0] ?? `exit status ${r.status}`;
    const hint = opts.sizeMiB !== undefined ? '; the content may not fit: try a larger --size' : '';
    throw new RootfsImageError(`mkfs.ext4 could not build ${output} from ${source}: ${why.trim()}${hint}`);
  }
  renameSync(tmp, output);
  return { path: output, sizeMiB };
}
