/**
 * A VMM's memory overhead, read from /proc/PID/smaps: resident memory of the whole process minus
 * the resident part of its guest-RAM mapping.
 *
 * Why smaps and not VmRSS alone: guest RAM is an ordinary anonymous mapping of the VMM (tsvmm:
 * one mmap of exactly the guest size, MAP_NORESERVE; QEMU: its RAM block, the guest size rounded
 * to its alignment), and the guest touches more of it the longer it runs, so VmRSS mixes "what
 * the VMM costs" with "what the guest used". The guest mapping is recognised as the anonymous
 * mapping (no file) whose size is the guest size, allowing a few pages of alignment or guard.
 */
import { readFileSync } from 'node:fs';
import { statField } from '../../src/util/proc-stat.js';

export interface MemorySample {
  /** Milliseconds since the VMM process was spawned. */
  readonly atMs: number;
  /** Sum of Rss over every mapping (what VmRSS reports, from the same read). */
  readonly rssKiB: number;
  /** Rss of the guest-RAM mapping(s); 0 when none was recognised. */
  readonly guestRssKiB: number;
  /** rssKiB - guestRssKiB. */
  readonly overheadKiB: number;
  /** Sizes of the mappings taken as guest RAM (so a report can show what was subtracted). */
  readonly guestMappingsKiB: readonly number[];
  /** Process CPU time so far (utime + stime from /proc/PID/stat), milliseconds. */
  readonly cpuMs: number;
}

/** Slack when matching the guest mapping: alignment padding and guard pages, not another region. */
const GUEST_MAPPING_SLACK_KIB = 4096;

/** Parse smaps text. Exported for testing on captured text. */
export function parseSmaps(text: string, guestKiB: number): { rssKiB: number; guestRssKiB: number; guestMappingsKiB: number[] } {
  let rssKiB = 0;
  let guestRssKiB = 0;
  const guestMappingsKiB: number[] = [];
  let anonymous = false;
  let sizeKiB = 0;
  for (const line of text.split('\n')) {
    // A mapping header: "start-end perms offset dev inode [path]".
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (header) {
      anonymous = header[1] === '0' && (header[2] ?? '').trim() === '';
      sizeKiB = 0;
      continue;
    }
    const field = /^(Size|Rss):\s+(\d+) kB/.exec(line);
    if (!field) continue;
    const kib = Number(field[2]);
    if (field[1] === 'Size') {
      sizeKiB = kib;
      continue;
    }
    rssKiB += kib;
    if (anonymous && sizeKiB >= guestKiB && sizeKiB <= guestKiB + GUEST_MAPPING_SLACK_KIB) {
      guestRssKiB += kib;
      guestMappingsKiB.push(sizeKiB);
    }
  }
  return { rssKiB, guestRssKiB, guestMappingsKiB };
}

/** utime + stime of a process in milliseconds (fields 14 and 15 of /proc/PID/stat, in clock ticks). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const ticks = Number(statField(stat, 14)) + Number(statField(stat, 15));
  return (ticks * 1000) / 100; // USER_HZ is 100 on every Linux x86 build.
}

/** One sample, or undefined when the process is already gone. */
export function sampleMemory(pid: number, guestMiB: number, atMs: number): MemorySample | undefined {
  try {
    const cpu = cpuMs(pid);
    const { rssKiB, guestRssKiB, guestMappingsKiB } = parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'), guestMiB * 1024);
    return { atMs, rssKiB, guestRssKiB, overheadKiB: rssKiB - guestRssKiB, guestMappingsKiB, cpuMs: cpu };
  } catch {
    return undefined;
  }
}
