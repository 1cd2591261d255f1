/**
 * A writer for "newc" cpio archives (magic `070701`), the format Linux unpacks as an initramfs.
 *
 * Output is reproducible: every entry has uid/gid 0 and one fixed mtime, entries are written in
 * byte order of their paths (so a parent directory always precedes what it holds, which the
 * kernel's unpacker needs because it never creates missing parents), and inode numbers are
 * assigned in that order. Missing parent directories are added implicitly (mode 0755).
 *
 * ```ts
 * const w = new CpioWriter();
 * w.dir('/bin');
 * w.fileFrom('/bin/busybox', '/usr/bin/busybox', 0o755);
 * w.symlink('/bin/sh', 'busybox');
 * w.device('/dev/console', 'char', 5, 1, 0o600);
 * w.file('/init', script, 0o755);
 * const archive = w.finish();          // or w.writeToFile(path)
 * ```
 */
import { closeSync, fstatSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { TsvmmError } from '../util/errors.js';

/** A bad entry or an archive that newc cannot represent. */
export class CpioError extends TsvmmError {}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';
const MAX_FIELD = 0xffff_ffff;
/** Host files are copied into the output this many bytes at a time. */
const COPY_CHUNK = 1 << 20;

export type DeviceKind = 'char' | 'block';

type Content =
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'host'; readonly hostPath: string }
  | { readonly kind: 'none' };

interface Entry {
  readonly path: string;
  /** File type and permission bits, as in st_mode. */
  readonly mode: number;
  readonly content: Content;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  /** Added only because something below it was; an explicit `dir()` may still redefine it. */
  readonly implicit: boolean;
}

export interface CpioWriterOptions {
  /** Modification time (seconds since the epoch) stamped on every entry; default 0. */
  readonly mtime?: number;
}

/** What one entry looks like once written; returned by `entries()` for inspection and tests. */
export interface CpioEntryInfo {
  readonly path: string;
  readonly mode: number;
  readonly size: number | undefined;
}

/**
 * Archive paths are stored without a leading slash (as `find . | cpio -o` would), which both
 * GNU cpio and the kernel accept; `..`, empty and `.` components are refused so an archive can
 * never place a file outside the directory it is unpacked into.
 */
function normalizePath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new CpioError(`cpio: "${path}" names the archive root; give a path below it, e.g. "/bin"`);
  if (parts.includes('..')) throw new CpioError(`cpio: "${path}" contains "..": archive paths must stay inside the archive`);
  return parts.join('/');
}

function checkPermissions(mode: number, path: string): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new CpioError(`cpio: mode ${mode.toString(8)} for "${path}" is not a permission mask (0 to 07777); the file type is set by the method used`);
  }
  return mode;
}

function hex8(value: number, field: string, path: string): string {
  if (!Number.isInteger(value) || value < 0 || value > MAX_FIELD) {
    throw new CpioError(`cpio: ${field} ${value} of "${path}" does not fit newc's 32-bit field`);
  }
  return value.toString(16).padStart(8, '0');
}

const padLength = (n: number): number => (4 - (n % 4)) % 4;

export class CpioWriter {
  private readonly entriesByPath = new Map<string, Entry>();
  private readonly mtime: number;

  constructor(options: CpioWriterOptions = {}) {
    this.mtime = options.mtime ?? 0;
    hex8(this.mtime, 'mtime', '(archive)');
  }

  /** A directory; parents are added implicitly. Re-adding an implicit directory sets its mode. */
  dir(path: string, mode = 0o755): this {
    const p = normalizePath(path);
    const existing = this.entriesByPath.get(p);
    if (existing !== undefined && !(existing.implicit && (existing.mode & 0o170000) === S_IFDIR)) {
      throw new CpioError(`cpio: "${p}" is already in the archive`);
    }
    this.entriesByPath.delete(p);
    this.add(p, S_IFDIR | checkPermissions(mode, p), { kind: 'none' });
    return this;
  }

  /** A regular file with the given contents (a string is written as UTF-8). */
  file(path: string, contents: Uint8Array | string, mode = 0o644): this {
    const p = normalizePath(path);
    const bytes = typeof contents === 'string' ? Buffer.from(contents, 'utf8') : contents;
    this.add(p, S_IFREG | checkPermissions(mode, p), { kind: 'bytes', bytes });
    return this;
  }

  /**
   * A regular file copied from the host when the archive is written (not now, so large trees
   * cost no memory until then). `mode` defaults to the host file's permission bits.
   */
  fileFrom(path: string, hostPath: string, mode?: number): this {
    const p = normalizePath(path);
    let perms = mode;
    if (perms === undefined) {
      const fd = openHost(hostPath, p);
      try {
        perms = fstatSync(fd).mode & 0o7777;
      } finally {
        closeSync(fd);
      }
    }
    this.add(p, S_IFREG | checkPermissions(perms, p), { kind: 'host', hostPath });
    return this;
  }

  /** A symbolic link at `path` pointing at `target` (stored verbatim, relative or absolute). */
  symlink(path: string, target: string): this {
    const p = normalizePath(path);
    if (target === '') throw new CpioError(`cpio: symlink "${p}" needs a non-empty target`);
    this.add(p, S_IFLNK | 0o777, { kind: 'bytes', bytes: Buffer.from(target, 'utf8') });
    return this;
  }

  /** A device node, e.g. `device('/dev/console', 'char', 5, 1, 0o600)`. */
  device(path: string, kind: DeviceKind, major: number, minor: number, mode = 0o600): this {
    const p = normalizePath(path);
    hex8(major, 'device major', p);
    hex8(minor, 'device minor', p);
    const type = kind === 'char' ? S_IFCHR : S_IFBLK;
    this.add(p, type | checkPermissions(mode, p), { kind: 'none' }, major, minor);
    return this;
  }

  /** True when `path` (explicit or implicit) is already in the archive. */
  has(path: string): boolean {
    return this.entriesByPath.has(normalizePath(path));
  }

  /** The entries in the order they will be written (sizes of host files are not read here). */
  entries(): CpioEntryInfo[] {
    return this.sorted().map((e) => ({
      path: e.path,
      mode: e.mode,
      size: e.content.kind === 'bytes' ? e.content.bytes.length : e.content.kind === 'none' ? 0 : undefined,
    }));
  }

  /**
   * The archive, piece by piece: headers, names, data and padding, ending with the trailer.
   * Host files are read in chunks as they are reached, so streaming costs little memory.
   */
  *chunks(): Generator<Uint8Array> {
    let ino = 1;
    for (const e of this.sorted()) {
      if (e.content.kind === 'host') {
        yield* this.hostFileChunks(e, ino++);
      } else {
        const data = e.content.kind === 'bytes' ? e.content.bytes : new Uint8Array(0);
        yield this.header(e.path, e.mode, ino++, data.length, e.rdevMajor, e.rdevMinor, (e.mode & 0o170000) === S_IFDIR ? 2 : 1);
        if (data.length > 0) {
          yield data;
          yield new Uint8Array(padLength(data.length));
        }
      }
    }
    yield this.header(TRAILER, 0, 0, 0, 0, 0, 1);
  }

  /** The whole archive in one buffer. */
  finish(): Buffer {
    return Buffer.concat([...this.chunks()]);
  }

  /**
   * Write the archive to `path` atomically (a temporary file renamed into place), so a reader
   * never sees half an archive and an interrupted build leaves nothing behind under `path`.
   */
  writeToFile(path: string): void {
    const tmp = `${path}.${process.pid}.partial`;
    const fd = openSync(tmp, 'w', 0o644);
    try {
      for (const chunk of this.chunks()) writeAll(fd, chunk);
    } catch (e) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      throw e;
    }
    closeSync(fd);
    renameSync(tmp, path);
  }

  private add(path: string, mode: number, content: Content, rdevMajor = 0, rdevMinor = 0, implicit = false): void {
    if (this.entriesByPath.has(path)) throw new CpioError(`cpio: "${path}" is already in the archive`);
    this.ensureParents(path);
    this.entriesByPath.set(path, { path, mode, content, rdevMajor, rdevMinor, implicit });
  }

  private ensureParents(path: string): void {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const existing = this.entriesByPath.get(parent);
      if (existing === undefined) {
        this.entriesByPath.set(parent, { path: parent, mode: S_IFDIR | 0o755, content: { kind: 'none' }, rdevMajor: 0, rdevMinor: 0, implicit: true });
      } else if ((existing.mode & 0o170000) !== S_IFDIR) {
        throw new CpioError(`cpio: cannot add "${path}": "${parent}" is in the archive and is not a directory`);
      }
    }
  }

  private sorted(): Entry[] {
    return [...this.entriesByPath.values()].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  }

  private *hostFileChunks(e: Entry, ino: number): Generator<Uint8Array> {
    if (e.content.kind !== 'host') return;
    const fd = openHost(e.content.hostPath, e.path);
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new CpioError(`cpio: ${e.content.hostPath} (for "${e.path}") is not a regular file`);
      const size = st.size;
      yield this.header(e.path, e.mode, ino, size, 0, 0, 1);
      let done = 0;
      while (done < size) {
        const buf = Buffer.allocUnsafe(Math.min(COPY_CHUNK, size - done));
        const n = readSync(fd, buf, 0, buf.length, done);
        if (n === 0) throw new CpioError(`cpio: ${e.content.hostPath} shrank while being archived; rebuild the archive`);
        done += n;
        yield n === buf.length ? buf : buf.subarray(0, n);
      }
      yield new Uint8Array(padLength(size));
    } finally {
      closeSync(fd);
    }
  }

  private header(name: string, mode: number, ino: number, size: number, rdevMajor: number, rdevMinor: number, nlink: number): Buffer {
    const nameBytes = Buffer.from(name, 'utf8');
    const nameSize = nameBytes.length + 1;
    const fields = [ino, mode, 0, 0, nlink, this.mtime, size, 0, 0, rdevMajor, rdevMinor, nameSize, 0];
    const labels = ['inode', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'size', 'devmajor', 'devminor', 'rdevmajor', 'rdevminor', 'namesize', 'check'];
    const text = MAGIC + fields.map((v, i) => hex8(v, labels[i]!, name)).join('');
    const total = HEADER_SIZE + nameSize;
    const out = Buffer.alloc(total + padLength(total));
    out.write(text, 0, 'latin1');
    nameBytes.copy(out, HEADER_SIZE);
    return out;
  }
}

function openHost(hostPath: string, archivePath: string): number {
  try {
    return openSync(hostPath, 'r');
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new CpioError(`cpio: cannot read ${hostPath} for "${archivePath}": ${reason}`);
  }
}

function writeAll(fd: number, chunk: Uint8Array): void {
  let off = 0;
  while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
}
