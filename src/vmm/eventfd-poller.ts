/**
 * Wakes the main thread when an eventfd is signalled (an ioeventfd KVM rang for a guest's queue
 * notification) or a watched fd is ready, without spinning and without blocking the event loop.
 *
 * Node has no epoll binding, and none of its own handles accepts an eventfd: `new net.Socket({fd})`
 * refuses it ("Unsupported fd type: UNKNOWN", libuv's uv_guess_handle sees an anonymous inode),
 * and fs.read/createReadStream go through the libuv threadpool, where a blocking read ties up one
 * of its 4 threads (UV_THREADPOOL_SIZE) per eventfd: a few multi-queue devices would starve file
 * I/O, or deadlock it. So tsvmm keeps one epoll instance holding every eventfd and fd, and waits
 * on it in one of three ways:
 *
 * - main loop (TSVMM_POLLER=main-loop; the default before held): Node's own event loop watches each eventfd
 *   itself (a libuv poll handle per eventfd, src/kvm/main-loop-poll.ts), so a queue notification
 *   reaches its handler with one native call into JavaScript and one read of the counter; the
 *   other fds stay in the epoll instance, whose fd the loop watches the same way (a zero-timeout
 *   epoll_wait then takes their events). The kernel wakes the main thread directly: one wake-up
 *   per event, as in QEMU's main loop. (With the eventfds in the epoll set too, every doorbell
 *   also cost the zero-timeout epoll_wait, one more native call: the main thread's instructions
 *   per eventfd round trip went from 12,700 to 8,900 without it, counted with callgrind.)
 * - threadpool (the fallback, e.g. a VM run from a worker thread): one epoll_wait at a time on a
 *   libuv threadpool thread (koffi's asynchronous call): two wake-ups per event (that thread, then
 *   the main thread) and a new asynchronous call to wait again.
 * - held (the default; main thread only, else as main loop): the main thread
 *   blocks in epoll_wait on the epoll instance itself, which also holds libuv's own backend fd and
 *   a deadline timerfd, and runs the handlers of holdSafe watches as their events come, going back
 *   to Node's loop only when the loop has something to do (see hold()). A wake-up then returns
 *   from a system call into the JavaScript that made it instead of coming through libuv, a koffi
 *   callback and Node-API (docs/architecture.md, "Where the main thread waits": in the nested
 *   host it brought the VMM's share of a ping's round trip from 300 µs behind QEMU's (tap to tap
 *   3328 against 3019 µs) to within the noise between boots; its transmit half still trails by up
 *   to 100 µs).
 *
 * Measured on the development machine (an eventfd written by another thread, the main thread
 * acknowledging through Atomics, 5000 round trips): the main loop 49–51 µs per round trip, the
 * threadpool 63–67 µs (78–170 µs on a busier day, when fs.read on a blocking eventfd took
 * 81–109 µs and a worker thread in epoll_wait + Atomics.waitAsync 105–125 µs).
 * What ioeventfd buys besides is that the kicking vCPU never stops, which matters for devices
 * with many requests in flight (block, net).
 *
 * Events are read into one reused buffer and dispatched to handlers registered up front, so nothing else is allocated per
 * notification. A started poller keeps the event loop (and so the process) alive: close() it.
 *
 * Besides eventfds the poller watches other file descriptors for readiness (watchFd): a
 * virtio-net tap, readable when a frame waits for the guest and writable again after a write met
 * EAGAIN. On the main loop such an fd gets a poll handle of its own too (a received frame then
 * costs no epoll_wait of ours); otherwise it sits in the epoll instance. Either way the watch is
 * level-triggered like the rest, and its interest can be switched off and on cheaply (one call,
 * no allocation): a device without guest buffers stops watching readability, so the frames wait
 * in the kernel's queue instead of waking us in a loop, and watches again when the guest adds
 * buffers. Switched off, the fd is out of the epoll set altogether (uv_poll_stop, or
 * EPOLL_CTL_DEL), since epoll reports EPOLLERR and EPOLLHUP even for an empty interest set and a
 * hung-up socket would otherwise wake the poller forever.
 */
import { EventFd } from '../kvm/eventfd.js';
import { type MainLoopBackend, type MainLoopFdWatch, UV_DISCONNECT, UV_READABLE, UV_WRITABLE, canWatchOnMainLoop, mainLoopBackend, watchFdOnMainLoop } from '../kvm/main-loop-poll.js';
import {
  EPOLLERR,
  EPOLLHUP,
  EPOLLET,
  EPOLLIN,
  EPOLLOUT,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_EVENT_DATA_OFFSET,
  EPOLL_EVENT_SIZE,
  SystemCallError,
  close,
  epollCreate,
  epollCtl,
  epollWaitAsync,
  epollWaitBlocking,
  epollWaitNow,
  OneShotTimerFd,
} from '../kvm/libc.js';
import { environmentChoice } from '../util/env-choice.js';
import { type HeldBatchScheduler, heldBatchScheduler, setHeldBatchScheduler } from '../devices/end-of-batch.js';

/** Events taken per epoll_wait; more stay ready for the next call. */
const MAX_EVENTS_PER_WAKE = 32;
/** Consecutive failed epoll_waits (each is an EINTR normally) before the poller gives up rather than spin. */
const MAX_CONSECUTIVE_FAILURES = 100;
/** Token of the poller's own stop eventfd. */
const STOP_TOKEN = 0;
/** Token of the main loop's backend fd in the epoll set, in the held wait (no watch has it: tokens are small indices). */
const LOOP_TOKEN = 0xffffffff;
/** Token of the held wait's deadline timerfd. */
const DEADLINE_TOKEN = 0xfffffffe;
/**
 * How an eventfd sits in the epoll set: edge-triggered, so epoll reports each signal (every
 * eventfd_signal or write wakes the fd's wait queue, even with the counter already non-zero) and
 * the counter is never read: one system call less per queue notification, which in the nested host
 * is a good part of tsvmm's transmit half of a ping (issue #6). The counter only grows; it would take
 * 2^64 notifications to saturate it, and a saturated eventfd still wakes its waiters.
 */
const EVENTFD_EVENTS = EPOLLIN | EPOLLET;
/** epoll_wait without a timeout. */
const FOREVER = -1;
/**
 * Longest the held wait stays away from the main loop (ms). Handlers not marked holdSafe end the
 * hold, so what they queue runs at once; this bounds the wait of anything a holdSafe handler
 * queued against the rules, at the price of one loop turn per second when idle.
 */
const HOLD_MAX_MS = 1000;

/** How the poller waits for events (see the constructor). */
export type PollerWait = 'main-loop' | 'threadpool' | 'held';

/** Per watch: whether its handler may run inside the held wait (see EventFdPoller.add). */
export interface WatchOptions {
  /**
   * The handler queues no promise continuation and no process.nextTick callback (timers,
   * setImmediate and I/O callbacks are fine): the held wait may run it and go on waiting. Other
   * handlers end the hold, so what they queued runs before the next wait.
   */
  readonly holdSafe?: boolean;
}

/**
 * The default wait: held, since it shortened tsvmm's ping round trip to about QEMU's in the nested
 * host (bench/results/net-2026-11-29-held.md against net-2026-11-29.md: the VMM's receive and
 * transmit halves 758 and 849 µs against 885 and 1091 with main-loop; later runs in
 * net-2026-11-29-default-held*.md). TSVMM_POLLER=main-loop or
 * threadpool chooses another; any other value is an EnvironmentSettingError.
 */
export function defaultWait(env: NodeJS.ProcessEnv = process.env): PollerWait {
  return environmentChoice<PollerWait>('TSVMM_POLLER', ['held', 'main-loop', 'threadpool'], 'held', env);
}

interface EventFdWatch {
  readonly kind: 'eventfd';
  readonly eventFd: EventFd;
  readonly onSignal: () => void;
  /** The main loop's own watch of this eventfd (main-loop mode); undefined when it is in the epoll set. */
  readonly loopWatch: MainLoopFdWatch | undefined;
  readonly holdSafe: boolean;
}

/** Called on the main thread with the ready events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP bits). */
export type FdReadyHandler = (events: number) => void;

/** A file descriptor watched for readiness (see EventFdPoller.watchFd). */
export interface FdWatch {
  readonly fd: number;
  /** The interest now: a mask of EPOLLIN and EPOLLOUT; 0 when not watching. */
  readonly events: number;
  /**
   * Watch for `events` (EPOLLIN, EPOLLOUT or both) from now on; 0 stops watching until the next
   * call. One epoll_ctl when the interest changes, nothing when it does not.
   */
  setEvents(events: number): void;
  /** Stop watching for good (the caller still owns and closes the fd). */
  remove(): void;
}

class FdWatchEntry implements FdWatch {
  readonly kind = 'fd';
  events = 0;
  removed = false;
  /** The main loop's own watch of this fd (main-loop mode); undefined when it goes through the epoll set. */
  loopWatch: MainLoopFdWatch | undefined;

  constructor(
    private readonly poller: EventFdPoller,
    readonly fd: number,
    readonly token: number,
    readonly onReady: FdReadyHandler,
    readonly holdSafe: boolean,
  ) {}

  setEvents(events: number): void {
    if (this.removed) return;
    const next = events >>> 0;
    if (next === this.events) return;
    // Record the interest only once epoll_ctl took it: a failed call leaves the watch as it was.
    this.poller.updateInterest(this, this.events, next);
    this.events = next;
  }

  remove(): void {
    if (this.removed) return;
    this.setEvents(0);
    this.removed = true;
    this.poller.forget(this.token);
    // uv_close takes the fd out of the loop's epoll set at once; only freeing the handle waits.
    if (this.loopWatch !== undefined) void this.loopWatch.close();
  }
}

type Watch = EventFdWatch | FdWatchEntry;

/**
 * A watch's epoll interest (EPOLLIN, EPOLLOUT) as uv_poll events, always with UV_DISCONNECT: epoll
 * reports a hang-up whatever the interest, and a handler must hear of it the same way on either path.
 */
function loopEvents(events: number): number {
  return ((events & EPOLLIN) !== 0 ? UV_READABLE : 0) | ((events & EPOLLOUT) !== 0 ? UV_WRITABLE : 0) | UV_DISCONNECT;
}

export class EventFdPoller {
  /** Wake-ups that found device work: an epoll_wait that reported a watched fd, or a doorbell the loop reported (for metrics and tests). */
  wakeups = 0;
  private readonly epfd: number;
  private readonly events = Buffer.alloc(MAX_EVENTS_PER_WAKE * EPOLL_EVENT_SIZE);
  private readonly stopFd = new EventFd();
  /** Handlers by token (token 0 is the stop eventfd); a removed watch leaves a hole. */
  private readonly watches: (Watch | undefined)[] = [undefined];
  private running = false;
  private paused = false;
  /** An epoll_wait returned while paused: the next wait starts at resume() (see parkedEvents). */
  private parked = false;
  /** Events the threadpool wait returned while paused (see rearmParked). */
  private parkedEvents = 0;
  private closing = false;
  private closed = false;
  private failures = 0;
  private stopped: Promise<void> | undefined;
  private resolveStopped: (() => void) | undefined;
  /** The main loop's watch of the epoll fd, when this process can have one (see start()). */
  private loopWatch: MainLoopFdWatch | undefined;
  /** Eventfds and watched fds get a main-loop watch of their own (decided once, in the constructor). */
  private readonly eventFdsOnLoop: boolean;
  /** The held wait's view of the main loop (held mode where this process can have it). */
  private readonly loopBackend: MainLoopBackend | undefined;
  /** Held mode: readable whenever the poller is out of its hold, so the main loop calls it back at once. */
  private reenter: EventFd | undefined;
  /** Inside hold(): the main thread waits in this poller's epoll set. */
  private holding = false;
  /** Set by handle(): what it dispatched wants the main loop to run before the next wait. */
  private leaveHold = false;
  /** Held mode: expires when the main loop's next timer is due (armed on each hold's entry). */
  private holdDeadline: OneShotTimerFd | undefined;
  /** Work deferred to the end of the current batch (deferAfterBatch), and the spare list runAfterBatch swaps in. */
  private afterBatch: (() => void)[] = [];
  private afterBatchSpare: (() => void)[] = [];
  /** What end-of-batch.ts calls while this poller holds the main thread. */
  private readonly batchScheduler: HeldBatchScheduler = {
    afterBatch: (work) => {
      if (!this.holding) return false;
      this.afterBatch.push(work);
      return true;
    },
    leaveAfterBatch: () => {
      if (this.holding) this.leaveHold = true;
    },
  };
  /** Times the held wait was entered from the main loop (for tests and profiling). */
  holds = 0;
  /** A poller of this process has the held wait (until it is closed). */
  private static heldClaimed = false;

  /**
   * `wait` chooses how the poller waits: 'main-loop' has Node's own event loop watch
   * the epoll fd where that is possible (main-loop-poll.ts: the main thread, with libuv's symbols)
   * and falls back to 'threadpool' elsewhere; 'threadpool' always waits in epoll_wait on a libuv
   * threadpool thread; 'held' (the default) has the main thread wait in this poller's epoll set
   * itself, with the main loop's fd in it (see hold()), falls back like 'main-loop', and waits on
   * the main loop when another poller of this process holds already (one hold at a time). The
   * default comes from TSVMM_POLLER. Tests run the poller's behaviour against all three.
   */
  constructor(
    private readonly onError: (error: Error) => void = () => {},
    private readonly wait: PollerWait = defaultWait(),
  ) {
    this.epfd = epollCreate();
    epollCtl(this.epfd, EPOLL_CTL_ADD, this.stopFd.fd, STOP_TOKEN);
    // One held wait per process: while one poller holds the main thread, another's fds would go
    // unwatched. A second poller asking for it waits on the main loop instead.
    const held = wait === 'held' && !EventFdPoller.heldClaimed ? mainLoopBackend() : undefined;
    if (held !== undefined) EventFdPoller.heldClaimed = true;
    this.loopBackend = held;
    this.eventFdsOnLoop = (wait === 'main-loop' || (wait === 'held' && held === undefined)) && canWatchOnMainLoop();
  }

  /** How the poller waits for events now: on the main loop, held on the main thread, or on a threadpool thread (once started). */
  get waitsOn(): PollerWait {
    if (this.loopWatch === undefined) return 'threadpool';
    return this.reenter !== undefined ? 'held' : 'main-loop';
  }

  /** Call `onSignal` on the main thread each time `eventFd` is signalled (coalesced: once per batch of signals). */
  add(eventFd: EventFd, onSignal: () => void, options: WatchOptions = {}): void {
    if (this.closing) throw new Error('the eventfd poller is closed');
    const token = this.watches.length;
    const holdSafe = options.holdSafe === true;
    if (this.eventFdsOnLoop) {
      const watch: EventFdWatch = {
        kind: 'eventfd',
        eventFd,
        onSignal,
        loopWatch: watchFdOnMainLoop(eventFd.fd, (status) => this.onEventFdReadable(watch, status), (e) => this.onError(e)),
        holdSafe,
      };
      if (watch.loopWatch !== undefined) {
        this.watches.push(watch);
        if (this.running && !this.paused) watch.loopWatch.start();
        return;
      }
    }
    this.watches.push({ kind: 'eventfd', eventFd, onSignal, loopWatch: undefined, holdSafe });
    epollCtl(this.epfd, EPOLL_CTL_ADD, eventFd.fd, token, EVENTFD_EVENTS);
  }

  /** Stop watching `eventFd` (the caller still owns and closes it; it may do so at once). */
  remove(eventFd: EventFd): void {
    const token = this.watches.findIndex((w) => w?.kind === 'eventfd' && w.eventFd === eventFd);
    if (token <= STOP_TOKEN) return;
    const watch = this.watches[token] as EventFdWatch;
    this.watches[token] = undefined;
    // uv_close takes the fd out of the loop's epoll set at once; only freeing the handle waits.
    if (watch.loopWatch !== undefined) void watch.loopWatch.close();
    else if (!this.closed) epollCtl(this.epfd, EPOLL_CTL_DEL, eventFd.fd, token);
  }

  /**
   * Watch `fd` (a non-blocking socket, pipe or tap; not an eventfd added with add()) and call
   * `onReady` with the ready events while any of `events` holds (level-triggered: the handler
   * must read until EAGAIN, or switch the interest off, or it is called again at once). With
   * `events` 0 (the default) nothing is watched until setEvents(). An fd is watched at most once.
   */
  watchFd(fd: number, onReady: FdReadyHandler, events = 0, options: WatchOptions = {}): FdWatch {
    if (this.closing) throw new Error('the eventfd poller is closed');
    if (this.watches.some((w) => w?.kind === 'fd' && w.fd === fd)) throw new Error(`fd ${fd} is already watched`);
    const watch = new FdWatchEntry(this, fd, this.watches.length, onReady, options.holdSafe === true);
    // On the main loop the fd gets a poll handle of its own, as the eventfds do: a ready tap then
    // reaches its handler directly, without the zero-timeout epoll_wait on the shared epoll fd.
    if (this.eventFdsOnLoop) watch.loopWatch = watchFdOnMainLoop(fd, (status, ready) => this.onFdReady(watch, status, ready), (e) => this.onError(e));
    this.watches.push(watch);
    watch.setEvents(events);
    return watch;
  }

  /** @internal An FdWatch's interest changed from `previous` to `next` (not both 0). */
  updateInterest(watch: FdWatchEntry, previous: number, next: number): void {
    if (this.closed) return;
    if (watch.loopWatch !== undefined) {
      // Stopped, the fd is out of the loop's epoll set; started only while the poller runs.
      if (next === 0) watch.loopWatch.stop();
      else if (this.running && !this.paused && !this.closing) watch.loopWatch.start(loopEvents(next));
      return;
    }
    if (next === 0) {
      try {
        epollCtl(this.epfd, EPOLL_CTL_DEL, watch.fd, watch.token);
      } catch (e) {
        // Already gone from the set: the fd was closed first (epoll drops closed files itself).
        if (!(e instanceof SystemCallError && (e.code === 'EBADF' || e.code === 'ENOENT'))) throw e;
      }
    } else epollCtl(this.epfd, previous === 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, watch.fd, watch.token, next);
  }

  /** @internal An FdWatch was removed: free its slot. */
  forget(token: number): void {
    if (token > STOP_TOKEN) this.watches[token] = undefined;
  }

  /**
   * Hold every handler until resume() (a paused VM's devices stay quiet: no kick is served, no tap
   * frame read into guest memory). Nothing is lost: eventfd counters and fd readiness are
   * level-triggered, so what arrived meanwhile is reported by the first epoll_wait after resume().
   */
  pause(): void {
    this.paused = true;
    if (this.loopWatch !== undefined && this.running && !this.closing) {
      // The loop would report the (level-triggered) fds again and again: stop watching them.
      this.loopWatch.stop();
      this.forEachLoopWatch((w) => w.stop());
      this.parked = true;
    }
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.parked && !this.closing) {
      this.parked = false;
      if (this.loopWatch !== undefined) {
        this.loopWatch.start();
        this.startLoopWatches();
      } else {
        this.rearmParked();
        this.waitOnThreadpool();
      }
    }
  }

  /** Start waiting. Idempotent. */
  start(): void {
    if (this.running || this.closing) return;
    this.running = true;
    this.stopped = new Promise<void>((resolve) => (this.resolveStopped = resolve));
    if (this.loopBackend !== undefined) this.startHeld(this.loopBackend);
    else if (this.wait !== 'threadpool') {
      this.loopWatch = watchFdOnMainLoop(this.epfd, (status) => this.onLoopReadable(status), (e) => this.onError(e));
    }
    if (this.loopWatch !== undefined) {
      if (this.paused) this.parked = true;
      else {
        this.loopWatch.start();
        this.startLoopWatches();
      }
    } else this.waitOnThreadpool();
  }

  /** Wake the pending epoll_wait, wait for it to return, and close the epoll instance. Watched eventfds stay open. */
  async close(): Promise<void> {
    if (this.closing) return this.stopped;
    this.closing = true;
    const eventFdWatches: Promise<void>[] = [];
    this.forEachLoopWatch((w) => eventFdWatches.push(w.close()));
    await Promise.all(eventFdWatches);
    if (this.loopWatch !== undefined) {
      // Nothing blocks anywhere: release the loop's handle and we are done.
      this.parked = false;
      await this.loopWatch.close();
      this.running = false;
      this.resolveStopped?.();
    } else if (this.parked) {
      // No epoll_wait is pending: nothing to wake.
      this.parked = false;
      this.running = false;
      this.resolveStopped?.();
    } else if (this.running) {
      this.stopFd.signal();
      await this.stopped;
    }
    this.closed = true;
    close(this.epfd);
    this.stopFd.close();
    this.reenter?.close();
    this.holdDeadline?.close();
    if (heldBatchScheduler() === this.batchScheduler) setHeldBatchScheduler(undefined);
    if (this.loopBackend !== undefined) EventFdPoller.heldClaimed = false;
  }

  /** Start every eventfd's and fd's own loop watch, each fd with its interest (none: stays stopped). */
  private startLoopWatches(): void {
    for (const w of this.watches) {
      if (w?.loopWatch === undefined) continue;
      if (w.kind === 'eventfd') w.loopWatch.start();
      else if (w.events !== 0) w.loopWatch.start(loopEvents(w.events));
    }
  }

  private forEachLoopWatch(f: (w: MainLoopFdWatch) => void): void {
    for (const w of this.watches) if (w?.loopWatch !== undefined) f(w.loopWatch);
  }

  /** The main loop saw a watched fd ready (its own loop watch): call its handler with epoll's bits. */
  private onFdReady(watch: FdWatchEntry, status: number, ready: number): void {
    if (this.closing || this.paused || watch.removed || watch.events === 0) return;
    this.wakeups++;
    let events: number;
    if (status < 0) {
      // libuv's report of POLLERR: it stopped the handle, so the watch's interest is none until set again.
      events = EPOLLERR;
      watch.events = 0;
    } else events = (ready & UV_READABLE ? EPOLLIN : 0) | (ready & UV_WRITABLE ? EPOLLOUT : 0) | (ready & UV_DISCONNECT ? EPOLLHUP : 0);
    try {
      watch.onReady(events);
    } catch (e) {
      // A level-triggered fd whose handler keeps throwing would wake us forever: stop watching it.
      watch.setEvents(0);
      this.onError(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** The main loop saw an eventfd with a watch of its own readable: reset it and call its handler. */
  private onEventFdReadable(watch: EventFdWatch, status: number): void {
    if (this.closing || this.paused) return;
    if (status < 0) {
      // The fd went bad (libuv error); the watch has stopped itself (main-loop-poll.ts), so no repeat.
      this.onError(new Error(`watching an eventfd failed (libuv error ${status}); its queue notifications now arrive only through MMIO exits`));
      return;
    }
    this.wakeups++;
    // Reset the counter first: a signal arriving while the handler runs then wakes us again.
    watch.eventFd.reset();
    try {
      watch.onSignal();
    } catch (e) {
      this.onError(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /**
   * Held mode: the main loop watches only `reenter`, an eventfd kept readable while the poller is
   * out of its hold, so each loop turn calls hold() at once; the device fds, the loop's own fd and
   * the hold's deadline timer sit in this poller's epoll set, where hold() waits.
   */
  private startHeld(backend: MainLoopBackend): void {
    const reenter = new EventFd();
    const watch = watchFdOnMainLoop(reenter.fd, () => this.hold(backend), (e) => this.onError(e));
    if (watch === undefined) {
      reenter.close();
      return;
    }
    const deadline = new OneShotTimerFd();
    epollCtl(this.epfd, EPOLL_CTL_ADD, backend.fd, LOOP_TOKEN);
    epollCtl(this.epfd, EPOLL_CTL_ADD, deadline.fd, DEADLINE_TOKEN);
    reenter.signal();
    this.reenter = reenter;
    this.holdDeadline = deadline;
    this.loopWatch = watch;
    setHeldBatchScheduler(this.batchScheduler);
  }

  /**
   * The held wait: block the main thread in epoll_wait on this poller's set, where the device fds
   * and the main loop's backend fd are, and run device handlers as their events come, without going
   * back to the loop in between; go back when the loop has work: its fd is readable (a vCPU exit's
   * wake-up, a socket, a threadpool result, a signal), its next timer is due (a timerfd armed on
   * entry: the loop's clock stands still while we hold, and reading a clock per event costs more in
   * the nested host than the hold saves), a handler not marked holdSafe ran, a device asked for a
   * loop turn (deferToLoopTurn), or the poller was paused or closed. Work a device defers to the end
   * of a batch (deferAfterBatch) runs here after each batch of events.
   *
   * Why: inside the emulated nested host a wake-up that returns from a synchronous epoll_wait into
   * the JavaScript that called it (wake-paths' epoll-main) costs several hundred µs less after an
   * idle pause, as a ping's wake-ups come, than one through libuv, a koffi callback and Node-API.
   * How much of that this wait keeps is not settled (docs/architecture.md).
   */
  private hold(backend: MainLoopBackend): void {
    const reenter = this.reenter!;
    if (this.closing || this.paused || this.holding) return;
    const loopTimeout = backend.timeout();
    if (loopTimeout === 0) return; // the loop has work now: come back on its next turn (reenter stays readable)
    this.holds++;
    this.holdDeadline!.arm(loopTimeout < 0 ? HOLD_MAX_MS : Math.min(loopTimeout, HOLD_MAX_MS));
    // Not readable while we hold: the loop's fd, in our set, would report it and end the hold.
    reenter.reset();
    this.holding = true;
    this.leaveHold = false;
    try {
      while (!this.leaveHold && !this.closing && !this.paused) {
        const n = epollWaitBlocking(this.epfd, this.events, this.afterBatch.length > 0 ? 0 : FOREVER);
        if (n > 0 || n < 0) {
          if (!this.handle(n)) {
            // The poller gave up after repeated failures: stop being called back.
            this.loopWatch?.stop();
            break;
          }
        }
        this.runAfterBatch();
      }
    } finally {
      this.holding = false;
      // Deferred work is never left behind: what is still queued goes to the loop.
      if (this.afterBatch.length > 0) for (const work of this.afterBatch.splice(0)) setImmediate(work);
      if (!this.closed) reenter.signal();
    }
  }

  /** Run the work deferred to the end of this batch, including what that work defers in turn, once round. */
  private runAfterBatch(): void {
    const count = this.afterBatch.length;
    if (count === 0) return;
    // Swap in the spare list: work deferred while running goes there and runs after the next wait.
    const running = this.afterBatch;
    this.afterBatch = this.afterBatchSpare;
    this.afterBatchSpare = running;
    for (let i = 0; i < count; i++) {
      const work = running[i]!;
      running[i] = undefined as unknown as () => void;
      try {
        work();
      } catch (e) {
        this.onError(e instanceof Error ? e : new Error(String(e)));
      }
    }
    running.length = 0;
  }

  /**
   * The eventfds among the events a threadpool wait took while paused: an edge is reported once,
   * so EPOLL_CTL_MOD each, which reports it again (its counter, never read, is still non-zero).
   */
  private rearmParked(): void {
    const n = this.parkedEvents;
    this.parkedEvents = 0;
    for (let i = 0; i < n; i++) {
      const token = this.eventToken(i);
      const watch = this.watches[token];
      if (watch?.kind === 'eventfd' && watch.loopWatch === undefined) epollCtl(this.epfd, EPOLL_CTL_MOD, watch.eventFd.fd, token, EVENTFD_EVENTS);
    }
  }

  /** The token of the i-th event in `events`. Tokens are small indices: the low half of the 64-bit data field is enough, and reading it allocates no BigInt. */
  private eventToken(i: number): number {
    return this.events.readUInt32LE(i * EPOLL_EVENT_SIZE + EPOLL_EVENT_DATA_OFFSET);
  }

  private waitOnThreadpool(): void {
    epollWaitAsync(this.epfd, this.events, -1, (n) => this.onThreadpoolWait(n));
  }

  /** The threadpool's epoll_wait returned `n`: handle the events and wait again. */
  private onThreadpoolWait(n: number): void {
    if (this.closing) {
      this.running = false;
      this.resolveStopped?.();
      return;
    }
    if (this.paused) {
      // Wait again only on resume(). The level-triggered fds will be reported again then; the
      // edge-triggered eventfds this wait took are re-armed by resume() (rearmParked).
      this.parked = true;
      this.parkedEvents = n;
      return;
    }
    if (this.handle(n)) this.waitOnThreadpool();
  }

  /** The main loop saw the epoll fd readable: take what is ready now, without blocking. */
  private onLoopReadable(status: number): void {
    if (this.closing || this.paused) return;
    if (!this.handle(status < 0 ? -1 : epollWaitNow(this.epfd, this.events))) this.loopWatch?.stop();
  }

  /** Dispatch `n` ready events (-1: the wait failed). False when the poller gave up after repeated failures. */
  private handle(n: number): boolean {
    if (n < 0) {
      if (++this.failures >= MAX_CONSECUTIVE_FAILURES) {
        this.running = false;
        this.resolveStopped?.();
        this.onError(new Error(`epoll_wait failed ${this.failures} times in a row; virtio queue notifications now arrive only through MMIO exits`));
        return false;
      }
    } else {
      this.failures = 0;
      const events = this.events;
      // Counted once per wait that reported a device's fd: the held wait's own tokens are the main
      // loop's business, and a loop busy with its own work (V8's incremental marking and sweeping
      // post one task per step, each turn ending a hold at once) must not look like a device spinning.
      let counted = false;
      for (let i = 0; i < n; i++) {
        const token = this.eventToken(i);
        if (token === LOOP_TOKEN || token === DEADLINE_TOKEN) {
          // Held wait: the main loop has work (a vCPU exit's wake-up, a socket, a threadpool
          // result), or its next timer is due. The timerfd needs no read: arming resets it.
          this.leaveHold = true;
          continue;
        }
        if (!counted) {
          counted = true;
          this.wakeups++;
        }
        const watch = this.watches[token];
        if (watch === undefined) {
          // epoll is level-triggered: drain what nobody handles (a stray stop signal) or it fires forever.
          if (token === STOP_TOKEN) this.stopFd.reset();
          continue;
        }
        if (!watch.holdSafe) this.leaveHold = true;
        try {
          if (watch.kind === 'fd') {
            // An earlier handler of this batch may have switched the interest off meanwhile.
            if (watch.events !== 0) watch.onReady(events.readUInt32LE(i * EPOLL_EVENT_SIZE));
            continue;
          }
          // Edge-triggered (EVENTFD_EVENTS): no read of the counter, and a signal arriving while
          // the handler runs still wakes us again.
          watch.onSignal();
        } catch (e) {
          // A level-triggered fd whose handler keeps throwing would wake us forever: stop watching it.
          if (watch.kind === 'fd') watch.setEvents(0);
          this.onError(e instanceof Error ? e : new Error(String(e)));
        }
      }
    }
    return true;
  }
}
