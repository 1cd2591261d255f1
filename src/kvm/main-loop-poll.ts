/**
 * Watch a file descriptor from Node's own event loop: a libuv poll handle (uv_poll_t) on the
 * main thread's loop, created through the libuv functions the node executable exports for native
 * addons, with a koffi callback that libuv calls on the main thread when the fd is readable.
 *
 * Why: Node has no public way to poll an arbitrary fd (net.Socket refuses eventfds and epoll fds,
 * fs reads block a threadpool thread). Without this, tsvmm waits for device events with
 * epoll_wait on a threadpool thread, so every event costs two thread wake-ups (the pool thread,
 * then the main thread through uv_async_send) and a new asynchronous call to wait again. A poll
 * handle puts the VMM's epoll fd into the loop's own epoll set: the kernel wakes the main thread
 * directly, as QEMU's main loop is woken by its ioeventfds. Measured on the development machine
 * (an eventfd written by another thread, the main thread acknowledging, 5000 round trips): 49–51 µs
 * per round trip against 63–67 µs through the threadpool.
 *
 * Only on the main thread: uv_default_loop() is the main thread's loop, and a worker thread's loop
 * cannot be reached from JavaScript. Elsewhere, or when the node executable does not export libuv
 * (a build that links it statically and hides its symbols), watchFdOnMainLoop returns undefined
 * and the caller keeps the threadpool wait. TSVMM_POLLER=threadpool forces that too (benchmarks
 * compare the two with it).
 */
import { isMainThread } from 'node:worker_threads';
import koffi from 'koffi';

/** uv_handle_type's UV_POLL (uv.h, UV_HANDLE_TYPE_MAP order). */
const UV_POLL = 8;
/** uv_poll_event's bits (uv.h): what a watch asks for, and what its callback reports. */
export const UV_READABLE = 1;
export const UV_WRITABLE = 2;
/** The peer hung up (EPOLLRDHUP); reported only when asked for. */
export const UV_DISCONNECT = 4;

interface LibuvBinding {
  loop: unknown;
  pollSize: number;
  malloc: (size: number) => unknown;
  free: (ptr: unknown) => void;
  pollInit: (loop: unknown, handle: unknown, fd: number) => number;
  pollStart: (handle: unknown, events: number, cb: unknown) => number;
  pollStop: (handle: unknown) => number;
  close: (handle: unknown, cb: unknown) => void;
  pollCallbackType: koffi.IKoffiCType;
  closeCallbackType: koffi.IKoffiCType;
  backendFd: (loop: unknown) => number;
  backendTimeout: (loop: unknown) => number;
}

let binding: LibuvBinding | null | undefined;

/** The libuv functions, or null when this process cannot use them (see the file comment). */
function libuv(): LibuvBinding | null {
  if (binding !== undefined) return binding;
  binding = null;
  if (!isMainThread || process.env['TSVMM_POLLER'] === 'threadpool') return binding;
  try {
    // The running executable and the libraries it loaded (dlopen(NULL)): libuv is node's own.
    const self = koffi.load(null as unknown as string);
    const libc = koffi.load('libc.so.6');
    // The handle as an integer: unused, and a pointer would cost a new JavaScript object per call.
    const pollCallback = koffi.proto('void tsvmm_uv_poll_cb(uintptr_t handle, int status, int events)');
    const closeCallback = koffi.proto('void tsvmm_uv_close_cb(void *handle)');
    const defaultLoop = self.func('void *uv_default_loop(void)');
    const handleSize = self.func('size_t uv_handle_size(int type)');
    const found: LibuvBinding = {
      loop: defaultLoop(),
      pollSize: Number(handleSize(UV_POLL)),
      malloc: libc.func('void *malloc(size_t size)'),
      free: libc.func('void free(void *ptr)'),
      pollInit: self.func('int uv_poll_init(void *loop, void *handle, int fd)'),
      pollStart: self.func('int uv_poll_start(void *handle, int events, tsvmm_uv_poll_cb *cb)'),
      pollStop: self.func('int uv_poll_stop(void *handle)'),
      close: self.func('void uv_close(void *handle, tsvmm_uv_close_cb *cb)'),
      backendFd: self.func('int uv_backend_fd(void *loop)'),
      backendTimeout: self.func('int uv_backend_timeout(void *loop)'),
      pollCallbackType: koffi.pointer(pollCallback),
      closeCallbackType: koffi.pointer(closeCallback),
    };
    if (found.loop === null || !(found.pollSize > 0)) return binding;
    binding = found;
  } catch {
    // No exported libuv here: the caller falls back to the threadpool wait.
  }
  return binding;
}

/** A file descriptor watched for readiness by the main thread's event loop. */
export interface MainLoopFdWatch {
  /**
   * Call onReady while the fd is ready for any of `events` (UV_READABLE by default, or a mask of
   * UV_READABLE, UV_WRITABLE and UV_DISCONNECT), level-triggered, from the next loop iteration on.
   * Called again with other events it changes the interest; with the same ones it does nothing.
   */
  start(events?: number): void;
  /** Stop calling onReady until start(). Idempotent. */
  stop(): void;
  /** Stop for good and release the handle; resolves once libuv has let go of it. The fd stays open. */
  close(): Promise<void>;
}

/** Whether this process can watch fds on the main thread's loop (watchFdOnMainLoop gives a watch). */
export function canWatchOnMainLoop(): boolean {
  return libuv() !== null;
}

/**
 * The main loop's own wait, for a caller that waits in its place (EventFdPoller's held wait): the
 * epoll fd libuv blocks on (readable when the loop has I/O, an async wake-up or a signal to
 * handle), and how long the loop would block now (uv_backend_timeout: ms until the next timer as
 * of the loop's last time update, 0 when it has work pending such as immediates, -1 for no limit).
 */
export interface MainLoopBackend {
  readonly fd: number;
  timeout(): number;
}

/** The main loop's backend, or undefined where canWatchOnMainLoop() is false. */
export function mainLoopBackend(): MainLoopBackend | undefined {
  const uv = libuv();
  if (uv === null) return undefined;
  const loop = uv.loop;
  const timeout = uv.backendTimeout;
  return { fd: uv.backendFd(loop), timeout: () => timeout(loop) };
}

/**
 * Watch `fd` on the main thread's loop: `onReady(status, events)` runs on the main thread with
 * status 0 and the ready uv_poll_event bits, or a negative libuv error (the fd went bad; libuv has
 * stopped the watch then). `onReady` must not throw (its exceptions are reported through
 * `onError` and the watch stopped). Undefined when this process cannot do it (or no koffi
 * callback is left); wait another way then. A started watch keeps the process alive.
 */
export function watchFdOnMainLoop(fd: number, onReady: (status: number, events: number) => void, onError: (error: Error) => void): MainLoopFdWatch | undefined {
  const uv = libuv();
  if (uv === null) return undefined;
  // The callback first: koffi has a fixed number of them, and running out must leave nothing behind.
  let callback: koffi.IKoffiRegisteredCallback;
  try {
    callback = koffi.register((_handle: unknown, status: number, events: number) => {
      try {
        if (status < 0) watch.stop();
        onReady(status, events);
      } catch (e) {
        // libuv called us outside any JavaScript frame: an exception must not escape into it.
        watch.stop();
        onError(e instanceof Error ? e : new Error(String(e)));
      }
    }, uv.pollCallbackType);
  } catch {
    return undefined;
  }
  const handle = uv.malloc(uv.pollSize);
  if (handle === null || uv.pollInit(uv.loop, handle, fd) !== 0) {
    if (handle !== null) uv.free(handle);
    koffi.unregister(callback);
    return undefined;
  }
  /** The events being watched; 0 when stopped. */
  let watching = 0;
  let closed: Promise<void> | undefined;
  const watch: MainLoopFdWatch = {
    start(events = UV_READABLE) {
      if (events === watching || closed !== undefined) return;
      if (events === 0) return watch.stop();
      // On an active handle uv_poll_start only changes the interest (libuv docs, uv_poll_start).
      const r = uv.pollStart(handle, events, callback);
      if (r !== 0) throw new Error(`uv_poll_start on fd ${fd} failed (libuv error ${r})`);
      watching = events;
    },
    stop() {
      if (watching === 0) return;
      uv.pollStop(handle);
      watching = 0;
    },
    close() {
      if (closed !== undefined) return closed;
      watch.stop();
      closed = new Promise<void>((resolve) => {
        const onClosed = koffi.register(() => {
          // The handle's memory and both callbacks are free to go only once libuv is done with them.
          setImmediate(() => {
            koffi.unregister(onClosed);
            koffi.unregister(callback);
            uv.free(handle);
            resolve();
          });
        }, uv.closeCallbackType);
        uv.close(handle, onClosed);
      });
      return closed;
    },
  };
  return watch;
}
