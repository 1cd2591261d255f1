/**
 * The poller that wakes the main thread for ioeventfds and watched fds: signals reach their
 * handler, and a paused poller holds them (a paused VM's devices stay quiet) without losing any.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventFd } from '../../src/kvm/eventfd.js';
import { EventFdPoller } from '../../src/vmm/eventfd-poller.js';

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await settle(10);
  }
}

test('a signalled eventfd calls its handler on the main thread', async () => {
  const poller = new EventFdPoller();
  const fd = new EventFd();
  let calls = 0;
  poller.add(fd, () => calls++);
  poller.start();
  fd.signal();
  await until(() => calls === 1);
  await poller.close();
  fd.close();
});

test('paused, the poller holds signals; on resume they arrive, none lost', async () => {
  const poller = new EventFdPoller();
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

test('a poller paused with a wake-up parked closes without hanging', async () => {
  const poller = new EventFdPoller();
  const a = new EventFd();
  poller.add(a, () => undefined);
  poller.start();
  poller.pause();
  a.signal();
  await settle(200);
  await poller.close();
  a.close();
});
