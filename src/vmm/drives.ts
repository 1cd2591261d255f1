/** Opens the microVM's drives as virtio-blk devices (the checks are in drive-options.ts). */
import { resolve } from 'node:path';
import { VirtioBlock } from '../devices/virtio/blk.js';
import { DriveConfigError, type DriveOptions } from './drive-options.js';

export { DriveConfigError, validateDrives, type DriveOptions } from './drive-options.js';

/**
 * Open every drive as a virtio-blk device with `numQueues` request queues (the microVM gives one
 * per vCPU, as QEMU does); on failure closes the ones opened and throws one line.
 */
export function openDrives(drives: readonly DriveOptions[], numQueues = 1): VirtioBlock[] {
  const opened: VirtioBlock[] = [];
  try {
    for (const d of drives) {
      try {
        opened.push(
          new VirtioBlock({
            path: resolve(d.path),
            readOnly: d.readOnly ?? false,
            driveId: d.id,
            cacheType: d.cacheType ?? 'Unsafe',
            numQueues,
            name: `virtio-blk '${d.id}'`,
          }),
        );
      } catch (e) {
        throw new DriveConfigError(`drive '${d.id}': cannot open ${resolve(d.path)}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  } catch (e) {
    // Nothing has run: no request is in flight, so closing cannot wait on guest memory.
    for (const b of opened) void b.close();
    throw e;
  }
  return opened;
}
