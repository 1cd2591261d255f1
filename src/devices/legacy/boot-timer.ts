/**
 * Boot timer: the guest writes a byte to mark a boot milestone and the VMM reports how long
 * after VMM start it came.
 *
 * Firecracker's convention (src/vmm/src/devices/pseudo/boot_timer.rs, resources/tests/init.c):
 * a one-byte write of the magic value 123 at offset 0 of a 4 KiB MMIO region at 0xd0000000
 * (x86_64 MMIO_MEM_START, the first MMIO device slot) logs
 *   "Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms"
 * with wall time and VMM process CPU time since VMM start. Older Firecracker releases used
 * I/O port 0x3f0 for the same write. Any other value, width or offset is ignored.
 *
 * Cloud Hypervisor's convention: every byte written to debug port 0x80 is logged with its
 * timestamp, the value naming a boot stage (0x00-0x1f firmware, 0x20-0x3f bootloader,
 * 0x40-0x5f kernel, 0x60-0x7f userspace). Port 0x80 is also the PC's POST/io-delay port, so
 * guests write it for other reasons too; choose `trigger: 'any-byte'` only where that is wanted.
 *
 * tsvmm registers this device on MMIO at 0xd0000000 (Firecracker-compatible) and on I/O port
 * 0x3f0 (`BOOT_TIMER_DEFAULT_PORT`), where our own init does `outb(123, 0x3f0)`: a port write is
 * one instruction with no /dev/mem mapping, and 0x3f0 is what Firecracker-era init programs
 * already write. (0x3f0 is the legacy floppy controller's base; a microVM has none.)
 */

import type { BusDevice } from '../bus.js';

/** Firecracker's MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE. */
export const BOOT_COMPLETE_MAGIC = 123;
/** Firecracker's x86_64 boot timer MMIO address and the size of one MMIO device slot (MMIO_LEN). */
export const FIRECRACKER_BOOT_TIMER_MMIO_BASE = 0xd000_0000;
export const FIRECRACKER_BOOT_TIMER_MMIO_SIZE = 0x1000;
/** The I/O port our init writes (and older Firecracker releases used). */
export const BOOT_TIMER_DEFAULT_PORT = 0x3f0;
/** Cloud Hypervisor's debug port. */
export const CLOUD_HYPERVISOR_DEBUG_PORT = 0x80;

export interface BootTimerEvent {
  /** The byte the guest wrote. */
  value: number;
  /** Wall time since VMM start, microseconds. */
  elapsedUs: number;
  /** VMM process CPU time (user + system) since VMM start, microseconds. */
  cpuUs: number;
}

/** Where time is read from; injectable for tests. */
export interface BootTimerClock {
  /** Monotonic nanoseconds (process.hrtime.bigint()). */
  monotonicNs(): bigint;
  /** Process CPU time in microseconds (user + system). */
  cpuUs(): number;
}

export const processClock: BootTimerClock = {
  monotonicNs: () => process.hrtime.bigint(),
  cpuUs: () => {
    const usage = process.cpuUsage();
    return usage.user + usage.system;
  },
};

export interface BootTimerOptions {
  /** Called for each recognised write. */
  onEvent: (event: BootTimerEvent) => void;
  /** 'magic' (default): only a one-byte write of 123 at offset 0. 'any-byte': every one-byte write at offset 0. */
  trigger?: 'magic' | 'any-byte';
  /** VMM start on the clock's monotonic scale, and CPU time then. Default: when the timer is constructed. */
  startNs?: bigint;
  startCpuUs?: number;
  clock?: BootTimerClock;
}

export class BootTimer implements BusDevice {
  private readonly onEvent: (event: BootTimerEvent) => void;
  private readonly acceptAnyByte: boolean;
  private readonly clock: BootTimerClock;
  private readonly startNs: bigint;
  private readonly startCpuUs: number;
  /** Count of recognised writes. */
  events = 0;

  constructor(options: BootTimerOptions) {
    this.onEvent = options.onEvent;
    this.acceptAnyByte = options.trigger === 'any-byte';
    this.clock = options.clock ?? processClock;
    this.startNs = options.startNs ?? this.clock.monotonicNs();
    this.startCpuUs = options.startCpuUs ?? this.clock.cpuUs();
  }

  read(_offset: number, _data: Uint8Array): void {
    // Write-only device: reads return the bus's zero fill.
  }

  write(offset: number, data: Uint8Array): void {
    // Like Firecracker, only byte-wide writes at offset 0 count.
    if (offset !== 0 || data.length !== 1) return;
    const value = data[0]!;
    if (!this.acceptAnyByte && value !== BOOT_COMPLETE_MAGIC) return;
    this.events++;
    // Runs once per boot milestone, not per access: allocating the event here is fine.
    this.onEvent({
      value,
      elapsedUs: Number((this.clock.monotonicNs() - this.startNs) / 1000n),
      cpuUs: this.clock.cpuUs() - this.startCpuUs,
    });
  }
}

/** Firecracker's log line for a boot-complete event, so its tooling can parse ours. */
export function formatFirecrackerBootTime(event: BootTimerEvent): string {
  const us = Math.floor(event.elapsedUs);
  const cpuUs = Math.floor(event.cpuUs);
  return (
    `Guest-boot-time = ${String(us).padStart(6)} us ${Math.floor(us / 1000)} ms, ` +
    `${String(cpuUs).padStart(6)} CPU us ${Math.floor(cpuUs / 1000)} CPU ms`
  );
}
