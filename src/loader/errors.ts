/**
 * Errors of the kernel/initrd loaders. Kernel images are untrusted input: every malformed image
 * ends in one of these, with a message naming the file and what is wrong with it.
 */
import { TsvmmError } from '../util/errors.js';

/** A bzImage that is not one, is truncated, or is of an unsupported kind. */
export class KernelImageError extends TsvmmError {}

/** An ELF kernel (vmlinux) that is malformed or not for x86-64. */
export class ElfImageError extends TsvmmError {}

/** A compressed kernel payload that cannot be decompressed (corrupt or unsupported format). */
export class DecompressionError extends TsvmmError {}

/** A kernel, initrd or boot structure that does not fit in guest memory. */
export class GuestPlacementError extends TsvmmError {}

/** A kernel command line the kernel cannot take. */
export class CmdlineError extends TsvmmError {}

/** Boot parameters that cannot be expressed (too many e820 entries, bad addresses). */
export class BootParamsError extends TsvmmError {}

/** Format a byte count as MiB for messages: 12.5 MiB. */
export function mib(bytes: number): string {
  const v = bytes / (1024 * 1024);
  return `${Number.isInteger(v) ? v : v.toFixed(1)} MiB`;
}

/** Format an address for messages: 0x1000000. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
