/**
 * The poller that wakes the main thread for ioeventfds and watched fds: signals reach their
 * handler, and a paused poller holds them (a paused VM's devices stay quiet) without losing any.
 * Every behaviour is checked with each way of waiting: held on the main thread in the poller's own
 * epoll_wait (the default), on Node's main loop (TSVMM_POLLER=main-loop), and in epoll_wait on a
 * threadpool thread (the fallback off the main thread).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { stat } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { EventFd } from '../../src/kvm/eventfd.js';
import { deferAfterBatch, deferToLoopTurn } from '../../src/devices/end-of-batch.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await settle(10);
  }
}

test('on the main thread the poller holds the wait by default, or waits on the main loop when asked', async () => {
  const poller = new EventFdPoller();
  const fd = new EventFd();
  poller.add(fd, () => undefined);
  poller.start();
  try {
    assert.equal(poller.waitsOn, 'held', 'node exports libuv here: the default is the held wait');
  } finally {
    await poller.close();
  }
  const onLoop = new EventFdPoller(undefined, 'main-loop');
  onLoop.add(fd, () => undefined);
  onLoop.start();
  try {
    assert.equal(onLoop.waitsOn, 'main-loop', 'node exports libuv here: the poller should not need a threadpool thread');
  } finally {
    await onLoop.close();
  }
  fd.close();
  const pooled = new EventFdPoller(undefined, 'threadpool');
  pooled.start();
  assert.equal(pooled.waitsOn, 'threadpool');
  await pooled.close();
  const held = new EventFdPoller(undefined, 'held');
  held.start();
  assert.equal(held.waitsOn, 'held');
  // One hold per process: a second poller asking for it waits on the main loop, until the first is closed.
  const second = new EventFdPoller(undefined, 'held');
  second.start();
  assert.equal(second.waitsOn, 'main-loop');
  await held.close();
  await second.close();
  const third = new EventFdPoller(undefined, 'held');
  third.start();
  assert.equal(third.waitsOn, 'held');
  await third.close();
});

/**
 * A worker signalling `fd` `total` times, each once the handler counted the one before in `ack`
 * (none may be lost or late), sleeping 1 ms before every `pauseEvery`-th (0: never).
 */
function signalWriter(fd: EventFd, ack: Int32Array, total: number, pauseEvery: number): Worker {
  return new Worker(
    `const { workerData } = require('node:worker_threads');
     const fs = require('node:fs');
     const ack = new Int32Array(workerData.ack);
     const pause = new Int32Array(new SharedArrayBuffer(4));
     const one = Buffer.alloc(8); one.writeBigUInt64LE(1n);
     for (let i = 1; i <= workerData.total; i++) {
       if (workerData.pauseEvery > 0 && i % workerData.pauseEvery === 0) Atomics.wait(pause, 0, 0, 1);
       fs.writeSync(workerData.fd, one);
       // Wait until the count reaches i, not for a wake-up: a notify from the previous signal's
       // handler can land after this wait began (store, then notify), and must not count.
       const deadline = Date.now() + 5000;
       for (let seen = Atomics.load(ack, 0); seen < i; seen = Atomics.load(ack, 0)) {
         if (Date.now() > deadline) throw new Error('signal ' + i + ' not handled');
         Atomics.wait(ack, 0, seen, 100);
       }
     }`,
    { eval: true, workerData: { fd: fd.fd, ack: ack.buffer, total, pauseEvery } },
  );
}

function exitOf(worker: Worker): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', resolve);
  });
}

for (const mode of ['main-loop', 'threadpool', 'held'] as const) {
  test(`${mode}: a signalled eventfd calls its handler on the main thread`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const fd = new EventFd();
    let calls = 0;
    poller.add(fd, () => calls++);
    poller.start();
    fd.signal();
    await until(() => calls === 1);
    await poller.close();
    fd.close();
  });

  test(`${mode}: the main loop's own work (threadpool results, timers) counts as no wake-up and calls no handler`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const fd = new EventFd();
    let calls = 0;
    poller.add(fd, () => calls++);
    poller.start();
    try {
      const holds = poller.holds;
      // Each stat's result reaches the loop through its async fd: in the held wait, every one ends a hold.
      for (let i = 0; i < 100; i++) await stat('.');
      await settle(20);
      assert.equal(calls, 0);
      assert.equal(poller.wakeups, 0, 'wake-ups count device work only');
      if (mode === 'held') assert.ok(poller.holds - holds >= 50, `${poller.holds - holds} holds: the loop's work should have ended holds`);
      fd.signal();
      await until(() => calls === 1);
      assert.equal(poller.wakeups, 1);
    } finally {
      await poller.close();
      fd.close();
    }
  });

  test(`${mode}: paused, the poller holds signals; on resume they arrive, none lost`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const a = new EventFd();
    const b = new EventFd();
    const seen: string[] = [];
    poller.add(a, () => seen.push('a'));
    poller.add(b, () => seen.push('b'));
    poller.start();
    poller.pause();
    a.signal();
    b.signal();
    await settle(300);
    assert.deepEqual(seen, [], 'nothing is handled while paused');
    poller.resume();
    await until(() => seen.length === 2);
    assert.deepEqual([...seen].sort(), ['a', 'b']);
    // And it keeps working after the resume.
    a.signal();
    await until(() => seen.length === 3);
    await poller.close();
    a.close();
    b.close();
  });

  test(`${mode}: a poller paused with a wake-up parked closes without hanging`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const a = new EventFd();
    poller.add(a, () => undefined);
    poller.start();
    poller.pause();
    a.signal();
    await settle(200);
    await poller.close();
    a.close();
  });

  test(`${mode}: many eventfds each reach their own handler; a removed one is no longer watched`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const fds = Array.from({ length: 64 }, () => new EventFd());
    const calls = new Array<number>(fds.length).fill(0);
    fds.forEach((fd, i) => poller.add(fd, () => calls[i]!++));
    poller.start();
    try {
      for (const fd of fds) fd.signal();
      await until(() => calls.every((c) => c === 1));
      poller.remove(fds[5]!);
      fds[5]!.signal();
      fds[6]!.signal();
      await until(() => calls[6] === 2);
      await settle(50);
      assert.equal(calls[5], 1, 'a removed eventfd calls no handler');
      // In the epoll set eventfds are edge-triggered and never read: both signals are still there.
      assert.equal(fds[5]!.consume(), poller.waitsOn === 'main-loop' ? 1n : 2n, 'and its signal stays unread');
      assert.equal(calls.reduce((a, b) => a + b), 65);
    } finally {
      await poller.close();
      for (const fd of fds) fd.close();
    }
  });

  test(`${mode}: signals from another thread, 2000 in a row, each handled`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const fd = new EventFd();
    const ack = new Int32Array(new SharedArrayBuffer(4));
    let handled = 0;
    poller.add(fd, () => {
      handled++;
      Atomics.store(ack, 0, handled);
      Atomics.notify(ack, 0);
    });
    poller.start();
    const writer = signalWriter(fd, ack, 2000, 0);
    try {
      assert.equal(await exitOf(writer), 0);
      assert.equal(handled, 2000);
    } finally {
      // A started poller keeps the process alive: a failed assertion must not hang the file.
      await poller.close();
      fd.close();
    }
  });

  /**
   * Signal eventfd `a`, whose handler runs `onA(b)` (which signals `b` among other things); `b`'s
   * handler is holdSafe. Returns what both recorded in `order`, once it holds `count` entries.
   */
  async function orderAfter(onA: (order: string[], b: EventFd) => void, aHoldSafe: boolean, count: number): Promise<string[]> {
    const poller = new EventFdPoller(undefined, mode);
    const a = new EventFd();
    const b = new EventFd();
    const order: string[] = [];
    poller.add(
      a,
      () => {
        order.push('a');
        onA(order, b);
      },
      { holdSafe: aHoldSafe },
    );
    poller.add(b, () => order.push('b'), { holdSafe: true });
    poller.start();
    try {
      a.signal();
      await until(() => order.length === count);
      return order;
    } finally {
      await poller.close();
      a.close();
      b.close();
    }
  }

  test(`${mode}: what a handler not marked holdSafe queues (a promise continuation) runs before the next event's handler`, async () => {
    const order = await orderAfter(
      (o, b) => {
        void Promise.resolve().then(() => o.push('continuation'));
        b.signal();
      },
      false,
      3,
    );
    assert.deepEqual(order, ['a', 'continuation', 'b']);
  });

  test(`${mode}: work a holdSafe handler defers to the end of the batch runs before the next event's handler`, async () => {
    const order = await orderAfter(
      (o, b) => {
        deferAfterBatch(() => {
          o.push('deferred');
          // Deferred again from deferred work: runs too, without a new event.
          deferAfterBatch(() => o.push('deferred again'));
        });
        b.signal();
      },
      true,
      4,
    );
    assert.deepEqual(order.slice(0, 2), ['a', 'deferred']);
    assert.deepEqual([...order].sort(), ['a', 'b', 'deferred', 'deferred again']);
  });

  test(`${mode}: work deferred to the loop's next turn runs before the next event's handler`, async () => {
    const order = await orderAfter(
      (o, b) => {
        deferToLoopTurn(() => o.push('turn'));
        b.signal();
      },
      true,
      3,
    );
    assert.deepEqual(order, ['a', 'turn', 'b']);
  });

  test(`${mode}: a timer fires while holdSafe events keep coming, not after them`, async () => {
    const poller = new EventFdPoller(undefined, mode);
    const fd = new EventFd();
    const ack = new Int32Array(new SharedArrayBuffer(4));
    const total = 600;
    let handled = 0;
    let handledWhenTimerFired = -1;
    let timer: NodeJS.Timeout | undefined;
    poller.add(
      fd,
      () => {
        handled++;
        Atomics.store(ack, 0, handled);
        Atomics.notify(ack, 0);
      },
      { holdSafe: true },
    );
    poller.start();
    // 600 signals, each answered before the next, a 1 ms pause every 2: well over the timer's 30 ms.
    const writer = signalWriter(fd, ack, total, 2);
    // Set once the worker runs (its start-up would outlast a timer set before), outside any handler.
    writer.once('online', () => (timer = setTimeout(() => (handledWhenTimerFired = handled), 30)));
    try {
      assert.equal(await exitOf(writer), 0);
      assert.equal(handled, total);
      assert.ok(handledWhenTimerFired >= 0 && handledWhenTimerFired < total, `the timer fired after ${handledWhenTimerFired} of ${total} signals`);
      if (mode === 'held') assert.ok(poller.holds < total, `${poller.holds} holds for ${total} holdSafe signals: they should share holds`);
    } finally {
      clearTimeout(timer);
      await poller.close();
      fd.close();
    }
  });
}
