/**
 * MC146818 CMOS real-time clock at ports 0x70 (index) / 0x71 (data), showing the host's UTC
 * time so `date` in the guest is right from boot.
 *
 * Source: Motorola MC146818A datasheet (address map, registers A-D, "Update cycle"), and what
 * Linux's mc146818_get_time() (drivers/rtc/rtc-mc146818-lib.c) does with it: it reads seconds,
 * checks register A's UIP bit, reads the other fields and register B, then re-checks UIP and the
 * seconds, retrying every 100 us while an update is in progress. It also refuses the clock if
 * register D bit 6 is set, and the rtc-cmos driver warns if register D's VRT bit is clear.
 *
 * Time: registers are computed on every read from an injectable clock (milliseconds since the
 * Unix epoch), as UTC (Linux's default and QEMU's `-rtc base=utc`). Guest writes to the time
 * registers are kept as an offset from the host clock, so `hwclock --systohc` sticks.
 *
 * UIP follows the datasheet's timing: it reads 1 from 244 us before each second boundary until
 * the 1984 us update cycle ends, and 0 otherwise, so a guest polling it sees the same short
 * window a real chip has and its read loop terminates. While register B's SET bit is 1 the
 * clock is frozen and UIP reads 0, as the datasheet specifies.
 *
 * Not emulated: periodic, alarm and update-ended interrupts (no IRQ 8 is raised; register C's
 * UF flag does report whether an update happened since C was last read), daylight saving
 * (register B bit 0), the divider chain (register A bits 6:0 are stored only).
 * Reads allocate nothing: the calendar is computed with integer arithmetic.
 */

import type { BusDevice } from '../bus.js';

/** IBM PC/AT Technical Reference, I/O address map: CMOS RAM index 70h, data 71h. */
export const RTC_PORT_BASE = 0x70;
export const RTC_PORT_COUNT = 2;
/** ISA IRQ of the RTC (not raised by this model). */
export const RTC_IRQ = 8;

const INDEX_PORT = 0;
const DATA_PORT = 1;
/** Bit 7 of an index write disables NMI on PC/AT hardware; it is not part of the index. */
const INDEX_NMI_DISABLE = 0x80;
/** 128 bytes of CMOS: 14 clock registers and 114 bytes of RAM (MC146818A address map, with the PC/AT's 128-byte part). */
const CMOS_SIZE = 128;

// Clock registers (MC146818A address map).
// The alarm registers 0x01, 0x03 and 0x05 are plain storage here (no alarm interrupt).
const REG_SECONDS = 0x00;
const REG_MINUTES = 0x02;
const REG_HOURS = 0x04;
const REG_DAY_OF_WEEK = 0x06; // 1-7, Sunday = 1
const REG_DAY_OF_MONTH = 0x07;
const REG_MONTH = 0x08;
const REG_YEAR = 0x09; // 0-99
const REG_A = 0x0a;
const REG_B = 0x0b;
const REG_C = 0x0c;
const REG_D = 0x0d;
/** Century byte in CMOS RAM: the IBM PC/AT location, which ACPI's FADT `century` field names. */
export const RTC_CENTURY_REGISTER = 0x32;

// Register A.
const A_UIP = 0x80; // update in progress (read-only)
/** Power-on register A: 32.768 kHz time base (DV = 010) and 1.024 kHz periodic rate (RS = 0110). */
const A_POWER_ON = 0x26;
// Register B.
const B_SET = 0x80; // inhibit updates while the time is set
const B_BINARY = 0x04; // DM: 1 = binary, 0 = BCD
const B_24_HOUR = 0x02;
/** Power-on register B as PC firmware leaves it: BCD, 24-hour, no interrupts. */
const B_POWER_ON = B_24_HOUR;
// Register C.
const C_UPDATE_ENDED = 0x10; // UF
// Register D.
const D_VALID_RAM_AND_TIME = 0x80; // VRT: the battery is good

/** Hours register bit 7 in 12-hour mode: PM. */
const HOURS_PM = 0x80;

/** MC146818A "Update cycle": UIP rises 244 us before the update; the update takes 1984 us (32.768 kHz base). */
const UIP_LEAD_MS = 0.244;
const UPDATE_CYCLE_MS = 1.984;

const MS_PER_SECOND = 1000;
const MS_PER_DAY = 86_400_000;

/** Milliseconds since the Unix epoch, fractions allowed. */
export type WallClock = () => number;

/** The host clock with sub-millisecond resolution, for UIP timing. */
export const hostWallClock: WallClock = () => performance.timeOrigin + performance.now();

export interface Mc146818RtcOptions {
  /** Time source; default the host clock. Tests inject a fixed one. */
  clock?: WallClock;
}

/** Broken-down UTC time, reused between reads (no allocation per access). */
interface CalendarFields {
  year: number;
  month: number; // 1-12
  day: number; // 1-31
  dayOfWeek: number; // 1-7, Sunday = 1
  hours: number;
  minutes: number;
  seconds: number;
}

export class Mc146818Rtc implements BusDevice {
  private readonly clock: WallClock;
  private readonly cmos = new Uint8Array(CMOS_SIZE);
  private index = 0;
  /** Guest time minus host time, from guest writes to the clock registers. */
  private offsetMs = 0;
  /** Guest time frozen while register B's SET bit is 1. */
  private frozenMs = 0;
  /** The whole second (guest time) at the last register C read, for the UF flag. */
  private lastSecondSeen: number;
  private readonly fields: CalendarFields = { year: 0, month: 0, day: 0, dayOfWeek: 0, hours: 0, minutes: 0, seconds: 0 };

  constructor(options: Mc146818RtcOptions = {}) {
    this.clock = options.clock ?? hostWallClock;
    this.cmos[REG_A] = A_POWER_ON;
    this.cmos[REG_B] = B_POWER_ON;
    this.lastSecondSeen = Math.floor(this.guestNowMs() / MS_PER_SECOND);
  }

  read(offset: number, data: Uint8Array): void {
    // The index register is write-only on PC/AT hardware; reading it floats high.
    data[0] = offset === DATA_PORT ? this.readRegister(this.index) : 0xff;
  }

  write(offset: number, data: Uint8Array): void {
    const value = data[0] ?? 0;
    if (offset === INDEX_PORT) this.index = value & ~INDEX_NMI_DISABLE & (CMOS_SIZE - 1);
    else if (offset === DATA_PORT) this.writeRegister(this.index, value);
  }

  private guestNowMs(): number {
    if (this.cmos[REG_B]! & B_SET) return this.frozenMs;
    return this.clock() + this.offsetMs;
  }

  private readRegister(index: number): number {
    switch (index) {
      case REG_SECONDS:
      case REG_MINUTES:
      case REG_HOURS:
      case REG_DAY_OF_WEEK:
      case REG_DAY_OF_MONTH:
      case REG_MONTH:
      case REG_YEAR:
      case RTC_CENTURY_REGISTER:
        return this.readClockField(index);
      case REG_A:
        return (this.cmos[REG_A]! & ~A_UIP) | (this.updateInProgress() ? A_UIP : 0);
      case REG_C:
        return this.readAndClearFlags();
      case REG_D:
        return D_VALID_RAM_AND_TIME;
      default:
        return this.cmos[index]!; // alarms, register B, CMOS RAM
    }
  }

  private writeRegister(index: number, value: number): void {
    switch (index) {
      case REG_SECONDS:
      case REG_MINUTES:
      case REG_HOURS:
      case REG_DAY_OF_WEEK:
      case REG_DAY_OF_MONTH:
      case REG_MONTH:
      case REG_YEAR:
      case RTC_CENTURY_REGISTER:
        this.writeClockField(index, value);
        return;
      case REG_A:
        this.cmos[REG_A] = value & ~A_UIP; // UIP is read-only
        return;
      case REG_B:
        this.writeRegisterB(value);
        return;
      case REG_C:
      case REG_D:
        return; // read-only
      default:
        this.cmos[index] = value;
        return;
    }
  }

  private writeRegisterB(value: number): void {
    const wasSet = (this.cmos[REG_B]! & B_SET) !== 0;
    const set = (value & B_SET) !== 0;
    if (set && !wasSet) this.frozenMs = this.guestNowMs();
    this.cmos[REG_B] = value;
    // Clearing SET restarts the clock from the (possibly rewritten) frozen time.
    if (wasSet && !set) this.offsetMs = this.frozenMs - this.clock();
  }

  /** MC146818A: UIP = 1 from 244 us before an update until the update cycle completes. */
  private updateInProgress(): boolean {
    if (this.cmos[REG_B]! & B_SET) return false;
    const intoSecond = this.guestNowMs() % MS_PER_SECOND;
    const position = intoSecond < 0 ? intoSecond + MS_PER_SECOND : intoSecond;
    return position >= MS_PER_SECOND - UIP_LEAD_MS || position < UPDATE_CYCLE_MS;
  }

  private readAndClearFlags(): number {
    const second = Math.floor(this.guestNowMs() / MS_PER_SECOND);
    const flags = second !== this.lastSecondSeen ? C_UPDATE_ENDED : 0;
    this.lastSecondSeen = second;
    return flags; // IRQF stays 0: no interrupts are enabled in this model's output
  }

  private readClockField(index: number): number {
    const f = this.fields;
    breakDownUtc(this.guestNowMs(), f);
    const binary = (this.cmos[REG_B]! & B_BINARY) !== 0;
    switch (index) {
      case REG_SECONDS:
        return encode(f.seconds, binary);
      case REG_MINUTES:
        return encode(f.minutes, binary);
      case REG_HOURS:
        return this.encodeHours(f.hours, binary);
      case REG_DAY_OF_WEEK:
        return encode(f.dayOfWeek, binary);
      case REG_DAY_OF_MONTH:
        return encode(f.day, binary);
      case REG_MONTH:
        return encode(f.month, binary);
      case REG_YEAR:
        return encode(f.year % 100, binary);
      default: // century
        return encode(Math.floor(f.year / 100) % 100, binary);
    }
  }

  /** 24-hour: 0-23. 12-hour: 1-12 with bit 7 set for PM (MC146818A, hours register). */
  private encodeHours(hours: number, binary: boolean): number {
    if (this.cmos[REG_B]! & B_24_HOUR) return encode(hours, binary);
    const pm = hours >= 12 ? HOURS_PM : 0;
    const h12 = hours % 12 === 0 ? 12 : hours % 12;
    return encode(h12, binary) | pm;
  }

  private decodeHours(value: number, binary: boolean): number {
    if (this.cmos[REG_B]! & B_24_HOUR) return binary ? value : fromBcd(value);
    const h12 = binary ? value & 0x7f : fromBcd(value & 0x7f);
    const base = h12 === 12 ? 0 : h12;
    return value & HOURS_PM ? base + 12 : base;
  }

  /** Replace one field of the guest's time, keeping the others and the sub-second fraction. */
  private writeClockField(index: number, value: number): void {
    const now = this.guestNowMs();
    const f = this.fields;
    breakDownUtc(now, f);
    const binary = (this.cmos[REG_B]! & B_BINARY) !== 0;
    const n = binary ? value : fromBcd(value);
    switch (index) {
      case REG_SECONDS:
        f.seconds = n;
        break;
      case REG_MINUTES:
        f.minutes = n;
        break;
      case REG_HOURS:
        f.hours = this.decodeHours(value, binary);
        break;
      case REG_DAY_OF_WEEK:
        return; // derived from the date; a written value would not survive the next update anyway
      case REG_DAY_OF_MONTH:
        f.day = n;
        break;
      case REG_MONTH:
        f.month = n;
        break;
      case REG_YEAR:
        f.year = Math.floor(f.year / 100) * 100 + (n % 100);
        break;
      default: // century
        f.year = (n % 100) * 100 + (f.year % 100);
        break;
    }
    const fraction = ((now % MS_PER_SECOND) + MS_PER_SECOND) % MS_PER_SECOND;
    const updated = composeUtc(f) + fraction;
    // Garbage in a field (a BCD digit above 9, month 0) gives a date we cannot hold: ignore it.
    if (!Number.isFinite(updated)) return;
    if (this.cmos[REG_B]! & B_SET) this.frozenMs = updated;
    else this.offsetMs = updated - this.clock();
  }
}

/** A register value in the format register B's DM bit selects. */
function encode(n: number, binary: boolean): number {
  return binary ? n : toBcd(n);
}

function toBcd(n: number): number {
  return ((Math.floor(n / 10) % 10) << 4) | n % 10;
}

function fromBcd(b: number): number {
  return (b >>> 4) * 10 + (b & 0x0f);
}

/**
 * Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil_from_days),
 * written into `out` together with the time of day.
 */
function breakDownUtc(ms: number, out: CalendarFields): void {
  const days = Math.floor(ms / MS_PER_DAY);
  const msOfDay = ms - days * MS_PER_DAY;
  const secondsOfDay = Math.floor(msOfDay / MS_PER_SECOND);
  out.hours = Math.floor(secondsOfDay / 3600);
  out.minutes = Math.floor(secondsOfDay / 60) % 60;
  out.seconds = secondsOfDay % 60;
  // 1970-01-01 was a Thursday: day-of-week 5 with Sunday = 1.
  out.dayOfWeek = (((days + 4) % 7) + 7) % 7 + 1;

  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor((dayOfEra - Math.floor(dayOfEra / 1460) + Math.floor(dayOfEra / 36_524) - Math.floor(dayOfEra / 146_096)) / 365);
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const mp = Math.floor((5 * dayOfYear + 2) / 153);
  out.day = dayOfYear - Math.floor((153 * mp + 2) / 5) + 1;
  out.month = mp < 10 ? mp + 3 : mp - 9;
  out.year = yearOfEra + era * 400 + (out.month <= 2 ? 1 : 0);
}

/** The inverse (Hinnant's days_from_civil), in milliseconds; NaN for an impossible month. */
function composeUtc(f: CalendarFields): number {
  if (f.month < 1 || f.month > 12 || f.day < 1 || f.day > 31 || f.hours > 23 || f.minutes > 59 || f.seconds > 59) {
    return Number.NaN;
  }
  const y = f.month <= 2 ? f.year - 1 : f.year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const mp = f.month > 2 ? f.month - 3 : f.month + 9;
  const dayOfYear = Math.floor((153 * mp + 2) / 5) + f.day - 1;
  const dayOfEra = yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  const days = era * 146_097 + dayOfEra - 719_468;
  return days * MS_PER_DAY + ((f.hours * 60 + f.minutes) * 60 + f.seconds) * MS_PER_SECOND;
}
