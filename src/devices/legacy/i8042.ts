/**
 * i8042 PS/2 keyboard controller, reduced to what a microVM needs:
 *  - Linux's i8042 driver probes it quickly and without errors (every command it sends gets the
 *    answer it waits for, so no 500 ms command timeouts), and atkbd finds a keyboard;
 *  - the guest's `reboot` (reboot=k, or Linux's fallback chain) pulses the CPU reset line through
 *    command 0xFE, which calls `onReset`;
 *  - the host can send Ctrl-Alt-Del, as Firecracker's SendCtrlAltDel action does, for a graceful
 *    guest shutdown.
 *
 * Sources: IBM PC/AT Technical Reference (8042 keyboard controller: status register, command
 * byte, controller commands 20h-FFh), IBM PS/2 Keyboard and Auxiliary Device Controller
 * reference (commands A7h-A9h, D2h-D4h), IBM PS/2 keyboard reference (keyboard commands EDh-FFh,
 * ACK FAh, BAT completion AAh, ID AB 83h), and Linux drivers/input/serio/i8042.c for what it
 * probes.
 *
 * No auxiliary (mouse) device exists. The AUX loopback command answers through the keyboard
 * channel (status bit 5 clear), which Linux's __i8042_command() rejects at once with -EIO, and
 * the AUX interface test reports "clock line stuck low" (01h), so i8042_check_aux() concludes
 * there is no AUX port without the 250 ms IRQ 12 delivery test or psmouse probe timeouts.
 *
 * Scancodes: the controller starts with translation off (command byte bit 6 clear), so Linux
 * uses the keyboard directly in scan code set 2 (i8042.c: "If the chip is configured into
 * nontranslated mode by the BIOS, don't bother enabling translating"). If a guest turns
 * translation on, injected keys are sent in set 1, as a translating controller would deliver.
 */

import type { BusDevice } from '../bus.js';
import type { IrqLine } from '../irq.js';

/** Ports and ISA IRQ (IBM PC/AT Technical Reference, I/O address map: 60h data, 64h status/command). */
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
export const I8042_KEYBOARD_IRQ = 1;
/**
 * Registering the whole device as one range spans 0x60-0x64 (Firecracker does this). That also
 * claims 0x61-0x63, where port 0x61 is the PIT/speaker "port B"; to leave it free, register
 * `dataPort` at 0x60 and `commandPort` at 0x64 as two one-port ranges instead.
 */
export const I8042_PORT_BASE = I8042_DATA_PORT;
export const I8042_PORT_COUNT = I8042_COMMAND_PORT - I8042_DATA_PORT + 1;

const DATA_PORT = 0; // 0x60
const COMMAND_PORT = 4; // 0x64

// Status register bits (PC/AT Technical Reference, 8042 status register).
const STATUS_OUTPUT_FULL = 0x01; // OBF: a byte waits at port 0x60
const STATUS_SYSTEM_FLAG = 0x04; // copy of command byte bit 2 (self-test passed)
const STATUS_LAST_WRITE_WAS_COMMAND = 0x08; // A2: last write went to 0x64
const STATUS_NOT_INHIBITED = 0x10; // keyboard inhibit switch: 1 = not inhibited
// Bit 1 (input buffer full) stays 0: we consume every write at once. Bit 5 (AUX data), bit 6
// (timeout) and bit 7 (parity error) stay 0: there is no AUX device and no serial link.

// Command byte ("controller configuration byte") bits.
const CTR_KEYBOARD_INTERRUPT = 0x01;
const CTR_SYSTEM_FLAG = 0x04;
const CTR_KEYBOARD_DISABLED = 0x10;
const CTR_AUX_DISABLED = 0x20;
const CTR_TRANSLATE = 0x40;
/** Power-on command byte: keyboard interrupt on, self-test passed, AUX disabled, no translation. */
const CTR_POWER_ON = CTR_KEYBOARD_INTERRUPT | CTR_SYSTEM_FLAG | CTR_AUX_DISABLED;

// Controller commands (written to 0x64).
const CMD_READ_COMMAND_BYTE = 0x20;
const CMD_WRITE_COMMAND_BYTE = 0x60;
const CMD_DISABLE_AUX = 0xa7;
const CMD_ENABLE_AUX = 0xa8;
const CMD_TEST_AUX_INTERFACE = 0xa9;
const CMD_SELF_TEST = 0xaa;
const CMD_TEST_KEYBOARD_INTERFACE = 0xab;
const CMD_DISABLE_KEYBOARD = 0xad;
const CMD_ENABLE_KEYBOARD = 0xae;
const CMD_READ_INPUT_PORT = 0xc0;
const CMD_READ_OUTPUT_PORT = 0xd0;
const CMD_WRITE_OUTPUT_PORT = 0xd1;
const CMD_WRITE_KEYBOARD_OUTPUT = 0xd2;
const CMD_WRITE_AUX_OUTPUT = 0xd3;
const CMD_WRITE_TO_AUX = 0xd4;
/** Commands F0h-FFh pulse output-port bits 3:0 low for those bits that are 0 in the command. */
const CMD_PULSE_OUTPUT_PORT = 0xf0;
/** FEh: pulse bit 0, the CPU reset line. */
export const I8042_CMD_RESET_CPU = 0xfe;

const SELF_TEST_PASSED = 0x55;
const INTERFACE_TEST_OK = 0x00;
const INTERFACE_TEST_CLOCK_STUCK_LOW = 0x01;
/** Input port: bit 7 = keyboard not inhibited, bit 5 = no manufacturing jumper. */
const INPUT_PORT_VALUE = 0xa0;

// Output port bits.
const OUTPUT_PORT_RESET = 0x01; // 0 = CPU held in reset
const OUTPUT_PORT_A20 = 0x02;
/** Power-on output port: not in reset, A20 enabled, unused bits high (as QEMU initialises it). */
const OUTPUT_PORT_POWER_ON = 0xcc | OUTPUT_PORT_RESET | OUTPUT_PORT_A20;

// Keyboard commands (written to 0x60 when no controller parameter is expected) and replies.
const KBD_SET_LEDS = 0xed;
const KBD_ECHO = 0xee;
const KBD_SCAN_CODE_SET = 0xf0;
const KBD_READ_ID = 0xf2;
const KBD_SET_TYPEMATIC = 0xf3;
const KBD_RESET = 0xff;
const KBD_ACK = 0xfa;
const KBD_BAT_PASSED = 0xaa;
/** MF2 keyboard ID; a translating controller delivers the second byte as 41h. */
const KBD_ID_FIRST = 0xab;
const KBD_ID_SECOND = 0x83;
const KBD_ID_SECOND_TRANSLATED = 0x41;
const KBD_DEFAULT_SCAN_CODE_SET = 2;

/** Ctrl-Alt-Del make codes: left Ctrl, left Alt, Delete (extended). Set 2 and its set 1 translation. */
const CTRL_ALT_DEL_SET2 = [0x14, 0x11, 0xe0, 0x71] as const;
const CTRL_ALT_DEL_SET1 = [0x1d, 0x38, 0xe0, 0x53] as const;

/** Output buffer depth; the real 8042 holds one byte, the keyboard a 16-byte buffer behind it. */
const OUTPUT_QUEUE_SIZE = 16;

/** What the next data-port write is for. */
const enum PendingParameter {
  None,
  CommandByte,
  OutputPort,
  KeyboardOutput,
  AuxOutput,
  AuxDevice,
  KeyboardLeds,
  KeyboardScanCodeSet,
  KeyboardTypematic,
}

export interface I8042Options {
  /** The keyboard interrupt (ISA IRQ 1). */
  irq: IrqLine;
  /** The guest pulsed the CPU reset line (command FEh, or output port bit 0 written as 0). */
  onReset: () => void;
}

export class I8042 implements BusDevice {
  private readonly irq: IrqLine;
  private readonly onReset: () => void;
  private commandByte = CTR_POWER_ON;
  private outputPort = OUTPUT_PORT_POWER_ON;
  private lastWriteWasCommand = false;
  private pending = PendingParameter.None;
  private irqLevel = false;

  private readonly outputQueue = new Uint8Array(OUTPUT_QUEUE_SIZE);
  private outputHead = 0;
  private outputCount = 0;

  /** Number of resets requested, for tests and metrics. */
  resetCount = 0;

  /** Port 0x60 alone, for a one-port bus range. */
  readonly dataPort: BusDevice;
  /** Port 0x64 alone, for a one-port bus range. */
  readonly commandPort: BusDevice;

  constructor(options: I8042Options) {
    this.irq = options.irq;
    this.onReset = options.onReset;
    this.dataPort = {
      read: (_offset, data) => this.read(DATA_PORT, data),
      write: (_offset, data) => this.write(DATA_PORT, data),
    };
    this.commandPort = {
      read: (_offset, data) => this.read(COMMAND_PORT, data),
      write: (_offset, data) => this.write(COMMAND_PORT, data),
    };
  }

  read(offset: number, data: Uint8Array): void {
    if (offset === DATA_PORT) data[0] = this.readData();
    else if (offset === COMMAND_PORT) data[0] = this.status();
    else data[0] = 0xff; // 0x61-0x63 are not ours (0x61 is the PIT/speaker port B)
  }

  write(offset: number, data: Uint8Array): void {
    const value = data[0] ?? 0;
    if (offset === DATA_PORT) {
      this.lastWriteWasCommand = false;
      this.writeData(value);
    } else if (offset === COMMAND_PORT) {
      this.lastWriteWasCommand = true;
      this.writeCommand(value);
    }
  }

  /**
   * Inject Ctrl-Alt-Del key presses. Returns false (and queues nothing) if the output buffer
   * lacks room for the whole sequence.
   */
  sendCtrlAltDel(): boolean {
    const codes = this.commandByte & CTR_TRANSLATE ? CTRL_ALT_DEL_SET1 : CTRL_ALT_DEL_SET2;
    if (OUTPUT_QUEUE_SIZE - this.outputCount < codes.length) return false;
    for (const code of codes) this.push(code);
    this.updateIrq();
    return true;
  }

  private status(): number {
    let status = STATUS_NOT_INHIBITED;
    if (this.outputCount > 0) status |= STATUS_OUTPUT_FULL;
    if (this.commandByte & CTR_SYSTEM_FLAG) status |= STATUS_SYSTEM_FLAG;
    if (this.lastWriteWasCommand) status |= STATUS_LAST_WRITE_WAS_COMMAND;
    return status;
  }

  private readData(): number {
    if (this.outputCount === 0) return 0;
    const value = this.outputQueue[this.outputHead]!;
    this.outputHead = (this.outputHead + 1) % OUTPUT_QUEUE_SIZE;
    this.outputCount--;
    // Drop the line so the next byte, if any, gives the edge-triggered ISA IRQ a fresh edge.
    this.setIrq(false);
    this.updateIrq();
    return value;
  }

  private writeCommand(command: number): void {
    // A new command abandons a parameter the previous one was waiting for.
    this.pending = PendingParameter.None;
    switch (command) {
      case CMD_READ_COMMAND_BYTE:
        this.reply(this.commandByte);
        return;
      case CMD_WRITE_COMMAND_BYTE:
        this.pending = PendingParameter.CommandByte;
        return;
      case CMD_DISABLE_AUX:
        this.commandByte |= CTR_AUX_DISABLED;
        return;
      case CMD_ENABLE_AUX:
        this.commandByte &= ~CTR_AUX_DISABLED;
        return;
      case CMD_TEST_AUX_INTERFACE:
        this.reply(INTERFACE_TEST_CLOCK_STUCK_LOW); // no AUX port: see the file comment
        return;
      case CMD_SELF_TEST:
        this.commandByte |= CTR_SYSTEM_FLAG;
        this.reply(SELF_TEST_PASSED);
        return;
      case CMD_TEST_KEYBOARD_INTERFACE:
        this.reply(INTERFACE_TEST_OK);
        return;
      case CMD_DISABLE_KEYBOARD:
        this.commandByte |= CTR_KEYBOARD_DISABLED;
        return;
      case CMD_ENABLE_KEYBOARD:
        this.commandByte &= ~CTR_KEYBOARD_DISABLED;
        return;
      case CMD_READ_INPUT_PORT:
        this.reply(INPUT_PORT_VALUE);
        return;
      case CMD_READ_OUTPUT_PORT:
        this.reply(this.outputPort);
        return;
      case CMD_WRITE_OUTPUT_PORT:
        this.pending = PendingParameter.OutputPort;
        return;
      case CMD_WRITE_KEYBOARD_OUTPUT:
        this.pending = PendingParameter.KeyboardOutput;
        return;
      case CMD_WRITE_AUX_OUTPUT:
        this.pending = PendingParameter.AuxOutput;
        return;
      case CMD_WRITE_TO_AUX:
        this.pending = PendingParameter.AuxDevice;
        return;
      default:
        if ((command & CMD_PULSE_OUTPUT_PORT) === CMD_PULSE_OUTPUT_PORT && !(command & OUTPUT_PORT_RESET)) {
          this.requestReset();
        }
        // Other commands (password, test inputs, pulses of bits 1-3) have no effect here.
        return;
    }
  }

  private writeData(value: number): void {
    const pending = this.pending;
    this.pending = PendingParameter.None;
    switch (pending) {
      case PendingParameter.CommandByte:
        this.commandByte = value;
        this.updateIrq();
        return;
      case PendingParameter.OutputPort:
        this.outputPort = value;
        if (!(value & OUTPUT_PORT_RESET)) this.requestReset();
        return;
      case PendingParameter.KeyboardOutput:
      case PendingParameter.AuxOutput:
        // D2h puts a byte in the output buffer as if the keyboard sent it. D3h would do so as if
        // from the AUX device; we have none, so it arrives without the AUX flag (see file comment).
        this.reply(value);
        return;
      case PendingParameter.AuxDevice:
        return; // nothing is attached to the AUX port
      case PendingParameter.KeyboardLeds:
      case PendingParameter.KeyboardTypematic:
        this.reply(KBD_ACK);
        return;
      case PendingParameter.KeyboardScanCodeSet:
        this.reply(KBD_ACK);
        if (value === 0) this.replyMore(KBD_DEFAULT_SCAN_CODE_SET); // 0 = report the current set
        return;
      case PendingParameter.None:
        this.keyboardCommand(value);
        return;
    }
  }

  /** A byte sent to the keyboard itself. Our keyboard acknowledges everything. */
  private keyboardCommand(command: number): void {
    // Writing to the keyboard re-enables it (the 8042 clears the disable bit when sending).
    this.commandByte &= ~CTR_KEYBOARD_DISABLED;
    switch (command) {
      case KBD_SET_LEDS:
        this.pending = PendingParameter.KeyboardLeds;
        this.reply(KBD_ACK);
        return;
      case KBD_ECHO:
        this.reply(KBD_ECHO);
        return;
      case KBD_SCAN_CODE_SET:
        this.pending = PendingParameter.KeyboardScanCodeSet;
        this.reply(KBD_ACK);
        return;
      case KBD_READ_ID:
        this.reply(KBD_ACK);
        this.replyMore(KBD_ID_FIRST);
        this.replyMore(this.commandByte & CTR_TRANSLATE ? KBD_ID_SECOND_TRANSLATED : KBD_ID_SECOND);
        return;
      case KBD_SET_TYPEMATIC:
        this.pending = PendingParameter.KeyboardTypematic;
        this.reply(KBD_ACK);
        return;
      case KBD_RESET:
        this.reply(KBD_ACK);
        this.replyMore(KBD_BAT_PASSED);
        return;
      default:
        // Enable/disable scanning, set defaults, resend and the rest: acknowledged.
        this.reply(KBD_ACK);
        return;
    }
  }

  private requestReset(): void {
    this.resetCount++;
    this.onReset();
  }

  /** Replace whatever is waiting with one reply byte (a new command supersedes stale output). */
  private reply(value: number): void {
    this.outputHead = 0;
    this.outputCount = 0;
    this.push(value);
    this.updateIrq();
  }

  /** Append a further reply byte after `reply`. */
  private replyMore(value: number): void {
    this.push(value);
    this.updateIrq();
  }

  private push(value: number): void {
    if (this.outputCount === OUTPUT_QUEUE_SIZE) return;
    this.outputQueue[(this.outputHead + this.outputCount) % OUTPUT_QUEUE_SIZE] = value;
    this.outputCount++;
  }

  private updateIrq(): void {
    this.setIrq(this.outputCount > 0 && (this.commandByte & CTR_KEYBOARD_INTERRUPT) !== 0);
  }

  private setIrq(level: boolean): void {
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    this.irq.setLevel(level);
  }
}
