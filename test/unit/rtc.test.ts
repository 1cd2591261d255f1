import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Mc146818Rtc } from '../../src/devices/legacy/rtc.js';

// MC146818A address map and register bits, spelled out independently of the implementation.
const SECONDS = 0x00, MINUTES = 0x02, HOURS = 0x04, DAY_OF_WEEK = 0x06, DAY = 0x07, MONTH = 0x08, YEAR = 0x09;
const REG_A = 0x0a, REG_B = 0x0b, REG_C = 0x0c, REG_D = 0x0d, CENTURY = 0x32;
const UIP = 0x80, SET = 0x80, DM_BINARY = 0x04, HOURS_24 = 0x02;

function rtcAt(startMs: number) {
  const clock = { now: startMs };
  const rtc = new Mc146818Rtc({ clock: () => clock.now });
  const byte = new Uint8Array(1);
  const cmosRead = (index: number): number => {
    byte[0] = index;
    rtc.write(0, byte);
    rtc.read(1, byte);
    return byte[0]!;
  };
  const cmosWrite = (index: number, value: number): void => {
    byte[0] = index;
    rtc.write(0, byte);
    byte[0] = value;
    rtc.write(1, byte);
  };
  return { rtc, clock, cmosRead, cmosWrite };
}

// Wednesday 25 November 2026, 16:22:34.5 UTC.
const KNOWN = Date.UTC(2026, 10, 25, 16, 22, 34, 500);

test('reads a known time in BCD, 24-hour mode (the power-on format)', () => {
  const { cmosRead } = rtcAt(KNOWN);
  assert.equal(cmosRead(REG_B) & (DM_BINARY | HOURS_24), HOURS_24);
  assert.equal(cmosRead(SECONDS), 0x34);
  assert.equal(cmosRead(MINUTES), 0x22);
  assert.equal(cmosRead(HOURS), 0x16);
  assert.equal(cmosRead(DAY_OF_WEEK), 4, 'Wednesday, with Sunday = 1');
  assert.equal(cmosRead(DAY), 0x25);
  assert.equal(cmosRead(MONTH), 0x11);
  assert.equal(cmosRead(YEAR), 0x26);
  assert.equal(cmosRead(CENTURY), 0x20);
});

test('binary mode (register B DM bit) and 12-hour mode with the PM bit', () => {
  const { cmosRead, cmosWrite, clock } = rtcAt(KNOWN);
  cmosWrite(REG_B, HOURS_24 | DM_BINARY);
  assert.equal(cmosRead(SECONDS), 34);
  assert.equal(cmosRead(HOURS), 16);
  assert.equal(cmosRead(YEAR), 26);
  cmosWrite(REG_B, DM_BINARY); // 12-hour, binary
  assert.equal(cmosRead(HOURS), 0x80 | 4);
  cmosWrite(REG_B, 0); // 12-hour, BCD
  assert.equal(cmosRead(HOURS), 0x80 | 0x04);
  clock.now = Date.UTC(2026, 10, 25, 0, 5, 0, 500);
  assert.equal(cmosRead(HOURS), 0x12, 'midnight is 12 AM');
  clock.now = Date.UTC(2026, 10, 25, 12, 5, 0, 500);
  assert.equal(cmosRead(HOURS), 0x80 | 0x12, 'noon is 12 PM');
});

test('calendar matches Date for many instants (leap years, century boundaries)', () => {
  const { cmosRead, cmosWrite, clock } = rtcAt(0);
  cmosWrite(REG_B, HOURS_24 | DM_BINARY);
  let seed = 12345;
  const instants = [Date.UTC(2000, 1, 29, 23, 59, 59), Date.UTC(2100, 2, 1), Date.UTC(1999, 11, 31, 23, 59, 59), 0];
  for (let i = 0; i < 500; i++) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    instants.push((seed / 2 ** 31) * Date.UTC(2199, 0, 1));
  }
  for (const t of instants) {
    clock.now = Math.floor(t / 1000) * 1000 + 500;
    const d = new Date(clock.now);
    const got = [cmosRead(CENTURY) * 100 + cmosRead(YEAR), cmosRead(MONTH), cmosRead(DAY), cmosRead(DAY_OF_WEEK), cmosRead(HOURS), cmosRead(MINUTES), cmosRead(SECONDS)];
    const want = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCDay() + 1, d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()];
    assert.deepEqual(got, want, d.toISOString());
  }
});

test('register A UIP: set 244 us before a second boundary through the 1984 us update, clear otherwise', () => {
  const { cmosRead, clock } = rtcAt(KNOWN);
  const base = Date.UTC(2026, 10, 25, 16, 22, 34);
  const uipAt = (ms: number) => {
    clock.now = base + ms;
    return cmosRead(REG_A) & UIP;
  };
  assert.equal(uipAt(500), 0);
  assert.equal(uipAt(999.7), 0);
  assert.equal(uipAt(999.8), UIP);
  assert.equal(uipAt(1000), UIP);
  assert.equal(uipAt(1001.9), UIP);
  assert.equal(uipAt(1002), 0);
  assert.equal(cmosRead(REG_A) & 0x7f, 0x26, '32.768 kHz time base, 1024 Hz rate');
});

test('register D reports valid RAM and time; register D bit 6 (Linux refuses the RTC if set) is 0', () => {
  const { cmosRead, cmosWrite } = rtcAt(KNOWN);
  assert.equal(cmosRead(REG_D), 0x80);
  cmosWrite(REG_D, 0x40);
  assert.equal(cmosRead(REG_D), 0x80, 'read-only');
});

test('register C: UF reports an update since the last read and clears on read', () => {
  const { cmosRead, clock } = rtcAt(KNOWN);
  assert.equal(cmosRead(REG_C), 0);
  clock.now += 1000;
  assert.equal(cmosRead(REG_C) & 0x10, 0x10);
  assert.equal(cmosRead(REG_C), 0);
});

/**
 * Linux's mc146818_get_time() (drivers/rtc/rtc-mc146818-lib.c, 6.x): read seconds, retry while
 * UIP, read the rest, re-check UIP and seconds. `tick` advances the clock per port access, as
 * real time passes between VM exits. Returns the time and the number of retries.
 */
function linuxGetTime(cmosRead: (i: number) => number, tick: () => void, sleep100us: () => void) {
  const bcd2bin = (b: number) => (b >> 4) * 10 + (b & 15);
  for (let retries = 0; retries < 1000; retries++) {
    if (cmosRead(REG_D) & 0x40) throw new Error('RTC refused');
    const seconds = cmosRead(SECONDS);
    tick();
    if (cmosRead(REG_A) & UIP) {
      sleep100us();
      continue;
    }
    const minutes = cmosRead(MINUTES);
    const hours = cmosRead(HOURS);
    const day = cmosRead(DAY);
    const month = cmosRead(MONTH);
    const year = cmosRead(YEAR);
    const century = cmosRead(CENTURY);
    const ctrl = cmosRead(REG_B);
    tick();
    const uip = (cmosRead(REG_A) & UIP) !== 0 || cmosRead(SECONDS) !== seconds;
    if (uip) continue;
    const conv = ctrl & DM_BINARY ? (b: number) => b : bcd2bin;
    return {
      iso: new Date(Date.UTC(conv(century) * 100 + conv(year), conv(month) - 1, conv(day), conv(hours), conv(minutes), conv(seconds))).toISOString(),
      retries,
    };
  }
  throw new Error('mc146818_get_time never finished');
}

test("Linux's mc146818_get_time terminates when started inside the update window and reads the host time", () => {
  const start = Date.UTC(2026, 10, 25, 16, 22, 34) + 999.9;
  const { cmosRead, clock } = rtcAt(start);
  const result = linuxGetTime(
    cmosRead,
    () => (clock.now += 0.02),
    () => (clock.now += 0.1),
  );
  assert.equal(result.iso, '2026-11-25T16:22:35.000Z');
  assert.ok(result.retries > 0 && result.retries < 30, `retries ${result.retries}`);
});

test('guest writes with SET: time frozen while set, then runs from the written value', () => {
  const { cmosRead, cmosWrite, clock } = rtcAt(KNOWN);
  cmosWrite(REG_B, SET | HOURS_24);
  assert.equal(cmosRead(REG_A) & UIP, 0, 'UIP clear while SET');
  cmosWrite(HOURS, 0x05);
  cmosWrite(MINUTES, 0x07);
  cmosWrite(YEAR, 0x30);
  clock.now += 5000;
  assert.equal(cmosRead(SECONDS), 0x34, 'frozen');
  cmosWrite(REG_B, HOURS_24);
  clock.now += 2000;
  assert.equal(cmosRead(HOURS), 0x05);
  assert.equal(cmosRead(MINUTES), 0x07);
  assert.equal(cmosRead(SECONDS), 0x36);
  assert.equal(cmosRead(YEAR), 0x30);
  assert.equal(cmosRead(MONTH), 0x11);
});

test('CMOS RAM stores bytes; index bit 7 (NMI disable) is ignored; the index port reads 0xFF', () => {
  const { rtc, cmosRead, cmosWrite } = rtcAt(KNOWN);
  cmosWrite(0x40, 0xab);
  assert.equal(cmosRead(0x40), 0xab);
  assert.equal(cmosRead(0x80 | 0x40), 0xab);
  const b = new Uint8Array(1);
  rtc.read(0, b);
  assert.equal(b[0], 0xff);
});

test('garbage writes to clock registers never throw and keep a sane date', () => {
  const { cmosRead, cmosWrite } = rtcAt(KNOWN);
  for (const reg of [SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY, MONTH, YEAR, CENTURY]) {
    cmosWrite(reg, 0xff);
    cmosWrite(reg, 0x00);
  }
  assert.equal(cmosRead(MONTH), 0x11, 'impossible month 0 ignored');
  const wide = new Uint8Array(4);
  const { rtc } = rtcAt(KNOWN);
  rtc.read(1, wide);
  rtc.write(1, new Uint8Array(0));
  rtc.write(7, wide);
});
