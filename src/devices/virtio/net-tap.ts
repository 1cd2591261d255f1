/**
 * The host end of a virtio-net device: a TAP interface (linux/if_tun.h), opened as QEMU and
 * Firecracker open theirs.
 *
 * - /dev/net/tun is opened non-blocking, then TUNSETIFF attaches the descriptor to the named
 *   interface with IFF_TAP (Ethernet frames), IFF_NO_PI (no 4-byte packet-information prefix) and
 *   IFF_VNET_HDR (each frame carries a struct virtio_net_hdr in front).
 * - TUNSETVNETHDRSZ 12 makes that header the 12-byte struct virtio_net_hdr_v1 of virtio 1.x
 *   (virtio 1.2 §5.1.6), so the header passes unchanged between guest memory and the tap, in both
 *   directions: the tap fills flags, gso_type, hdr_len, gso_size, csum_start and csum_offset of
 *   received frames and skips num_buffers (the device writes that), and reads the same fields of
 *   transmitted frames. The header is little-endian as virtio 1.x wants on a little-endian host
 *   (the tap uses host order unless TUNSETVNETBE/LE say otherwise; tsvmm runs on x86_64 only).
 * - TUNSETOFFLOAD says which unfinished frames (partial checksums, TSO/UFO super-frames) the tap
 *   may hand to us: exactly those the guest accepted (VIRTIO_NET_F_GUEST_*). Which flags the
 *   running kernel accepts is probed at open: the kernel refuses unknown ones with EINVAL
 *   ("This gives the user a way to test for new features", drivers/net/tun.c).
 *
 * Link configuration is left to the user, as Firecracker does: tsvmm never brings the interface
 * up, gives it addresses or adds it to a bridge. TUNSETIFF creates a missing interface when the
 * process has CAP_NET_ADMIN (root); such a tap is not persistent (it disappears when tsvmm closes
 * it) and starts down: `ip link set NAME up` and an address or a bridge make it useful. For a
 * user without CAP_NET_ADMIN, root creates a persistent tap owned by that user once:
 * `ip tuntap add dev NAME mode tap user $(id -u)`.
 *
 * Each failure is a TapError with one line saying what to do.
 */
import { Buffer } from 'node:buffer';
import {
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  IFNAMSIZ,
  IFREQ_FLAGS_OFFSET,
  IFREQ_SIZE,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  SystemCallError,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETVNETHDRSZ,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_TSO_ECN,
  TUN_F_UFO,
  close,
  ioctl,
  ioctlValue,
  open,
} from '../../kvm/libc.js';
import { TsvmmError } from '../../util/errors.js';
import { VIRTIO_NET_HDR_SIZE, type NetBackend } from './net.js';

/** The clone device every tap is opened through. */
export const TUN_DEVICE_PATH = '/dev/net/tun';

/** What went wrong opening a tap. */
export type TapErrorKind =
  /** /dev/net/tun does not exist (tun module not loaded, or no device node in a container). */
  | 'no-tun-device'
  /** /dev/net/tun exists but this user may not open it. */
  | 'tun-access'
  /** The interface name is empty, too long or contains '/' or whitespace. */
  | 'bad-name'
  /** Another process has the (single-queue) tap open. */
  | 'busy'
  /** The tap does not exist and cannot be created, or belongs to another user (no CAP_NET_ADMIN). */
  | 'permission'
  /** An interface of that name exists but is not a single-queue tap (a tun, a multi-queue tap, eth0...). */
  | 'not-a-tap'
  /** The kernel refused the 12-byte virtio header (TUNSETVNETHDRSZ). */
  | 'no-vnet-hdr'
  /** Anything else. */
  | 'failed';

/** A tap that could not be opened; the message is one line saying what to do. */
export class TapError extends TsvmmError {
  constructor(
    readonly kind: TapErrorKind,
    readonly tapName: string,
    /** The errno name ("EBUSY") when a system call failed. */
    readonly errnoName: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** The offload flags probed, each with what it depends on (TUN_F_CSUM for all, TSO for ECN). */
const OFFLOAD_PROBES: readonly number[] = [
  TUN_F_CSUM,
  TUN_F_CSUM | TUN_F_TSO4,
  TUN_F_CSUM | TUN_F_TSO6,
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN,
  TUN_F_CSUM | TUN_F_UFO,
];

export interface OpenTapOptions {
  /** The clone device (default /dev/net/tun); tests point it elsewhere to see the missing-device error. */
  readonly tunPath?: string;
}

/**
 * An open tap: frames with a 12-byte virtio_net_hdr_v1 in front, one per read or write, on a
 * non-blocking descriptor (reads and writes fail with EAGAIN rather than wait).
 */
export class Tap implements NetBackend {
  /** TUN_F_* flags in effect (TUNSETOFFLOAD). */
  offloads = 0;
  private closed = false;

  private constructor(
    /** The interface name the kernel attached (the requested one). */
    readonly name: string,
    readonly fd: number,
    /** TUN_F_* flags this kernel accepts. */
    readonly supportedOffloads: number,
  ) {}

  /** Open (or, with CAP_NET_ADMIN, create) tap `name`. Throws TapError. */
  static open(name: string, options: OpenTapOptions = {}): Tap {
    const nameBytes = Buffer.from(name, 'utf8');
    if (nameBytes.length === 0 || nameBytes.length >= IFNAMSIZ || /[\s/]/.test(name) || name.includes('%')) {
      throw new TapError('bad-name', name, undefined, `tap name ${JSON.stringify(name)} is not a Linux interface name (1 to ${IFNAMSIZ - 1} bytes, no '/', '%' or whitespace)`);
    }
    const tunPath = options.tunPath ?? TUN_DEVICE_PATH;
    let fd: number;
    try {
      fd = open(tunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    } catch (e) {
      throw openError(name, tunPath, e);
    }
    try {
      const ifreq = Buffer.alloc(IFREQ_SIZE);
      nameBytes.copy(ifreq, 0);
      ifreq.writeUInt16LE(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, IFREQ_FLAGS_OFFSET);
      try {
        ioctl(fd, TUNSETIFF, ifreq, `attach to tap ${name}`);
      } catch (e) {
        throw attachError(name, e);
      }
      // The kernel writes back the name it attached (ifr_name, NUL-terminated within IFNAMSIZ).
      const end = ifreq.indexOf(0);
      const attached = ifreq.toString('utf8', 0, end >= 0 && end < IFNAMSIZ ? end : IFNAMSIZ - 1);
      const headerSize = Buffer.alloc(4);
      headerSize.writeInt32LE(VIRTIO_NET_HDR_SIZE, 0);
      try {
        ioctl(fd, TUNSETVNETHDRSZ, headerSize, `set the virtio header size of tap ${name}`);
      } catch (e) {
        throw new TapError('no-vnet-hdr', name, errnoOf(e), `tap ${name} refused a ${VIRTIO_NET_HDR_SIZE}-byte virtio-net header (TUNSETVNETHDRSZ: ${errnoOf(e) ?? 'failed'}); the host kernel is too old for virtio-net (Linux 2.6.35+ is needed)`);
      }
      const tap = new Tap(attached || name, fd, probeOffloads(fd));
      tap.setOffloads(0);
      return tap;
    } catch (e) {
      close(fd);
      if (e instanceof TapError) throw e;
      throw new TapError('failed', name, errnoOf(e), `cannot open tap ${name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  /** TUNSETOFFLOAD: which unfinished frames (TUN_F_*) the tap may hand us from now on. Throws SystemCallError. */
  setOffloads(flags: number): void {
    if (this.closed) return;
    ioctlValue(this.fd, TUNSETOFFLOAD, flags, `set the offloads of tap ${this.name} to 0x${flags.toString(16)}`);
    this.offloads = flags;
  }

  /** Close the descriptor: a tap tsvmm created disappears, a persistent one stays. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}

/** Open (or create) tap `name`: see Tap.open. */
export function openTap(name: string, options: OpenTapOptions = {}): Tap {
  return Tap.open(name, options);
}

/** The TUN_F_* flags the kernel accepts on `fd` (each probe sets them; the caller resets). */
function probeOffloads(fd: number): number {
  let supported = 0;
  for (const flags of OFFLOAD_PROBES) {
    try {
      ioctlValue(fd, TUNSETOFFLOAD, flags, 'probe tap offloads');
      supported |= flags;
    } catch {
      // EINVAL: this kernel does not know one of the flags.
    }
  }
  return supported;
}

function errnoOf(e: unknown): string | undefined {
  return e instanceof SystemCallError ? e.code : undefined;
}

/** The TapError for a failed open of the clone device. */
export function openError(name: string, tunPath: string, e: unknown): TapError {
  const code = errnoOf(e);
  switch (code) {
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return new TapError('no-tun-device', name, code, `cannot open tap ${name}: ${tunPath} does not exist (${code}); load the tun module (modprobe tun) or create the node (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)`);
    case 'EACCES':
    case 'EPERM':
      return new TapError('tun-access', name, code, `cannot open tap ${name}: no permission to open ${tunPath} (${code}); it must be readable and writable by this user (chmod 0666 ${tunPath}, the usual mode)`);
    default:
      return new TapError('failed', name, code, `cannot open tap ${name}: opening ${tunPath} failed (${code ?? (e instanceof Error ? e.message : String(e))})`);
  }
}

/** The TapError for a failed TUNSETIFF (linux/drivers/net/tun.c, tun_set_iff). */
export function attachError(name: string, e: unknown): TapError {
  const code = errnoOf(e);
  switch (code) {
    case 'EBUSY':
      return new TapError('busy', name, code, `${name} is in use by another process (TUNSETIFF: EBUSY); stop it or give this VM another tap`);
    case 'EPERM':
      return new TapError('permission', name, code, `no permission to create or attach tap ${name} (TUNSETIFF: EPERM); create it for this user as root first: ip tuntap add dev ${name} mode tap user $(id -u)`);
    case 'EINVAL':
      return new TapError('not-a-tap', name, code, `${name} exists but is not a single-queue tap (TUNSETIFF: EINVAL); delete it (ip link delete ${name}) or choose another name`);
    default:
      return new TapError('failed', name, code, `cannot attach tap ${name} (TUNSETIFF: ${code ?? (e instanceof Error ? e.message : String(e))})`);
  }
}
