import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import { RecordingIrqLine } from '../../src/devices/irq.js';
import { Serial16550 } from '../../src/devices/legacy/serial.js';
import { attachSerialToTerminal } from '../../src/devices/legacy/serial-terminal.js';

class FakeStdin extends EventEmitter {
  isTTY: boolean;
  isRaw = false;
  paused = true;
  rawModeCalls: boolean[] = [];
  constructor(tty: boolean) {
    super();
    this.isTTY = tty;
  }
  setRawMode(mode: boolean): this {
    this.rawModeCalls.push(mode);
    this.isRaw = mode;
    return this;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
}

function setup(tty: boolean, inputQueueCapacity = 4096) {
  const serial = new Serial16550({ irq: new RecordingIrqLine(), inputQueueCapacity });
  const stdin = new FakeStdin(tty);
  const written: number[] = [];
  let quits = 0;
  const attachment = attachSerialToTerminal(serial, {
    stdin,
    stdout: { write: (b: Uint8Array) => written.push(...b) },
    onQuit: () => quits++,
  });
  const byte = new Uint8Array(1);
  const drainGuest = (): number[] => {
    const got: number[] = [];
    for (;;) {
      serial.read(5, byte);
      if (!(byte[0]! & 1)) return got;
      serial.read(0, byte);
      got.push(byte[0]!);
    }
  };
  return { serial, stdin, written, attachment, drainGuest, quits: () => quits };
}

test('TTY: raw mode on attach, restored on detach; guest output reaches stdout', () => {
  const { serial, stdin, written, attachment } = setup(true);
  assert.deepEqual(stdin.rawModeCalls, [true]);
  assert.equal(stdin.paused, false);
  for (const b of new TextEncoder().encode('ok\n')) serial.write(0, new Uint8Array([b]));
  assert.deepEqual(written, [0x6f, 0x6b, 0x0a]);
  attachment.detach();
  assert.deepEqual(stdin.rawModeCalls, [true, false]);
  attachment.detach();
  assert.deepEqual(stdin.rawModeCalls, [true, false], 'idempotent');
});

test('TTY: Ctrl-A x quits; bytes before it still reach the guest', () => {
  const { stdin, drainGuest, quits } = setup(true);
  stdin.emit('data', Buffer.from([0x61, 0x01, 0x78, 0x62]));
  assert.equal(quits(), 1);
  assert.deepEqual(drainGuest(), [0x61]);
  assert.equal(stdin.listenerCount('data'), 0);
});

test('TTY: Ctrl-A Ctrl-A sends one Ctrl-A; Ctrl-A then another key sends both; escape split across chunks', () => {
  const { stdin, drainGuest, quits } = setup(true);
  stdin.emit('data', Buffer.from([0x01, 0x01, 0x01, 0x63]));
  assert.deepEqual(drainGuest(), [0x01, 0x01, 0x63]);
  stdin.emit('data', Buffer.from([0x01]));
  assert.deepEqual(drainGuest(), []);
  stdin.emit('data', Buffer.from([0x78]));
  assert.equal(quits(), 1);
});

test('not a TTY: no raw mode, no escapes', () => {
  const { stdin, drainGuest, quits } = setup(false);
  assert.deepEqual(stdin.rawModeCalls, []);
  stdin.emit('data', Buffer.from([0x01, 0x78]));
  assert.equal(quits(), 0);
  assert.deepEqual(drainGuest(), [0x01, 0x78]);
});

test('back-pressure: stdin pauses when the UART is full and resumes as the guest reads', () => {
  const { stdin, drainGuest } = setup(false, 4);
  const data = Array.from({ length: 30 }, (_, i) => 0x30 + i);
  stdin.emit('data', Buffer.from(data));
  assert.equal(stdin.paused, true);
  const got = drainGuest();
  assert.deepEqual(got, data, 'everything arrives, in order');
  assert.equal(stdin.paused, false);
});
