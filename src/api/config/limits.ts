/**
 * Firecracker's field limits, enumerations and defaults, in one module without dependencies: the parsers
 * (boot-source.ts, drive.ts, …) enforce them and the OpenAPI document (server/openapi.ts) states
 * them. Kept apart so the API server can load its document and validator at start-up without the
 * twenty-odd parser modules, which it loads only when a request first needs one (`--api-sock`
 * start-up time is module loading; see bench/results/api-*.md).
 */
import type { MachineConfig } from './machine-config.js';

/**
 * The x86 boot protocol's default `cmdline_size` limit is 2048 bytes including the final NUL,
 * and Firecracker's command-line area holds 2048 bytes as well.
 */
export const BOOT_ARGS_MAX_BYTES = 2047;

/** Firecracker's drive `cache_type` values. */
export const CACHE_TYPES = ['Unsafe', 'Writeback'] as const;
export type CacheType = (typeof CACHE_TYPES)[number];
/** Firecracker's drive `io_engine` values. */
export const IO_ENGINES = ['Sync', 'Async'] as const;
export type IoEngine = (typeof IO_ENGINES)[number];

/** Firecracker's logger levels. */
export const LOG_LEVELS = ['Error', 'Warning', 'Info', 'Debug', 'Trace', 'Off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * tsvmm's limits. vCPUs: Firecracker's own range (1..32). Memory: at least 128 MiB, Firecracker's
 * default and about what a distro kernel with an initramfs needs to reach /init; at most 64 GiB,
 * far above what a microVM on the project's 24 GiB hosts should get, but a config meant for a
 * bigger host should still parse. Memory above 3 GiB straddles the 32-bit MMIO gap, which the
 * memory layout must split around.
 */
export const VCPU_COUNT_RANGE = { min: 1, max: 32 } as const;
export const MEM_SIZE_MIB_RANGE = { min: 128, max: 65536 } as const;

/** Firecracker's machine-config before any PUT: 1 vCPU, 128 MiB, no SMT, no template, 4 KiB pages. */
export function defaultMachineConfig(): MachineConfig {
  return { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, cpu_template: 'None', huge_pages: 'None' };
}

/** Firecracker's static CPU templates (deprecated there); "None" means no template. */
export const CPU_TEMPLATES = ['C3', 'T2', 'T2S', 'T2CL', 'T2A', 'V1N1', 'None'] as const;
export type CpuTemplate = (typeof CPU_TEMPLATES)[number];

/** "None": 4 KiB pages; "Transparent": THP through madvise; "2M": explicit hugetlbfs pages. */
export const HUGE_PAGES = ['None', 'Transparent', '2M'] as const;
export type HugePages = (typeof HUGE_PAGES)[number];

/** Linux interface names are at most IFNAMSIZ - 1 = 15 bytes. */
export const HOST_DEV_NAME_MAX_BYTES = 15;
/** Ethernet's minimum IPv4 MTU (RFC 791) to the largest an IP packet can be. */
export const MTU_RANGE = { min: 68, max: 65535 } as const;

/** Guest context ids: 0-2 are reserved (hypervisor, local, host); 0xFFFFFFFF is VMADDR_CID_ANY. */
export const GUEST_CID_RANGE = { min: 3, max: 0xfffffffe } as const;
/** sockaddr_un.sun_path is 108 bytes including the terminating NUL. */
export const UDS_PATH_MAX_BYTES = 107;
