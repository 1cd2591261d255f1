/**
 * What the benchmark asks the guest to do, and how its answer is read back.
 *
 * The default guest's init runs the command carried by `tsvmm.cmd=` on the kernel command line.
 * That is only a kernel parameter, so QEMU gets the very same command line and the same guest
 * behaviour. The command prints the guest's own clock at the moments that matter:
 *   BENCH-UP <uptime>       first thing the command does (init has mounted, loaded modules)
 *   BENCH-K [ t] <message>  kernel log milestones, with the kernel's timestamps (printk time,
 *                           the same clock as /proc/uptime), though `quiet` kept them off the console
 *   BENCH-DONE <uptime>     last thing before init syncs and powers off
 * Only a handful of lines: every console byte is a VM exit, and a full dmesg would cost more
 * than the boot under test.
 */

/** Kernel log lines worth a timestamp, by stage (Linux 6.1 wording). */
export const KERNEL_MILESTONES = {
  /** init/initramfs.c do_populate_rootfs, before unpacking the initrd. */
  initrdUnpackStart: /Trying to unpack rootfs image as initramfs/,
  /** free_initrd_mem: the initramfs is unpacked. */
  initrdFreed: /Freeing initrd memory/,
  /** drivers/rtc/rtc-cmos.c: its LAST line marks the end of the CMOS RTC probe ("registered as rtc0"…, or "broken or not accessible"). */
  rtcProbed: /rtc_cmos/,
  /** free_initmem: the kernel is about to start userspace. */
  initmemFreed: /Freeing unused kernel image \(initmem\) memory/,
  /** kernel_init → run_init_process("/init"). */
  runInit: /Run \/init as init process/,
} as const;

export type KernelMilestone = keyof typeof KERNEL_MILESTONES;

export const GUEST_BENCH_COMMAND = [
  'echo BENCH-UP $(cut -d" " -f1 /proc/uptime)',
  `dmesg | grep -E '${Object.values(KERNEL_MILESTONES)
    .map((r) => r.source.replace(/\\\//g, '/'))
    .join('|')}' | sed 's/^/BENCH-K /'`,
  'echo BENCH-DONE $(cut -d" " -f1 /proc/uptime)',
].join('; ');

/** The line whose arrival on the console marks "the guest's command has started" (wall clock). */
export const FIRST_COMMAND_LINE = /^BENCH-UP /;

/** Seconds on the guest's own clock (kernel uptime). */
export interface GuestTimes {
  uptimeAtCommand?: number;
  uptimeAtDone?: number;
  kernel: Partial<Record<KernelMilestone, number>>;
}

/** Read the guest's answer out of its console text (CR/LF tolerant). */
export function parseGuestTimes(consoleText: string): GuestTimes {
  const times: GuestTimes = { kernel: {} };
  for (const raw of consoleText.split('\n')) {
    const line = raw.replace(/\r$/, '');
    let m = /^BENCH-UP ([\d.]+)/.exec(line);
    if (m) times.uptimeAtCommand ??= Number(m[1]);
    m = /^BENCH-DONE ([\d.]+)/.exec(line);
    if (m) times.uptimeAtDone ??= Number(m[1]);
    m = /^BENCH-K \[\s*([\d.]+)\] (.*)$/.exec(line);
    if (m) {
      for (const [name, re] of Object.entries(KERNEL_MILESTONES) as [KernelMilestone, RegExp][]) {
        if (!re.test(m[2]!)) continue;
        // The RTC driver logs at the start and at the end of its probe; the end is what matters.
        if (name === 'rtcProbed') times.kernel[name] = Number(m[1]);
        else times.kernel[name] ??= Number(m[1]);
      }
    }
  }
  return times;
}
