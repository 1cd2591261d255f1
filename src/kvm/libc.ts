/**
 * The libc calls tsvmm needs, bound through koffi. This module (and the rest of src/kvm) is the
 * only place in the project that touches native code; everything above it sees plain numbers,
 * bigints, Buffers and typed errors.
 *
 * ioctl is variadic in C but declared here with fixed prototypes (a pointer variant and an
 * integer variant): on x86_64 SysV a variadic call passes the third argument in the same
 * register either way, and fixed prototypes let koffi marshal without per-call type lookups.
 */
import koffi from 'koffi';

const lib = koffi.load('libc.so.6');

const c = {
  open: lib.func('int open(const char *path, int flags)'),
  close: lib.func('int close(int fd)'),
  ioctlPtr: lib.func('int ioctl(int fd, unsigned long req, void *arg)'),
  ioctlInt: lib.func('int ioctl(int fd, unsigned long req, uintptr_t arg)'),
  mmap: lib.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
  munmap: lib.func('int munmap(void *addr, size_t len)'),
  // The same two by numeric address, for placing a mapping inside a reservation (mmapAligned).
  mmapAt: lib.func('void *mmap(uintptr_t addr, size_t len, int prot, int flags, int fd, int64_t off)'),
  munmapAt: lib.func('int munmap(uintptr_t addr, size_t len)'),
  madvise: lib.func('int madvise(void *addr, size_t len, int advice)'),
  eventfd: lib.func('int eventfd(unsigned int initval, int flags)'),
  read: lib.func('intptr_t read(int fd, void *buf, size_t n)'),
  write: lib.func('intptr_t write(int fd, const void *buf, size_t n)'),
  // The same two on native memory named by address: no buffer to look up and check per call.
  readAt: lib.func('intptr_t read(int fd, uintptr_t buf, size_t n)'),
  writeAt: lib.func('intptr_t write(int fd, uintptr_t buf, size_t n)'),
  pthreadSelf: lib.func('uint64_t pthread_self(void)'),
  pthreadKill: lib.func('int pthread_kill(uint64_t thread, int sig)'),
  epollCreate1: lib.func('int epoll_create1(int flags)'),
  epollCtl: lib.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epollWait: lib.func('int epoll_wait(int epfd, void *events, int maxevents, int timeout)'),
  socketpair: lib.func('int socketpair(int domain, int type, int protocol, int *sv)'),
  timerfdCreate: lib.func('int timerfd_create(int clockid, int flags)'),
  timerfdSettime: lib.func('int timerfd_settime(int fd, int flags, uintptr_t newValue, uintptr_t oldValue)'),
};

// open(2) flags, from asm-generic/fcntl.h.
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
// mmap(2) flags, from asm-generic/mman-common.h and asm-generic/mman.h (x86_64).
export const PROT_NONE = 0x0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
// eventfd(2) flags, from linux/eventfd.h.
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
// epoll(7), from linux/eventpoll.h.
export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
/** Edge-triggered: reported once per wake-up of the fd's wait queue, not while it stays ready. */
export const EPOLLET = 0x80000000;
/** Always reported by epoll_wait, whether asked for or not. */
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
/** struct epoll_event is packed on x86_64 (__EPOLL_PACKED): __u32 events, then __u64 data at byte 4. */
export const EPOLL_EVENT_SIZE = 12;
export const EPOLL_EVENT_DATA_OFFSET = 4;
// Signal numbers, from asm/signal.h (x86_64).
export const SIGUSR2 = 12;

const errnoNames: ReadonlyMap<number, string> = new Map(
  Object.entries(koffi.os.errno as Record<string, number>).map(([name, num]) => [num, name]),
);

/** Symbolic errno constants, from asm-generic/errno-base.h and errno.h. */
export const errno = koffi.os.errno as Readonly<Record<string, number>>;

/** The name of an errno value ("EINTR"), or "E<number>" when unknown. */
export function errnoName(code: number): string {
  return errnoNames.get(code) ?? `E${code}`;
}

/** A failed system call: carries the call, the errno and its name, and what we were doing. */
export class SystemCallError extends Error {
  readonly code: string;
  constructor(
    readonly syscall: string,
    readonly errno: number,
    readonly what: string,
  ) {
    super(`${what}: ${syscall} failed with ${errnoName(errno)} (errno ${errno})`);
    this.name = 'SystemCallError';
    this.code = errnoName(errno);
  }
}

/** The errno of the last libc call made on this thread through koffi. */
export function lastErrno(): number {
  return koffi.errno();
}

function check(rc: number, syscall: string, what: string): number {
  if (rc < 0) throw new SystemCallError(syscall, koffi.errno(), what);
  return rc;
}

export function open(path: string, flags: number, what = `open ${path}`): number {
  return check(c.open(path, flags) as number, 'open', what);
}

export function close(fd: number): void {
  check(c.close(fd) as number, 'close', `close fd ${fd}`);
}

/**
 * A signal arriving during an ioctl can fail it with EINTR before it did anything (KVM_CREATE_VM
 * did so under a profiler's SIGPROF): such calls are simply made again, as QEMU's kvm_init does
 * for KVM_CREATE_VM. Bounded, so a signal storm gives an error instead of a spin.
 */
const MAX_EINTR_RETRIES = 100;

/** ioctl with a pointer argument (a Buffer or typed array the kernel reads and/or writes). Throws on failure. */
export function ioctl(fd: number, request: number, arg: Uint8Array | null, what: string): number {
  let rc = c.ioctlPtr(fd, request, arg) as number;
  for (let i = 0; rc < 0 && i < MAX_EINTR_RETRIES && koffi.errno() === errno.EINTR; i++) rc = c.ioctlPtr(fd, request, arg) as number;
  return check(rc, 'ioctl', what);
}

/** ioctl with an integer argument. Throws on failure. */
export function ioctlValue(fd: number, request: number, arg: number | bigint, what: string): number {
  let rc = c.ioctlInt(fd, request, arg) as number;
  for (let i = 0; rc < 0 && i < MAX_EINTR_RETRIES && koffi.errno() === errno.EINTR; i++) rc = c.ioctlInt(fd, request, arg) as number;
  return check(rc, 'ioctl', what);
}

/**
 * ioctl with an integer argument that returns the raw result (-1 on failure; read the errno with
 * lastErrno()). For KVM_RUN, whose EINTR is an expected outcome, and KVM_CHECK_EXTENSION.
 */
export function ioctlValueRaw(fd: number, request: number, arg: number | bigint): number {
  return c.ioctlInt(fd, request, arg) as number;
}

/** A host mapping: the opaque koffi pointer and its numeric address (what KVM wants). */
export interface HostMapping {
  readonly pointer: unknown;
  readonly address: bigint;
  readonly length: number;
}

const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

export function mmap(length: number, prot: number, flags: number, fd: number, offset: number, what: string): HostMapping {
  const pointer: unknown = c.mmap(null, length, prot, flags, fd, offset);
  const address = pointer === null ? 0n : koffi.address(pointer);
  if (pointer === null || address === MAP_FAILED) {
    throw new SystemCallError('mmap', koffi.errno(), what);
  }
  return { pointer, address, length };
}

/** mmap(2)'s MAP_FIXED: place the mapping exactly at addr, replacing what was there (asm-generic/mman-common.h). */
export const MAP_FIXED = 0x10;

/**
 * An anonymous mapping of `length` bytes whose address is a multiple of `alignment` (a power of
 * two): a PROT_NONE reservation `alignment` bytes longer, the mapping placed at its first aligned
 * address with MAP_FIXED, and the unused head and tail of the reservation unmapped. Guest RAM uses
 * it so that guest-physical and host-virtual addresses agree modulo 2 MiB, which KVM needs before it
 * maps guest memory with 2 MiB pages (Documentation/virt/kvm/api.rst, KVM_SET_USER_MEMORY_REGION:
 * "it is recommended that the lower 21 bits of guest_phys_addr and userspace_addr be identical").
 */
export function mmapAligned(length: number, alignment: number, prot: number, flags: number, what: string): HostMapping {
  const reserved = mmap(length + alignment, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, what);
  const align = BigInt(alignment);
  const start = (reserved.address + align - 1n) & ~(align - 1n);
  const end = start + BigInt(length);
  const reservedEnd = reserved.address + BigInt(reserved.length);
  let pointer: unknown;
  try {
    pointer = c.mmapAt(start, length, prot, flags | MAP_FIXED, -1, 0);
    if (pointer === null || koffi.address(pointer) !== start) throw new SystemCallError('mmap', koffi.errno(), what);
  } catch (e) {
    munmap(reserved);
    throw e;
  }
  // Give back the reservation around the mapping (failures would only leave PROT_NONE address space behind).
  if (start > reserved.address) c.munmapAt(reserved.address, Number(start - reserved.address));
  if (reservedEnd > end) c.munmapAt(end, Number(reservedEnd - end));
  return { pointer, address: start, length };
}

/** madvise(2) advice MADV_HUGEPAGE (asm-generic/mman-common.h): back this range with transparent huge pages. */
export const MADV_HUGEPAGE = 14;

/**
 * Ask for transparent huge pages over the mapping. Returns false where the kernel has none
 * (EINVAL: built without THP) or refuses; the memory works the same, with 4 KiB pages.
 */
export function adviseHugePages(mapping: HostMapping): boolean {
  return (c.madvise(mapping.pointer, mapping.length, MADV_HUGEPAGE) as number) === 0;
}

export function munmap(mapping: HostMapping): void {
  check(c.munmap(mapping.pointer, mapping.length) as number, 'munmap', `unmap ${mapping.length} bytes`);
}

/** Largest view we make with koffi.view: in Node 20 views above 4 GiB abort the whole process, so stay well below. */
export const MAX_VIEW_BYTES = 2 ** 31;

/** A zero-copy ArrayBuffer over a whole mapping (at most MAX_VIEW_BYTES long). */
export function viewMapping(mapping: HostMapping): ArrayBuffer {
  if (mapping.length > MAX_VIEW_BYTES) {
    throw new RangeError(`viewMapping: a ${mapping.length}-byte mapping is larger than one view can be (${MAX_VIEW_BYTES}); map it in pieces`);
  }
  return koffi.view(mapping.pointer, mapping.length);
}

export function eventfd(initval: number, flags: number): number {
  return check(c.eventfd(initval, flags) as number, 'eventfd', 'create an eventfd');
}

/** clock_gettime(2) clock IDs, from linux/time.h. */
export const CLOCK_MONOTONIC = 1;
/** timerfd_create(2) flags (linux/timerfd.h: the O_ flags' values). */
export const TFD_NONBLOCK = O_NONBLOCK;
export const TFD_CLOEXEC = O_CLOEXEC;
/** struct itimerspec: it_interval then it_value, each a struct timespec of two 64-bit fields. */
const ITIMERSPEC_SIZE = 32;
const ITIMERSPEC_VALUE_OFFSET = 16;

/**
 * A one-shot CLOCK_MONOTONIC timerfd: readable once armed time has passed. Arming again restarts
 * it and clears an expiry not yet read (timerfd_settime resets the count), so nobody has to read it.
 */
export class OneShotTimerFd {
  readonly fd: number;
  private readonly spec = nativeCells(ITIMERSPEC_SIZE);

  constructor() {
    this.fd = check(c.timerfdCreate(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC) as number, 'timerfd_create', 'create a timerfd');
  }

  /** Expire `ms` from now (at least 1 ms: an all-zero it_value would disarm it). One system call. */
  arm(ms: number): void {
    const whole = Math.max(1, Math.ceil(ms));
    // Two 32-bit halves each (the high ones stay 0): no BigInt to allocate.
    this.spec.view.setUint32(ITIMERSPEC_VALUE_OFFSET, Math.floor(whole / 1000), true);
    this.spec.view.setUint32(ITIMERSPEC_VALUE_OFFSET + 8, (whole % 1000) * 1_000_000, true);
    check(c.timerfdSettime(this.fd, 0, this.spec.address, 0) as number, 'timerfd_settime', 'arm a timerfd');
  }

  close(): void {
    close(this.fd);
  }
}

/** read(2); returns bytes read, or -errno (e.g. -EAGAIN on a non-blocking fd) without throwing for EAGAIN. */
export function read(fd: number, buf: Uint8Array): number {
  const n = Number(c.read(fd, buf, buf.length));
  if (n < 0) {
    const e = koffi.errno();
    if (e === errno.EAGAIN) return -e;
    throw new SystemCallError('read', e, `read fd ${fd}`);
  }
  return n;
}

export function write(fd: number, buf: Uint8Array): number {
  return check(Number(c.write(fd, buf, buf.length)), 'write', `write fd ${fd}`);
}

/**
 * Native memory of `bytes` bytes that never moves, for the by-address calls below: its address
 * (a plain number, below 2^47 on x86-64) and a view of it. Never freed; allocate once per module.
 */
export function nativeCells(bytes: number): { readonly pointer: unknown; readonly address: number; readonly view: DataView } {
  // koffi.alloc memory stays until koffi.free; the caller keeps `pointer` referenced all the same.
  const pointer: unknown = koffi.alloc('uint8_t', bytes);
  return { pointer, address: Number(koffi.address(pointer)), view: new DataView(koffi.view(pointer, bytes)) };
}

/**
 * read(2) into native memory at `address` (from nativeCells): returns bytes read, or -EAGAIN on a
 * non-blocking fd with nothing to read. The doorbell path's read: an integer-only call.
 */
export function readAt(fd: number, address: number, n: number): number {
  const r = c.readAt(fd, address, n) as number;
  if (r < 0) {
    const e = koffi.errno();
    if (e === errno.EAGAIN) return -e;
    throw new SystemCallError('read', e, `read fd ${fd}`);
  }
  return r;
}

/** write(2) from native memory at `address` (from nativeCells). Throws on failure. */
export function writeAt(fd: number, address: number, n: number): number {
  return check(c.writeAt(fd, address, n) as number, 'write', `write fd ${fd}`);
}

/** The calling thread's pthread_t, as a bigint (glibc: the address of its thread descriptor). */
export function pthreadSelf(): bigint {
  return BigInt(c.pthreadSelf() as number | bigint);
}

/** sched_setscheduler(2) policies, from linux/sched.h. */
export const SCHED_OTHER = 0;
export const SCHED_BATCH = 3;
const schedSetschedulerFn = lib.func('int sched_setscheduler(int pid, int policy, const int *param)');

/**
 * Give the calling thread a normal-class scheduling policy (SCHED_OTHER or SCHED_BATCH; priority
 * 0, as both require). On Linux pid 0 means the calling thread, not the whole process. Returns 0
 * or the error number.
 */
export function setThreadSchedulingPolicy(policy: typeof SCHED_OTHER | typeof SCHED_BATCH): number {
  const rc = schedSetschedulerFn(0, policy, [0]) as number;
  return rc === 0 ? 0 : lastErrno();
}

/** Send `signal` to a thread of this process. Returns 0 or the error number (pthread_kill does not set errno). */
export function pthreadKill(thread: bigint, signal: number): number {
  return c.pthreadKill(thread, signal) as number;
}

// fallocate(2) modes, from linux/falloc.h.
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

const fallocateFn = lib.func('int fallocate(int fd, int mode, int64_t offset, int64_t len)');

/**
 * fallocate(2) run off the main thread (koffi's async call, on libuv's threadpool like node's own
 * fs calls), for virtio-blk discard and write-zeroes: node's fs has no fallocate. `done` learns
 * only whether it worked: errno belongs to the worker thread and cannot be read back here.
 */
export function fallocateAsync(fd: number, mode: number, offset: number, length: number, done: (ok: boolean) => void): void {
  fallocateFn.async(fd, mode, offset, length, (error: unknown, result: unknown) => done(error == null && result === 0));
}

export function epollCreate(): number {
  return check(c.epollCreate1(EPOLL_CLOEXEC) as number, 'epoll_create1', 'create an epoll instance');
}

/** One struct epoll_event for epoll_ctl, reused: the call is synchronous and copies it. */
const epollCtlEvent = Buffer.alloc(EPOLL_EVENT_SIZE);

/**
 * epoll_ctl(2) with interest `events` (EPOLLIN by default) and `token` (a non-negative integer
 * below 2^32) as the event's data; both are ignored for EPOLL_CTL_DEL. Allocates nothing, so
 * watches can be switched on and off per packet burst (virtio-net back-pressure).
 */
export function epollCtl(epfd: number, op: number, fd: number, token: number, events = EPOLLIN): void {
  epollCtlEvent.writeUInt32LE(events >>> 0, 0);
  epollCtlEvent.writeUInt32LE(token >>> 0, EPOLL_EVENT_DATA_OFFSET);
  epollCtlEvent.writeUInt32LE(0, EPOLL_EVENT_DATA_OFFSET + 4);
  if ((c.epollCtl(epfd, op, fd, epollCtlEvent) as number) < 0) {
    const action = op === EPOLL_CTL_DEL ? 'remove fd' : op === EPOLL_CTL_MOD ? 'change the events of fd' : 'add fd';
    throw new SystemCallError('epoll_ctl', koffi.errno(), `${action} ${fd} ${op === EPOLL_CTL_DEL ? 'from' : 'in'} epoll ${epfd}`);
  }
}

/**
 * epoll_wait(2) run on a libuv threadpool thread (koffi's asynchronous call), so it may block
 * without blocking the event loop. `done` gets the number of events written to `events`
 * (EPOLL_EVENT_SIZE bytes each), or -1 on failure: the errno is the threadpool thread's and
 * cannot be read here, and with a valid epoll fd and buffer the only failure is EINTR (a
 * process-directed signal landing on that thread), after which the caller waits again.
 * `events` must stay alive until `done` runs.
 */
export function epollWaitAsync(epfd: number, events: Buffer, timeoutMs: number, done: (result: number) => void): void {
  const maxEvents = Math.floor(events.length / EPOLL_EVENT_SIZE);
  c.epollWait.async(epfd, events, maxEvents, timeoutMs, (err: unknown, n: number) => done(err === null || err === undefined ? n : -1));
}

/** errno: the operation is not supported (here: a file system without RWF_NOWAIT), asm-generic/errno.h. */
export const EOPNOTSUPP = 95;
// preadv2(2)/pwritev2(2) flags, from linux/fs.h.
/** Fail with EAGAIN instead of waiting: for reads, data not in the page cache; for writes, a lock or allocation that would block. */
export const RWF_NOWAIT = 0x08;
/** struct iovec on x86_64: void *iov_base, size_t iov_len. */
export const IOVEC_SIZE = 16;

// The iovec arrays are native memory named by address (HostIovecs, nativeCells): integer arguments only.
const preadv2Fn = lib.func('intptr_t preadv2(int fd, uintptr_t iov, int iovcnt, int64_t offset, int flags)');
const pwritev2Fn = lib.func('intptr_t pwritev2(int fd, uintptr_t iov, int iovcnt, int64_t offset, int flags)');

const fstatfsFn = lib.func('int fstatfs(int fd, void *buf)');
/** struct statfs on x86_64 is 120 bytes; f_type (a long) comes first. */
const STATFS_SIZE = 120;
const statfsBuffer = Buffer.alloc(STATFS_SIZE);
/** File system magic numbers (statfs f_type), from linux/magic.h. */
export const TMPFS_MAGIC = 0x01021994;
export const RAMFS_MAGIC = 0x858458f6;

/** The type of the file system `fd` lives on (statfs f_type, e.g. TMPFS_MAGIC), or undefined if fstatfs fails. */
export function fileSystemType(fd: number): number | undefined {
  if ((fstatfsFn(fd, statfsBuffer) as number) !== 0) return undefined;
  return Number(statfsBuffer.readBigInt64LE(0));
}

/**
 * preadv2(2) (or pwritev2(2) when `write`) of `count` struct iovecs in `iovecs`, at file
 * `position`, on the calling thread: the bytes moved, or the negative errno. With RWF_NOWAIT it
 * never waits for the disk, so the main thread may call it.
 */
export function transferIovecsNow(fd: number, write: boolean, iovecsAddress: number, count: number, position: number, flags: number): number {
  const n = (write ? pwritev2Fn : preadv2Fn)(fd, iovecsAddress, count, position, flags) as number;
  return n >= 0 ? n : -koffi.errno();
}

/**
 * transferIovecsNow with no flags on libuv's threadpool (koffi's async call, as node's own fs
 * calls run): for transfers that may wait for the disk. `done` gets the bytes moved, or -1 when
 * the call failed (errno belongs to the worker thread and cannot be read back here). The iovecs,
 * and the memory they name, must stay valid until `done` runs.
 */
export function transferIovecsAsync(fd: number, write: boolean, iovecsAddress: number, count: number, position: number, done: (result: number) => void): void {
  (write ? pwritev2Fn : preadv2Fn).async(fd, iovecsAddress, count, position, 0, (error: unknown, result: unknown) => done(error == null && typeof result === 'number' && result >= 0 ? result : -1));
}

const readvFn = lib.func('intptr_t readv(int fd, uintptr_t iov, int iovcnt)');
const writevFn = lib.func('intptr_t writev(int fd, uintptr_t iov, int iovcnt)');

/**
 * readv(2) (or writev(2) when `write`) of `count` struct iovecs in `iovecs`: the bytes moved, or
 * the negative errno (-EAGAIN on a non-blocking descriptor with nothing to read or no room).
 */
export function readvOrWritevNow(fd: number, write: boolean, iovecsAddress: number, count: number): number {
  const n = (write ? writevFn : readvFn)(fd, iovecsAddress, count) as number;
  return n >= 0 ? n : -koffi.errno();
}

/** errno: try again (non-blocking descriptor not ready), asm-generic/errno-base.h. */
export const EAGAIN = 11;

/**
 * epoll_wait(2) with a zero timeout, on the calling thread: the events ready now (at most as many
 * as `events` holds), 0 when none, -1 on failure. For a caller that already knows the epoll fd is
 * readable (main-loop-poll.ts), so it never blocks.
 */
export function epollWaitNow(epfd: number, events: Buffer): number {
  return epollWaitBlocking(epfd, events, 0);
}

/**
 * epoll_wait(2) on the calling thread, blocking it up to `timeoutMs` (-1: without limit): the
 * events ready (at most as many as `events` holds), 0 on timeout, -1 on failure (EINTR). Only for
 * a thread whose job is to wait there: EventFdPoller's held wait (eventfd-poller.ts).
 */
export function epollWaitBlocking(epfd: number, events: Buffer, timeoutMs: number): number {
  const n = c.epollWait(epfd, events, Math.floor(events.length / EPOLL_EVENT_SIZE), timeoutMs) as number;
  return n < 0 ? -1 : n;
}

// Sockets, from linux/socket.h and linux/net.h (x86_64).
export const AF_UNIX = 1;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
/** Reliable, connected, and each write is one message read back whole: packet boundaries kept. */
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;

/**
 * socketpair(2): two connected sockets (node's net module cannot make them). `type` may carry
 * SOCK_NONBLOCK and SOCK_CLOEXEC. Tests use an AF_UNIX SOCK_SEQPACKET pair as a network backend
 * that keeps frame boundaries, as a tap does.
 */
export function socketpair(domain: number, type: number): [number, number] {
  const fds = new Int32Array(2);
  check(c.socketpair(domain, type, 0, fds) as number, 'socketpair', 'create a socket pair');
  return [fds[0]!, fds[1]!];
}

// TUN/TAP, from linux/if_tun.h and linux/if.h. The ioctl numbers are _IOW('T', n, int) = 0x400454xx
// and _IOR('T', n, ...) = 0x800454xx (asm-generic/ioctl.h: dir << 30 | size 4 << 16 | 'T' << 8 | n).
export const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int), argument: struct ifreq *
export const TUNGETFEATURES = 0x800454cf; // _IOR('T', 207, unsigned int)
export const TUNSETOFFLOAD = 0x400454d0; // _IOW('T', 208, unsigned int), argument: the flags by value
export const TUNGETIFF = 0x800454d2; // _IOR('T', 210, unsigned int), argument: struct ifreq *
export const TUNGETVNETHDRSZ = 0x800454d7; // _IOR('T', 215, int)
export const TUNSETVNETHDRSZ = 0x400454d8; // _IOW('T', 216, int), argument: int *
/** TUNSETIFF flags (ifr_flags). */
export const IFF_TUN = 0x0001;
export const IFF_TAP = 0x0002;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_MULTI_QUEUE = 0x0100;
/** TUNSETOFFLOAD flags: what the tap may hand us unfinished (partial checksums, GSO frames). */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
/** struct ifreq on x86_64: char ifr_name[IFNAMSIZ = 16], then a 24-byte union whose first member here is short ifr_flags. */
export const IFREQ_SIZE = 40;
export const IFNAMSIZ = 16;
export const IFREQ_FLAGS_OFFSET = 16;

const exitNow = lib.func('void _exit(int status)');
/**
 * End the process at once with `status`, skipping exit handlers: libuv joins its threadpool at
 * exit, which never finishes while a pool thread is blocked in a read that cannot be interrupted
 * (the nested host's virtio-serial control port, cli/vm-agent.ts). Flush anything first.
 */
export function exitImmediately(status: number): never {
  exitNow(status);
  throw new Error('_exit returned');
}
