import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordingIrqLine } from '../../src/devices/irq.js';
import { I8042 } from '../../src/devices/legacy/i8042.js';

// Offsets within the 0x60-0x64 range and status bits (IBM PC/AT Technical Reference, 8042).
const DATA = 0, STATUS = 4, COMMAND = 4;
const STR_OBF = 0x01, STR_AUXDATA = 0x20;

function controller() {
  const irq = new RecordingIrqLine();
  let resets = 0;
  const dev = new I8042({ irq, onReset: () => resets++ });
  const byte = new Uint8Array(1);
  const inb = (offset: number): number => {
    byte[0] = 0;
    dev.read(offset, byte);
    return byte[0]!;
  };
  const outb = (offset: number, value: number): void => {
    byte[0] = value;
    dev.write(offset, byte);
  };
  return { dev, irq, inb, outb, resets: () => resets };
}

type Io = ReturnType<typeof controller>;

// Linux's command words (drivers/input/serio/i8042.h): (params << 12) | (results << 8) | code.
const I8042_CMD_CTL_RCTR = 0x0120;
const I8042_CMD_CTL_WCTR = 0x1060;
const I8042_CMD_CTL_TEST = 0x01aa;
const I8042_CMD_KBD_TEST = 0x01ab;
const I8042_CMD_KBD_ENABLE = 0x00ae;
const I8042_CMD_AUX_LOOP = 0x11d3;
const I8042_CMD_AUX_TEST = 0x01a9;
const I8042_CMD_READ_OUTPUT = 0x01d0;
const I8042_CMD_WRITE_OUTPUT = 0x10d1;
const ETIMEDOUT = -110, EIO = -5;

/**
 * Linux's __i8042_command(): write the code to 0x64, the parameters to 0x60, then read the
 * results, each after waiting for OBF. A missing byte is a timeout (Linux would spin 500 ms).
 */
function i8042Command(io: Io, command: number, param: number[]): number {
  io.outb(COMMAND, command & 0xff);
  for (let i = 0; i < ((command >> 12) & 0xf); i++) io.outb(DATA, param[i]!);
  for (let i = 0; i < ((command >> 8) & 0xf); i++) {
    if (!(io.inb(STATUS) & STR_OBF)) return ETIMEDOUT;
    if (command === I8042_CMD_AUX_LOOP && !(io.inb(STATUS) & STR_AUXDATA)) return EIO; // at once
    param[i] = io.inb(DATA);
  }
  return 0;
}

test('command 0xFE pulses the reset line: onReset is called', () => {
  const io = controller();
  io.outb(COMMAND, 0xfe);
  assert.equal(io.resets(), 1);
  io.outb(COMMAND, 0xff); // pulse nothing (bit 0 set)
  assert.equal(io.resets(), 1);
  io.outb(DATA, 0xfe); // a keyboard command, not a controller one
  assert.equal(io.resets(), 1);
});

test('writing the output port with bit 0 clear resets the CPU', () => {
  const io = controller();
  const p = [0];
  assert.equal(i8042Command(io, I8042_CMD_READ_OUTPUT, p), 0);
  assert.equal(p[0]! & 0x01, 0x01, 'power-on output port: not in reset');
  i8042Command(io, I8042_CMD_WRITE_OUTPUT, [p[0]! & 0xfe]);
  assert.equal(io.resets(), 1);
});

test('sendCtrlAltDel injects Ctrl, Alt, Delete make codes in scan code set 2 and raises IRQ 1', () => {
  const io = controller();
  assert.equal(io.dev.sendCtrlAltDel(), true);
  assert.equal(io.irq.level, true);
  const got: number[] = [];
  while (io.inb(STATUS) & STR_OBF) got.push(io.inb(DATA));
  assert.deepEqual(got, [0x14, 0x11, 0xe0, 0x71]);
  assert.equal(io.irq.level, false);
  assert.equal(io.irq.raises, 4, 'one edge per byte for the edge-triggered ISA IRQ');
});

test('with translation on (command byte bit 6), Ctrl-Alt-Del arrives in set 1', () => {
  const io = controller();
  const ctr = [0];
  i8042Command(io, I8042_CMD_CTL_RCTR, ctr);
  i8042Command(io, I8042_CMD_CTL_WCTR, [ctr[0]! | 0x40]);
  io.dev.sendCtrlAltDel();
  const got: number[] = [];
  while (io.inb(STATUS) & STR_OBF) got.push(io.inb(DATA));
  assert.deepEqual(got, [0x1d, 0x38, 0xe0, 0x53]);
});

test('no keyboard interrupt while command byte bit 0 is clear', () => {
  const io = controller();
  i8042Command(io, I8042_CMD_CTL_WCTR, [0x04]);
  io.dev.sendCtrlAltDel();
  assert.equal(io.irq.level, false);
  assert.equal(io.inb(STATUS) & STR_OBF, STR_OBF);
});

test('sendCtrlAltDel refuses when the buffer cannot hold the sequence', () => {
  const io = controller();
  for (let i = 0; i < 4; i++) assert.equal(io.dev.sendCtrlAltDel(), true);
  assert.equal(io.dev.sendCtrlAltDel(), false);
});

test("Linux's i8042 probe sequence gets every answer without a timeout and finds no AUX port", () => {
  const io = controller();
  // i8042_flush(): drain.
  let n = 0;
  while (io.inb(STATUS) & STR_OBF && n++ < 16) io.inb(DATA);
  assert.ok(n <= 16);
  assert.notEqual(io.inb(STATUS), 0xff, 'a controller is present');
  // i8042_controller_selftest(): CTL_TEST -> 0x55.
  const p = [0];
  assert.equal(i8042Command(io, I8042_CMD_CTL_TEST, p), 0);
  assert.equal(p[0], 0x55);
  // i8042_controller_init(): read CTR twice (must agree), write it back.
  const c1 = [0], c2 = [0];
  assert.equal(i8042Command(io, I8042_CMD_CTL_RCTR, c1), 0);
  assert.equal(i8042Command(io, I8042_CMD_CTL_RCTR, c2), 0);
  assert.equal(c1[0], c2[0]);
  assert.equal(c1[0]! & 0x40, 0, 'translation off: Linux goes direct, set 2');
  assert.equal(i8042Command(io, I8042_CMD_CTL_WCTR, [c1[0]!]), 0);
  // i8042_check_aux(): AUX_LOOP fails fast (-EIO), then AUX_TEST returns an error code.
  assert.equal(i8042Command(io, I8042_CMD_AUX_LOOP, [0x5a]), EIO);
  const auxTest = [0];
  assert.equal(i8042Command(io, I8042_CMD_AUX_TEST, auxTest), 0);
  assert.ok(auxTest[0] !== 0 && auxTest[0] !== 0xfa && auxTest[0] !== 0xff, 'AUX port reported broken: no AUX probing');
  // Keyboard interface test and enable.
  assert.equal(i8042Command(io, I8042_CMD_KBD_TEST, p), 0);
  assert.equal(p[0], 0);
  assert.equal(i8042Command(io, I8042_CMD_KBD_ENABLE, []), 0);
});

test('atkbd probe: keyboard answers GETID with ACK AB 83, RESET with ACK AA, LEDs with two ACKs', () => {
  const io = controller();
  const replies = (bytes: number[]): number[] => {
    for (const b of bytes) io.outb(DATA, b);
    const got: number[] = [];
    while (io.inb(STATUS) & STR_OBF) got.push(io.inb(DATA));
    return got;
  };
  assert.deepEqual(replies([0xf2]), [0xfa, 0xab, 0x83]);
  assert.deepEqual(replies([0xff]), [0xfa, 0xaa]);
  assert.deepEqual(replies([0xed]), [0xfa]);
  assert.deepEqual(replies([0x07]), [0xfa], 'LED parameter acknowledged, not taken as a command');
  assert.deepEqual(replies([0xf0, 0x00]), [0xfa, 0x02], 'F0 00 asks for the current scan set: 2');
  assert.deepEqual(replies([0xf4]), [0xfa]);
  assert.deepEqual(replies([0xee]), [0xee]);
});

test('status register: system flag set, A2 tracks the last port written', () => {
  const io = controller();
  assert.equal(io.inb(STATUS) & 0x04, 0x04);
  io.outb(COMMAND, 0xae);
  assert.equal(io.inb(STATUS) & 0x08, 0x08);
  io.outb(DATA, 0xf4);
  assert.equal(io.inb(STATUS) & 0x08, 0);
});

test('odd accesses never throw', () => {
  const io = controller();
  const wide = new Uint8Array(4);
  for (let off = 0; off < 5; off++) {
    io.dev.read(off, wide);
    io.dev.write(off, wide);
  }
  io.dev.write(0, new Uint8Array(0));
  assert.equal(io.inb(DATA) >= 0, true);
});

test('one-port views: dataPort and commandPort reach the same controller from offset 0', () => {
  const io = controller();
  io.dev.commandPort.write(0, new Uint8Array([0xaa]));
  const status = new Uint8Array(1);
  io.dev.commandPort.read(0, status);
  assert.equal(status[0]! & STR_OBF, STR_OBF);
  const data = new Uint8Array(1);
  io.dev.dataPort.read(0, data);
  assert.equal(data[0], 0x55);
  io.dev.commandPort.write(0, new Uint8Array([0xfe]));
  assert.equal(io.resets(), 1);
});
