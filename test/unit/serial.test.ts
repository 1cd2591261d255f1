import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RecordingIrqLine } from '../../src/devices/irq.js';
import { Serial16550 } from '../../src/devices/legacy/serial.js';

// Register offsets and bits, spelled out independently of the implementation (PC16550D tables II-IV).
const THR = 0, RBR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
const LSR_DR = 0x01, LSR_OE = 0x02, LSR_THRE = 0x20, LSR_TEMT = 0x40;

function uart(options: { inputQueueCapacity?: number } = {}) {
  const irq = new RecordingIrqLine();
  const out: number[] = [];
  const serial = new Serial16550({ irq, output: (b) => out.push(...b), ...options });
  const byte = new Uint8Array(1);
  const inb = (offset: number): number => {
    byte[0] = 0;
    serial.read(offset, byte);
    return byte[0]!;
  };
  const outb = (offset: number, value: number): void => {
    byte[0] = value;
    serial.write(offset, byte);
  };
  return { serial, irq, out, inb, outb };
}

const ascii = (s: string) => new TextEncoder().encode(s);

test('power-on state: no interrupt, transmitter empty, modem lines of a ready terminal', () => {
  const { inb } = uart();
  assert.equal(inb(IIR), 0x01);
  assert.equal(inb(LSR), LSR_THRE | LSR_TEMT);
  assert.equal(inb(MSR), 0xb0); // DCD | DSR | CTS
  assert.equal(inb(IER), 0);
  assert.equal(inb(LCR), 0);
  assert.equal(inb(MCR), 0);
});

test('IIR reads 0xC1 with FIFOs enabled and nothing pending; 0x01 once disabled', () => {
  const { inb, outb } = uart();
  outb(FCR, 0x01);
  assert.equal(inb(IIR), 0xc1);
  outb(FCR, 0x00);
  assert.equal(inb(IIR), 0x01);
});

test('THRE interrupt: raised on enabling ETBEI, cleared by reading IIR, re-armed by a THR write', () => {
  const { inb, outb, irq, out, serial } = uart();
  outb(IER, 0x02);
  assert.equal(irq.level, true);
  assert.equal(inb(IIR), 0x02); // THR empty, FIFOs off
  assert.equal(irq.level, false, 'reading IIR naming THRE clears it');
  assert.equal(inb(IIR), 0x01);
  outb(THR, 0x41);
  assert.equal(irq.level, true, 'the byte leaves at once, THR is empty again');
  assert.equal(inb(LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
  outb(IER, 0x00);
  assert.equal(irq.level, false, 'masking ETBEI drops the line');
  // Linux's THRE test: IER=THRI, read IIR, IER=0, IER=THRI, read IIR: both must report THRE.
  outb(IER, 0x02);
  const iir1 = inb(IIR);
  outb(IER, 0);
  outb(IER, 0x02);
  const iir2 = inb(IIR);
  assert.equal(iir1 & 0x01, 0);
  assert.equal(iir2 & 0x01, 0);
  serial.flush();
  assert.deepEqual(out, [0x41]);
});

test('describeState reports the registers and the interrupt line without the side effects of a guest read', () => {
  const { inb, outb, irq, serial } = uart();
  outb(FCR, 0x01);
  outb(IER, 0x02);
  const state = serial.describeState();
  assert.match(state, /ier=0x02 iir=0xc2 .*thre_latch=1 irq=high/);
  assert.equal(serial.describeState(), state, 'describing twice changes nothing');
  assert.equal(irq.level, true, 'the THRE interrupt is still pending');
  assert.equal(inb(IIR), 0xc2);
  assert.match(serial.describeState(), /iir=0xc1 .*thre_latch=0 irq=low/);
  outb(THR, 0x41);
  assert.match(serial.describeState(), /tx_buffered=1/);
});

test('transmit: LSR stays THRE|TEMT, output flushed on newline and on a microtask', async () => {
  const { inb, outb, out } = uart();
  for (const b of ascii('hi\n')) {
    outb(THR, b);
    assert.equal(inb(LSR), LSR_THRE | LSR_TEMT);
  }
  assert.deepEqual(out, [...ascii('hi\n')], 'newline flushes synchronously');
  outb(THR, 0x24);
  assert.equal(out.length, 3, 'a partial line waits');
  await Promise.resolve();
  assert.deepEqual(out, [...ascii('hi\n$')], 'the microtask delivers it');
});

test('receive without FIFO: LSR.DR, RDA interrupt (IIR 0x04), RBR read drains', () => {
  const { inb, outb, irq, serial } = uart();
  outb(IER, 0x01);
  assert.equal(serial.enqueueInput(ascii('ab')), 2);
  assert.equal(inb(LSR) & LSR_DR, LSR_DR);
  assert.equal(irq.level, true);
  assert.equal(inb(IIR), 0x04);
  assert.equal(inb(RBR), 0x61);
  assert.equal(irq.level, true, 'the queued second byte moves into RBR');
  assert.equal(inb(RBR), 0x62);
  assert.equal(inb(LSR) & LSR_DR, 0);
  assert.equal(irq.level, false);
  assert.equal(inb(IIR), 0x01);
});

test('FIFO trigger level: below it the character-timeout interrupt (0xCC), at it RDA (0xC4)', () => {
  const { inb, outb, serial } = uart();
  outb(FCR, 0x81); // enable, trigger level 8 (FCR[7:6] = 10)
  outb(IER, 0x01);
  serial.enqueueInput(ascii('abc'));
  assert.equal(inb(IIR), 0xcc);
  serial.enqueueInput(ascii('defgh'));
  assert.equal(inb(IIR), 0xc4);
  assert.equal(inb(RBR), 0x61);
  assert.equal(inb(IIR), 0xcc, '7 bytes left, below the trigger level');
  outb(FCR, 0xc1); // trigger 14; FCR bit 0 unchanged, so the FIFO keeps its 7 bytes
  assert.equal(inb(LSR) & LSR_DR, LSR_DR);
  assert.equal(inb(IIR), 0xcc);
  outb(IER, 0x00);
  assert.equal(inb(IIR), 0xc1, 'masked: no interrupt');
});

test('FCR: enabling FIFOs or RX reset clears the receive FIFO', () => {
  const { inb, outb, serial } = uart();
  outb(FCR, 0x01);
  serial.enqueueInput(ascii('xyz'));
  outb(FCR, 0x03); // RX FIFO reset
  assert.equal(inb(LSR) & LSR_DR, 0);
  serial.enqueueInput(ascii('q'));
  outb(FCR, 0x00); // FIFO enable changes: clears
  assert.equal(inb(LSR) & LSR_DR, 0);
});

test('input back-pressure: the queue accepts what fits, refills the FIFO and announces space', () => {
  const { inb, outb, serial } = uart({ inputQueueCapacity: 20 });
  outb(FCR, 0x01);
  let spaceCalls = 0;
  serial.onInputSpace = () => spaceCalls++;
  const data = Uint8Array.from({ length: 40 }, (_, i) => i);
  assert.equal(serial.enqueueInput(data), 36, '16 go into the FIFO at once, 20 wait in the queue');
  assert.equal(serial.pendingInput, 36);
  const received: number[] = [];
  while (inb(LSR) & LSR_DR) received.push(inb(RBR));
  assert.deepEqual(received, [...data.subarray(0, 36)]);
  assert.equal(spaceCalls, 1);
  assert.equal(inb(LSR) & LSR_OE, 0, 'host input never overruns');
});

test('RX overrun: loopback into a full FIFO sets LSR.OE, line status interrupt, cleared by reading LSR', () => {
  const { inb, outb, irq } = uart();
  outb(FCR, 0x01);
  outb(MCR, 0x10);
  outb(IER, 0x05); // RDA + line status
  for (let i = 0; i < 17; i++) outb(THR, i);
  assert.equal(inb(IIR), 0xc6, 'receiver line status has top priority');
  const lsr = inb(LSR);
  assert.equal(lsr & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
  assert.equal(inb(LSR) & LSR_OE, 0, 'OE clears on read');
  assert.equal(inb(IIR), 0xc4, 'now RDA: 16 bytes are at the trigger level of 1');
  const got: number[] = [];
  while (inb(LSR) & LSR_DR) got.push(inb(RBR));
  assert.deepEqual(got, Array.from({ length: 16 }, (_, i) => i), 'the FIFO kept the first 16; the 17th was lost');
  assert.equal(irq.level, false);
});

test('RX overrun without FIFO: the new byte overwrites RBR', () => {
  const { inb, outb } = uart();
  outb(MCR, 0x10);
  outb(THR, 1);
  outb(THR, 2);
  assert.equal(inb(LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
  assert.equal(inb(RBR), 2);
});

test('DLAB switches offsets 0/1 to the divisor latch and back', () => {
  const { inb, outb, out, serial } = uart();
  outb(IER, 0x05);
  outb(LCR, 0x83);
  assert.equal(inb(DLL), 12, 'power-on divisor 12 (9600 baud)');
  outb(DLL, 0x01);
  outb(DLM, 0x02);
  assert.equal(inb(DLL), 0x01);
  assert.equal(inb(DLM), 0x02);
  assert.equal(serial.baudDivisor, 0x0201);
  outb(LCR, 0x03);
  assert.equal(inb(IER), 0x05, 'IER untouched by DLM writes');
  assert.equal(inb(LCR), 0x03);
  serial.flush();
  assert.deepEqual(out, [], 'DLL writes do not transmit');
});

test('IER bits 7:4 read as zero (Linux IER test, and no XScale UUE bit)', () => {
  const { inb, outb } = uart();
  outb(IER, 0xff);
  assert.equal(inb(IER), 0x0f);
});

test('loopback: modem outputs drive MSR, deltas latch and clear on read, modem status interrupt', () => {
  const { inb, outb, irq } = uart();
  inb(MSR);
  outb(MCR, 0x10 | 0x0a); // LOOP | OUT2 | RTS
  assert.equal(inb(MSR) & 0xf0, 0x90, 'CTS<-RTS, DCD<-OUT2');
  outb(IER, 0x08);
  outb(MCR, 0x10 | 0x0a | 0x01); // + DTR -> DSR
  assert.equal(irq.level, true);
  assert.equal(inb(IIR), 0x00, 'modem status interrupt, FIFOs off');
  const msr = inb(MSR);
  assert.equal(msr, 0x80 | 0x20 | 0x10 | 0x02, 'DSR rose: DDSR');
  assert.equal(irq.level, false);
  outb(MCR, 0x10 | 0x04); // OUT1 -> RI on
  inb(MSR);
  outb(MCR, 0x10); // RI off: trailing edge
  assert.equal(inb(MSR) & 0x0f, 0x04, 'TERI on RI falling edge only');
  // Transmit in loopback goes to the receiver, not the output.
  outb(THR, 0x55);
  assert.equal(inb(RBR), 0x55);
  // Host input waits while in loopback and arrives after.
  outb(MCR, 0x00);
  assert.equal(inb(MSR) & 0xf0, 0xb0);
});

test('host input is held while in loopback', () => {
  const { inb, outb, serial } = uart();
  outb(MCR, 0x10);
  serial.enqueueInput(ascii('k'));
  assert.equal(inb(LSR) & LSR_DR, 0);
  outb(MCR, 0x00);
  assert.equal(inb(RBR), 0x6b);
});

test('scratch register holds any byte', () => {
  const { inb, outb } = uart();
  for (const v of [0x00, 0xa5, 0x5a, 0xff]) {
    outb(SCR, v);
    assert.equal(inb(SCR), v);
  }
});

test('odd accesses never throw: wide access, out-of-range offset, empty RBR', () => {
  const { serial, inb } = uart();
  const wide = new Uint8Array(4);
  serial.read(0, wide);
  serial.write(0, new Uint8Array([0x41, 1, 2, 3]));
  serial.read(9, wide);
  assert.equal(wide[0], 0xff);
  serial.write(9, new Uint8Array([1]));
  serial.write(0, new Uint8Array(0));
  assert.equal(inb(RBR), 0);
});

/**
 * A transcription of Linux's drivers/tty/serial/8250/8250_port.c autoconfig() and
 * autoconfig_16550a() (as of 6.x, PC port with no quirk flags), plus the THRE test from
 * serial8250_do_startup(). Returns the detected type name and whether UART_BUG_THRE was set.
 */
function linuxAutoconfig(inb: (o: number) => number, outb: (o: number, v: number) => void): { type: string; bugThre: boolean } {
  const UART_LCR_CONF_MODE_A = 0x80, UART_LCR_CONF_MODE_B = 0xbf, UART_MCR_LOOP = 0x10;
  const UART_FCR_ENABLE_FIFO = 0x01, UART_FCR7_64BYTE = 0x20, UART_IER_UUE = 0x40, UART_IER_THRI = 0x02, UART_EFR = 2;
  // IER existence test.
  const scratch = inb(IER);
  outb(IER, 0);
  const scratch2 = inb(IER) & 0x0f;
  outb(IER, 0x0f);
  const scratch3 = inb(IER) & 0x0f;
  outb(IER, scratch);
  if (scratch2 !== 0 || scratch3 !== 0x0f) return { type: 'none (IER test failed)', bugThre: false };
  const saveMcr = inb(MCR);
  const saveLcr = inb(LCR);
  // Loopback test.
  outb(MCR, UART_MCR_LOOP | 0x0a);
  const status1 = inb(MSR) & 0xf0;
  outb(MCR, saveMcr);
  if (status1 !== 0x90) return { type: `none (LOOP test failed ${status1.toString(16)})`, bugThre: false };
  outb(LCR, UART_LCR_CONF_MODE_B);
  outb(UART_EFR, 0);
  outb(LCR, 0);
  outb(FCR, UART_FCR_ENABLE_FIFO);
  const kind = inb(IIR) >> 6;
  let type: string;
  if (kind === 0) {
    outb(SCR, 0xa5);
    const a = inb(SCR);
    outb(SCR, 0x5a);
    type = a === 0xa5 && inb(SCR) === 0x5a ? '16450' : '8250';
  } else if (kind === 1) type = 'unknown';
  else if (kind === 2) type = '16550';
  else {
    type = '16550A';
    outb(LCR, UART_LCR_CONF_MODE_A);
    if (inb(UART_EFR) === 0) return { type: '16650 or FSL64 (EFR found)', bugThre: false };
    outb(LCR, UART_LCR_CONF_MODE_B);
    if (inb(UART_EFR) === 0) return { type: 'EFRv2 (ST16C650V2 family)', bugThre: false };
    outb(LCR, 0);
    const mcr = inb(MCR);
    outb(LCR, 0xe0);
    let excr1 = inb(0x02);
    if (!((excr1 ^ mcr) & UART_MCR_LOOP)) {
      outb(LCR, 0);
      outb(MCR, mcr ^ UART_MCR_LOOP);
      outb(LCR, 0xe0);
      excr1 = inb(0x02);
      outb(LCR, 0);
      outb(MCR, mcr);
      if ((excr1 ^ mcr) & UART_MCR_LOOP) return { type: 'NS16550A (SuperIO)', bugThre: false };
    }
    outb(LCR, 0);
    outb(FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
    const s1 = inb(IIR) >> 5;
    outb(FCR, UART_FCR_ENABLE_FIFO);
    outb(LCR, UART_LCR_CONF_MODE_A);
    outb(FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE);
    const s2 = inb(IIR) >> 5;
    outb(FCR, UART_FCR_ENABLE_FIFO);
    outb(LCR, 0);
    if (s1 === 6 && s2 === 7) return { type: '16750', bugThre: false };
    const iersave = inb(IER);
    outb(IER, iersave & ~UART_IER_UUE);
    if (!(inb(IER) & UART_IER_UUE)) {
      outb(IER, iersave | UART_IER_UUE);
      if (inb(IER) & UART_IER_UUE) return { type: 'XScale', bugThre: false };
    }
    outb(IER, iersave);
    // size_fifo(): loop 256 bytes back and count what the FIFO kept.
    const oldLcr = inb(LCR);
    outb(LCR, 0);
    const oldFcr = inb(FCR);
    const oldMcr = inb(MCR);
    outb(FCR, 0x07);
    outb(MCR, UART_MCR_LOOP);
    outb(LCR, UART_LCR_CONF_MODE_A);
    const oldDl = inb(DLL) | (inb(DLM) << 8);
    outb(DLL, 1);
    outb(DLM, 0);
    outb(LCR, 0x03);
    for (let i = 0; i < 256; i++) outb(THR, i);
    let count = 0;
    for (; inb(LSR) & LSR_DR && count < 256; count++) inb(RBR);
    outb(FCR, oldFcr);
    outb(MCR, oldMcr);
    outb(LCR, UART_LCR_CONF_MODE_A);
    outb(DLL, oldDl & 0xff);
    outb(DLM, oldDl >> 8);
    outb(LCR, oldLcr);
    if (count === 64) type = 'U6_16550A';
    else assert.equal(count, 16, 'size_fifo counts a 16-byte FIFO');
  }
  outb(LCR, saveLcr);
  // Reset as autoconfig does, then serial8250_do_startup's THRE test.
  outb(MCR, saveMcr);
  outb(FCR, UART_FCR_ENABLE_FIFO);
  outb(FCR, UART_FCR_ENABLE_FIFO | 0x06);
  outb(FCR, 0);
  inb(RBR);
  outb(IER, 0);
  if (inb(LSR) === 0xff) return { type: 'none (LSR safety check)', bugThre: false };
  outb(IER, UART_IER_THRI);
  const iir1 = inb(IIR);
  outb(IER, 0);
  outb(IER, UART_IER_THRI);
  const iir = inb(IIR);
  outb(IER, 0);
  const bugThre = !(iir1 & 0x01) && (iir & 0x01) !== 0;
  return { type, bugThre };
}

test("Linux 8250 autoconfig detects a 16550A with a 16-byte FIFO and no THRE bug", () => {
  const { inb, outb, irq } = uart();
  assert.deepEqual(linuxAutoconfig(inb, outb), { type: '16550A', bugThre: false });
  assert.equal(irq.level, false, 'probe leaves no interrupt pending');
});
