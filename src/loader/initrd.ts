/**
 * Where the initial ramdisk goes: as high as possible in low RAM (below the MMIO hole and the
 * kernel's initrd_addr_max), page aligned, above 1 MiB and clear of the kernel — what boot.rst
 * recommends ("load the initrd as high as possible") and Firecracker's initrd_load_addr does.
 */
import { HIMEM_START, MMIO_HOLE_START, PAGE_SIZE, type RamRegion } from '../arch/x86_64/layout.js';
import { GuestPlacementError, hex, mib } from './errors.js';
import { rangesOverlap, type GuestMemoryWriter, type GuestRange } from './guest-memory.js';

/** What placeInitrd needs to know. */
export interface InitrdPlacementRequest {
  /** Initrd size in bytes. */
  readonly size: number;
  /** Guest RAM. */
  readonly ram: readonly RamRegion[];
  /** Memory the kernel occupies (LoadedBzImage.reserved or LoadedElfKernel.reserved). */
  readonly kernel: GuestRange;
  /**
   * Highest address the initrd's last byte may occupy: the setup header's initrd_addr_max for a
   * bzImage. PVH has no such field; leave it out and the 4 GiB limit of start_info's users applies.
   */
  readonly addrMax?: number;
}

/** The initrd's place: [gpa, gpa + size). */
export interface InitrdPlacement {
  readonly gpa: number;
  readonly size: number;
}

function alignDown(n: number, a: number): number {
  return Math.floor(n / a) * a;
}

/**
 * The highest page-aligned address for the initrd below min(addrMax + 1, MMIO hole) inside one
 * RAM region, at or above 1 MiB, not overlapping the kernel. Pure: writes nothing.
 */
export function placeInitrd(req: InitrdPlacementRequest): InitrdPlacement {
  const { size, ram, kernel } = req;
  if (!Number.isSafeInteger(size) || size <= 0) throw new GuestPlacementError(`initrd size must be a positive number of bytes, got ${size}`);
  const limit = Math.min(MMIO_HOLE_START, req.addrMax === undefined ? MMIO_HOLE_START : req.addrMax + 1);
  let best: number | undefined;
  for (const r of ram) {
    const lo = Math.max(r.gpa, HIMEM_START);
    let top = Math.min(r.gpa + r.size, limit);
    // Try just below the top, then just below the kernel if that collides.
    for (let attempt = 0; attempt < 2 && top - size >= lo; attempt++) {
      const gpa = alignDown(top - size, PAGE_SIZE);
      if (gpa < lo) break;
      if (!rangesOverlap({ start: gpa, end: gpa + size }, kernel)) {
        if (best === undefined || gpa > best) best = gpa;
        break;
      }
      top = kernel.start;
    }
  }
  if (best === undefined) {
    const total = ram.reduce((s, r) => s + r.size, 0);
    throw new GuestPlacementError(
      `initrd (${mib(size)}) does not fit in guest memory (${mib(total)}) next to the kernel ` +
        `[${mib(kernel.start)}, ${mib(kernel.end)}) below ${hex(limit)}: give the VM more memory or use a smaller initrd`,
    );
  }
  return { gpa: best, size };
}

/** Place the initrd with placeInitrd and copy it there. */
export function loadInitrd(mem: GuestMemoryWriter, initrd: Uint8Array, req: Omit<InitrdPlacementRequest, 'size'>): InitrdPlacement {
  const placed = placeInitrd({ ...req, size: initrd.length });
  mem.write(placed.gpa, initrd);
  return placed;
}
