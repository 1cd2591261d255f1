/**
 * How the default guest's init and the VMM talk, without any device driver in the guest:
 *
 * - The command to run travels base64-encoded in the kernel command line as `tsvmm.cmd=…`
 *   (a parameter with a dot is left for userspace in /proc/cmdline, not passed to init's argv).
 * - When /init starts it writes Firecracker's boot-complete magic (123) to the boot timer
 *   (Firecracker's MMIO address 0xd0000000).
 * - When the command ends, init writes its exit status (one byte, 0–255) to the guest status
 *   register, the next MMIO page, then syncs and powers off. The VMM exits with that status.
 * Both are MMIO writes with busybox's `devmem` through /dev/mem: Debian's kernel has no
 * /dev/port (CONFIG_DEVPORT is unset), and CONFIG_STRICT_DEVMEM still allows /dev/mem on
 * addresses that are neither RAM nor claimed by a driver.
 */

/** MMIO byte receiving the guest command's exit status. */
export const GUEST_STATUS_MMIO_BASE = 0xd000_1000;
export const GUEST_STATUS_MMIO_SIZE = 0x1000;

/** Kernel command line key carrying the base64 command. */
export const CMDLINE_COMMAND_KEY = 'tsvmm.cmd';

/** The command the default guest runs when none is given. */
export const DEFAULT_GUEST_COMMAND =
  'echo "Hello from a tsvmm microVM"; echo "kernel: $(uname -r)"; echo "cpus: $(nproc)"; echo "uptime: $(cut -d" " -f1 /proc/uptime) s"';

/** `tsvmm.cmd=<base64>` for a shell command. */
export function commandCmdlineArg(command: string): string {
  return `${CMDLINE_COMMAND_KEY}=${Buffer.from(command, 'utf8').toString('base64')}`;
}
