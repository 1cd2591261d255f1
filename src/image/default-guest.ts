/**
 * The default guest: Debian's cloud kernel and an initramfs holding busybox, the kernel's virtio
 * and vsock modules, and an init that runs one command and powers off (see guest-protocol.ts).
 * Built once into the cache and rebuilt only when its inputs change.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BOOT_COMPLETE_MAGIC, FIRECRACKER_BOOT_TIMER_MMIO_BASE } from '../devices/legacy/boot-timer.js';
import { cacheDir } from '../util/cache.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';
import { CpioWriter } from './cpio.js';
import { ensureAptPackages, fetchDebianKernel } from './debian.js';
import { CMDLINE_COMMAND_KEY, DEFAULT_GUEST_COMMAND, GUEST_STATUS_MMIO_BASE } from './guest-protocol.js';
import { resolveModules } from './kmod.js';

/** Modules the default guest loads, in this order after their dependencies (all =m in Debian's cloud kernel). */
export const DEFAULT_GUEST_MODULES = [
  'virtio_pci',
  'virtio_mmio',
  'virtio_blk',
  'virtio_net',
  'virtio_console',
  'virtio_rng',
  'virtio_balloon',
  'vmw_vsock_virtio_transport',
] as const;

const BUSYBOX = '/bin/busybox';

/** The init script. Written for busybox sh; every step says what failed instead of stopping silently. */
export function defaultInitScript(): string {
  return `#!/bin/busybox sh
# tsvmm default guest init: mount, load modules, run the command from the kernel command line, power off.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Boot timer: /init has started (Firecracker's boot-complete magic).
devmem 0x${FIRECRACKER_BOOT_TIMER_MMIO_BASE.toString(16)} 8 ${BOOT_COMPLETE_MAGIC}
while read -r m; do insmod "/lib/modules/$m" 2>/dev/null || echo "tsvmm-init: could not load $m" >&2; done < /etc/tsvmm/modules
hostname tsvmm
ip link set lo up 2>/dev/null
cmd=
root=
rootmode=ro
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ${CMDLINE_COMMAND_KEY}=*) cmd=$(echo "\${arg#${CMDLINE_COMMAND_KEY}=}" | base64 -d) ;;
    root=*) root=\${arg#root=} ;;
    ro|rw) rootmode=$arg ;;
  esac
done
[ -n "$cmd" ] || cmd=$(cat /etc/tsvmm/default-command)
# A root drive (root=/dev/vda ro|rw, as Firecracker appends): mount it at /newroot; the initramfs
# stays the running system so the status report and poweroff below work whatever the image holds.
rooted=
if [ -n "$root" ]; then
  mkdir -p /newroot
  # virtio_blk may still be probing: wait up to 5 s for the device node.
  i=0; while [ ! -b "$root" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if mount -t ext4 -o "$rootmode" "$root" /newroot; then
    rooted=1
    for d in proc sys dev; do [ -d "/newroot/$d" ] && mount -o bind "/$d" "/newroot/$d" 2>/dev/null; done
  else
    echo "tsvmm-init: could not mount $root ($rootmode) at /newroot" >&2
  fi
fi
cd /root
if [ -n "$rooted" ] && [ -x /newroot/bin/sh ]; then
  chroot /newroot /bin/sh -c "$cmd"
else
  sh -c "$cmd"
fi
status=$?
cd /
sync
if [ -n "$rooted" ]; then
  for d in dev sys proc; do umount "/newroot/$d" 2>/dev/null; done
  umount /newroot 2>/dev/null || mount -o remount,ro /newroot 2>/dev/null
fi
devmem 0x${GUEST_STATUS_MMIO_BASE.toString(16)} 8 $status
poweroff -f
`;
}

export interface DefaultGuest {
  /** The kernel (bzImage). */
  readonly kernel: string;
  readonly kernelRelease: string;
  readonly initrd: string;
  /** The kernel command line, without the command. */
  readonly bootArgs: string;
}

/** Kernel command line for the default guest: serial console, quiet (every console byte is a VM exit), no reboot loop on panic. */
export const DEFAULT_BOOT_ARGS = 'console=ttyS0 reboot=k panic=1 quiet';

/** Fetch the kernel and build the initramfs if needed; cheap when both are cached. */
export function ensureDefaultGuest(progress: ProgressSink = stderrProgress): DefaultGuest {
  ensureAptPackages(['busybox-static'], progress);
  const kernel = fetchDebianKernel('cloud-amd64', progress);
  const script = defaultInitScript();
  const busybox = statSync(BUSYBOX);
  // The key uses only cheap inputs: resolving module dependencies walks the whole modules tree,
  // which is slow (and, in the nested host, over 9p), so it happens only when building.
  const key = createHash('sha256')
    .update(JSON.stringify({ v: 2, release: kernel.release, modules: DEFAULT_GUEST_MODULES, script, DEFAULT_GUEST_COMMAND, busybox: [busybox.size, busybox.mtimeMs] }))
    .digest('hex')
    .slice(0, 16);
  const dir = cacheDir('guest');
  const initrd = join(dir, `initramfs-${kernel.release}-${key}.cpio`);
  if (!existsSync(initrd)) {
    const modules = resolveModules(kernel.modulesDir, DEFAULT_GUEST_MODULES);
    progress(`building the default guest initramfs (busybox + ${modules.length} kernel modules)`);
    mkdirSync(dir, { recursive: true });
    const w = new CpioWriter();
    for (const d of ['/bin', '/sbin', '/usr/bin', '/usr/sbin', '/proc', '/sys', '/dev', '/tmp', '/run', '/root', '/etc/tsvmm', '/lib/modules']) w.dir(d);
    w.device('/dev/console', 'char', 5, 1, 0o600);
    w.device('/dev/null', 'char', 1, 3, 0o666);
    w.fileFrom('/bin/busybox', BUSYBOX, 0o755);
    w.symlink('/bin/sh', 'busybox');
    for (const m of modules) w.fileFrom(`/lib/modules/${basename(m)}`, m, 0o644);
    w.file('/etc/tsvmm/modules', modules.map((m) => basename(m)).join('\n') + '\n');
    w.file('/etc/tsvmm/default-command', `${DEFAULT_GUEST_COMMAND}\n`);
    w.file('/init', script, 0o755);
    const tmp = `${initrd}.partial`;
    w.writeToFile(tmp);
    renameSync(tmp, initrd);
    // Earlier builds (other kernels, other init scripts) are never used again.
    for (const old of readdirSync(dir)) {
      if (old.startsWith('initramfs-') && join(dir, old) !== initrd) rmSync(join(dir, old), { force: true });
    }
  }
  return { kernel: kernel.bzImage, kernelRelease: kernel.release, initrd, bootArgs: DEFAULT_BOOT_ARGS };
}
