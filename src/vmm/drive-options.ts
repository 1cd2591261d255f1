/**
 * The microVM's block drives as options, and their checks before anything is built. Kept apart
 * from drives.ts (which opens them as virtio-blk devices) so the CLI can check --disk and config
 * drives before it boots a nested host, without loading the device model.
 *
 * The checks repeat some of the config parser's (unique drive_id, one root device,
 * api/config/vm-config.ts; the file checks of api/config/files.ts) because library users and the
 * CLI's --disk reach MicroVm without a config file. They run synchronously and before KVM is
 * touched, so a typo costs no boot and gives one line naming the drive.
 */
import { constants, accessSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { TsvmmError } from '../util/errors.js';

export interface DriveOptions {
  /** Firecracker's drive_id: unique per VM, and what the guest reads with GET_ID (/sys/block/vdX/serial). */
  readonly id: string;
  /** The raw disk image on the host (a regular file). */
  readonly path: string;
  readonly readOnly?: boolean;
  /** Default 'Unsafe', as Firecracker. */
  readonly cacheType?: 'Unsafe' | 'Writeback';
  /** The root device goes first on the PCI bus so the guest names it /dev/vda (as Firecracker attaches it first). */
  readonly root?: boolean;
}

export class DriveConfigError extends TsvmmError {}

/** Throws a DriveConfigError for the first drive that cannot work; returns the drives in attach order (root first). */
export function validateDrives(drives: readonly DriveOptions[]): DriveOptions[] {
  const ids = new Set<string>();
  let root: string | undefined;
  for (const d of drives) {
    if (d.id.length === 0) throw new DriveConfigError(`drive with image ${d.path}: the drive id must not be empty`);
    if (ids.has(d.id)) throw new DriveConfigError(`drive '${d.id}': the drive id is used twice; give each drive its own id`);
    ids.add(d.id);
    if (d.root) {
      if (root !== undefined) throw new DriveConfigError(`drive '${d.id}': only one drive can be the root device, and '${root}' already is`);
      root = d.id;
    }
    checkImage(d);
  }
  // Stable: the others keep their order after the root.
  return [...drives].sort((a, b) => Number(b.root ?? false) - Number(a.root ?? false));
}

function checkImage(d: DriveOptions): void {
  const file = resolve(d.path);
  const fail = (problem: string): DriveConfigError => new DriveConfigError(`drive '${d.id}': ${file} ${problem}`);
  let stat;
  try {
    stat = statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw fail('does not exist');
    throw fail(`cannot be examined (${code ?? String(e)})`);
  }
  if (stat.isDirectory()) throw fail('is a directory; a raw disk image file is needed');
  // virtio-blk opens regular files only (blk.ts sizes the disk from the file's size).
  if (!stat.isFile()) throw fail('is not a regular file; a raw disk image file is needed');
  if (stat.size < 512) throw fail(`is smaller than one 512-byte sector (${stat.size} bytes)`);
  try {
    accessSync(file, d.readOnly ? constants.R_OK : constants.R_OK | constants.W_OK);
  } catch {
    throw fail(d.readOnly ? 'is not readable by this user' : 'is not writable by this user; attach it read-only');
  }
}
