/**
 * What one device wake-up costs, by the way the waiting thread learns of it: a "vCPU" worker rings
 * eventfd A (as KVM rings an ioeventfd for a queue kick) and blocks reading eventfd B; the waiting
 * side wakes on A, resets it and rings B (as a device answers with an irqfd). Per round trip: two
 * wake-ups across threads and the waiting side's way from the kernel into JavaScript, which is what
 * the paths differ in:
 *
 * - main-loop: tsvmm's EventFdPoller on the main thread (a libuv poll handle per eventfd, libuv
 *   calling a koffi callback, Node-API entering JavaScript), how every device event arrives now;
 * - threadpool: EventFdPoller's fallback (epoll_wait on a libuv threadpool thread, then the main
 *   thread through uv_async_send);
 * - held: EventFdPoller's held wait (TSVMM_POLLER=held): the main thread blocks in the poller's own
 *   epoll_wait, the main loop's fd in the same set, and goes back to the loop only when it has work;
 * - epoll-thread: a worker thread of its own blocked in a synchronous epoll_wait through koffi:
 *   the kernel returns straight into the JavaScript that called it, as a QEMU iothread or a
 *   Firecracker event loop returns into its handler;
 * - epoll-main: the same synchronous loop on the main thread (Node's event loop held meanwhile):
 *   whether a difference between the first and the third is the thread or the way in.
 *
 *   node dist/bench/profile/wake-paths.js [ROUND_TRIPS] [--gap-ms MS] [PATH...]
 *
 * --gap-ms pauses between the measured round trips, as ping's echoes are apart (the waiting side's
 * code then runs cold, as a ping's does).
 *
 * Run it where the benchmarks run (inside the nested host: `node dist/src/host/nested-cli.js --
 * node dist/bench/profile/wake-paths.js`): there a round trip takes hundreds of µs and the paths
 * differ by tens to a hundred, on the development machine by a few. A profiling aid
 * (docs/benchmarks.md), not a comparison with peers.
 */
import { fileURLToPath } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import koffi from 'koffi';
import { EventFd } from '../../src/kvm/eventfd.js';
import { EFD_CLOEXEC, EPOLL_CTL_ADD, EPOLL_EVENT_DATA_OFFSET, EPOLL_EVENT_SIZE, close, epollCreate, epollCtl, eventfd, nativeCells, readAt, writeAt } from '../../src/kvm/libc.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';

export const WAKE_PATHS = ['main-loop', 'threadpool', 'held', 'epoll-thread', 'epoll-main'] as const;
export type WakePath = (typeof WAKE_PATHS)[number];

interface VcpuData {
  readonly role: 'vcpu';
  /** The eventfd the vCPU rings (non-blocking). */
  readonly ring: number;
  /** The eventfd it blocks on (blocking). */
  readonly answer: number;
  readonly warmup: number;
  readonly roundTrips: number;
  /** Rung after the last round trip (-1: none): ends an epoll loop on the main thread. */
  readonly done: number;
  /** Pause between measured round trips, ms (0: back to back). */
  readonly gapMs: number;
}

interface EpollThreadData {
  readonly role: 'epoll-thread';
  readonly ring: number;
  readonly answer: number;
  /** Rung to make the thread leave. */
  readonly stop: number;
}

const COUNTER_BYTES = 8;
/** Blocking wait without a timeout (epoll_wait(2)). */
const FOREVER = -1;

/** Round trips from the vCPU side: µs per round trip, measured after `warmup` unmeasured ones. */
function runVcpu(data: VcpuData): void {
  const cells = nativeCells(16);
  cells.view.setBigUint64(0, 1n, true);
  const trip = (): void => {
    writeAt(data.ring, cells.address, COUNTER_BYTES);
    // A blocking eventfd: read returns once the waiting side rang it, and resets it.
    readAt(data.answer, cells.address + COUNTER_BYTES, COUNTER_BYTES);
  };
  // An epoll loop on the main thread ends only when `done` rings: ring it whatever happens here.
  try {
    measureTrips(data, trip);
  } finally {
    if (data.done >= 0) writeAt(data.done, cells.address, COUNTER_BYTES);
  }
}

/** The warm-up and measured round trips; posts µs per round trip to the parent. */
function measureTrips(data: VcpuData, trip: () => void): void {
  for (let i = 0; i < data.warmup; i++) trip();
  let elapsed = 0n;
  if (data.gapMs > 0) {
    // Like ping's echoes: each round trip after a pause, so it finds the waiting side's code and
    // data as cold as the rest of the machine left them. Only the round trips are timed.
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < data.roundTrips; i++) {
      Atomics.wait(sleeper, 0, 0, data.gapMs);
      const t = process.hrtime.bigint();
      trip();
      elapsed += process.hrtime.bigint() - t;
    }
  } else {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < data.roundTrips; i++) trip();
    elapsed = process.hrtime.bigint() - t0;
  }
  parentPort?.postMessage(Number(elapsed) / 1000 / data.roundTrips);
}

/** The waiting side in a synchronous epoll_wait loop, until the vCPU rings or `stop` is rung (on any thread). */
function runEpollLoop(data: EpollThreadData): void {
  const wait = koffi.load('libc.so.6').func('int epoll_wait(int epfd, uintptr_t events, int maxevents, int timeout)');
  const cells = nativeCells(16 + 4 * EPOLL_EVENT_SIZE);
  cells.view.setBigUint64(0, 1n, true);
  const epfd = epollCreate();
  epollCtl(epfd, EPOLL_CTL_ADD, data.ring, 1);
  epollCtl(epfd, EPOLL_CTL_ADD, data.stop, 0);
  const events = cells.address + 16;
  for (;;) {
    const n = wait(epfd, events, 4, FOREVER) as number;
    let ringing = false;
    for (let i = 0; i < n; i++) {
      if (cells.view.getUint32(16 + i * EPOLL_EVENT_SIZE + EPOLL_EVENT_DATA_OFFSET, true) === 0) {
        close(epfd);
        return;
      }
      ringing = true;
    }
    if (ringing && readAt(data.ring, cells.address + COUNTER_BYTES, COUNTER_BYTES) === COUNTER_BYTES) writeAt(data.answer, cells.address, COUNTER_BYTES);
  }
}

/** µs per round trip through `path` (see the file comment). */
export async function measureWakePath(path: WakePath, roundTrips: number, warmup = Math.min(500, roundTrips), gapMs = 0): Promise<number> {
  const ring = new EventFd();
  const answer = eventfd(0, EFD_CLOEXEC);
  const stop = new EventFd();
  const bell = nativeCells(8);
  bell.view.setBigUint64(0, 1n, true);
  let poller: EventFdPoller | undefined;
  let waiter: Worker | undefined;
  try {
    if (path === 'epoll-thread') {
      const data: EpollThreadData = { role: 'epoll-thread', ring: ring.fd, answer, stop: stop.fd };
      waiter = new Worker(new URL(import.meta.url), { workerData: data });
    } else if (path !== 'epoll-main') {
      poller = new EventFdPoller(() => {}, path);
      poller.add(ring, () => writeAt(answer, bell.address, COUNTER_BYTES), { holdSafe: true });
      poller.start();
      if (poller.waitsOn !== path) throw new Error(`this process cannot wait on the ${path}`);
    }
    const data: VcpuData = { role: 'vcpu', ring: ring.fd, answer, warmup, roundTrips, done: path === 'epoll-main' ? stop.fd : -1, gapMs };
    const vcpu = new Worker(new URL(import.meta.url), { workerData: data });
    const measured = new Promise<number>((resolve, reject) => {
      vcpu.once('message', (us: number) => resolve(us));
      vcpu.once('error', reject);
    });
    if (path === 'epoll-main') {
      // Blocks this thread until the vCPU rang `stop` after its last round trip; its message waits meanwhile.
      await new Promise((resolve) => vcpu.once('online', resolve));
      runEpollLoop({ role: 'epoll-thread', ring: ring.fd, answer, stop: stop.fd });
    }
    return await measured;
  } finally {
    if (waiter !== undefined) {
      const left = new Promise((resolve) => waiter!.once('exit', resolve));
      stop.signal();
      await left;
    }
    await poller?.close();
    ring.close();
    stop.close();
    close(answer);
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const gapAt = args.indexOf('--gap-ms');
  const gapMs = gapAt >= 0 ? Number(args[gapAt + 1]) : 0;
  if (!(gapMs >= 0)) throw new Error(`--gap-ms takes a number of milliseconds, got '${args[gapAt + 1]}'`);
  if (gapAt >= 0) args.splice(gapAt, 2);
  const count = args.find((a) => /^\d+$/.test(a));
  const roundTrips = Number(count ?? '3000');
  const paths = args.filter((a) => a !== count);
  for (const p of paths) if (!(WAKE_PATHS as readonly string[]).includes(p)) throw new Error(`unknown path '${p}' (${WAKE_PATHS.join(', ')})`);
  const chosen = paths.length > 0 ? (paths as WakePath[]) : WAKE_PATHS;
  // One unreported round of every path first: in the nested host whichever path a process measured
  // first came out up to twice as slow as the same path measured later (JIT and emulator warm-up
  // of the code all paths share), which the per-path warm-up round trips did not absorb.
  for (const path of chosen) await measureWakePath(path, Math.min(roundTrips, 1000));
  for (const path of chosen) {
    const us = await measureWakePath(path, roundTrips, Math.min(500, roundTrips), gapMs);
    console.log(`${path}: ${us.toFixed(1)} µs per round trip (${roundTrips}${gapMs > 0 ? `, ${gapMs} ms apart` : ''})`);
  }
}

if (!isMainThread) {
  const data = workerData as VcpuData | EpollThreadData;
  if (data.role === 'vcpu') runVcpu(data);
  else runEpollLoop(data);
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(`wake-paths: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
