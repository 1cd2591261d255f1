/** Shared helpers for the tiny-guest KVM tests: recording devices, code loading, timeouts. */
import type { BusDevice } from '../../src/devices/bus.js';

/** One access a RecordingDevice saw. */
export interface Access {
  offset: number;
  bytes: number[];
}

/** A bus device that records writes and answers reads with a fixed little-endian value. */
export class RecordingDevice implements BusDevice {
  readonly writes: Access[] = [];
  readonly reads: Access[] = [];
  onWrite: ((offset: number, data: Uint8Array) => void) | undefined;

  constructor(private readonly readValue = 0) {}

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = i < 4 ? (this.readValue >>> (8 * i)) & 0xff : 0;
    this.reads.push({ offset, bytes: [...data] });
  }

  write(offset: number, data: Uint8Array): void {
    this.writes.push({ offset, bytes: [...data] });
    this.onWrite?.(offset, data);
  }
}

/** Reject if `p` has not settled within `ms`: a hung vCPU must fail the test, not the CI job. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves once `condition` holds, checked every 20 ms; bound it with withTimeout. */
export async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await sleep(20);
}

/** Little-endian bytes of a 32-bit value. */
export function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

/** Little-endian bytes of a 64-bit value. */
export function le64(v: number): number[] {
  const lo = v % 2 ** 32;
  const hi = Math.floor(v / 2 ** 32);
  return [...le32(lo), ...le32(hi)];
}
