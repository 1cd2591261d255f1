/**
 * The kernel command line: validated and NUL-terminated for the guest.
 */
import { CMDLINE_MAX_SIZE, CMDLINE_START } from '../arch/x86_64/layout.js';
import { CmdlineError } from './errors.js';
import type { GuestMemoryWriter } from './guest-memory.js';

/** Where a command line was written. */
export interface PlacedCmdline {
  readonly gpa: number;
  /** Bytes including the terminating NUL. */
  readonly size: number;
}

/**
 * Encode `text` as UTF-8 plus a NUL. `maxLength` is the kernel's limit without the NUL (the
 * setup header's cmdline_size, boot.rst); the VMM's own buffer (CMDLINE_MAX_SIZE, NUL included)
 * caps it too.
 */
export function encodeCmdline(text: string, maxLength: number = CMDLINE_MAX_SIZE - 1): Uint8Array {
  const body = Buffer.from(text, 'utf8');
  if (body.includes(0)) throw new CmdlineError('kernel command line contains a NUL byte, which would cut it short');
  const limit = Math.min(maxLength, CMDLINE_MAX_SIZE - 1);
  if (body.length > limit) {
    throw new CmdlineError(
      `kernel command line is ${body.length} bytes; this kernel accepts at most ${limit} (setup header cmdline_size): shorten it`,
    );
  }
  const out = new Uint8Array(body.length + 1);
  out.set(body);
  return out;
}

/** Encode and write the command line at CMDLINE_START (or `gpa`). */
export function writeCmdline(mem: GuestMemoryWriter, text: string, maxLength?: number, gpa: number = CMDLINE_START): PlacedCmdline {
  const bytes = encodeCmdline(text, maxLength);
  mem.write(gpa, bytes);
  return { gpa, size: bytes.length };
}
