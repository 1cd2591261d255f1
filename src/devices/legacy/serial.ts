/**
 * 16550A UART (the PC's COM port), as Linux's 8250 driver expects to find it.
 *
 * Register map and bit meanings follow the National Semiconductor / TI PC16550D datasheet
 * (section 8, "Registers", tables II-IV). Cross-checked against what Linux probes in
 * drivers/tty/serial/8250/8250_port.c `autoconfig()`, `autoconfig_16550a()` and
 * `serial8250_do_startup()`:
 *  - IER bits 7:4 read back as 0 (the "IER test"; bit 6 must not stick or we become an XScale);
 *  - MCR = LOOP | OUT2 | RTS makes MSR[7:4] read 0x90 (the loopback test);
 *  - after FCR = 0x01, IIR[7:6] = 11 (FIFOs enabled: a 16550A);
 *  - IIR bit 5 never set (otherwise a TI16750), bits 4 never set (otherwise NS SuperIO);
 *  - reading offset 2 with DLAB set returns IIR, not an EFR (so no ST16C650);
 *  - a 16-byte FIFO in loopback (size_fifo() counts 16, not 64);
 *  - enabling the THR-empty interrupt raises it at once, and again after IER is cleared and
 *    re-enabled (otherwise Linux sets UART_BUG_THRE and polls with a timer).
 *
 * Deliberate simplifications, each because a VMM transmits instantly:
 *  - The transmitter never holds a byte: LSR.THRE and LSR.TEMT always read 1. A guest that spins
 *    on THRE (printk's console path) never waits.
 *  - The character-timeout interrupt (IIR 0xC) is pending as soon as the RX FIFO holds fewer
 *    bytes than the trigger level and the host has no more input queued: "no character arrived for
 *    four character times" is exactly "the host input queue is empty" when input is delivered
 *    without delay.
 *  - No parity/framing errors or breaks are ever received; LSR.PE/FE/BI and LSR bit 7 stay 0.
 *  - The IRQ output is not gated by MCR.OUT2 (as in QEMU and Firecracker): every PC guest sets
 *    OUT2 anyway, and gating only breaks guests that forget.
 *
 * Output is buffered: transmitted bytes collect in a preallocated buffer and go to the sink when
 * a newline is written, when the buffer is full, or on a microtask queued by the first byte
 * after a flush. One sink call per line keeps console output line-atomic and cheap; the microtask
 * catches prompts and partial lines. `flush()` forces it.
 */

import type { BusDevice } from '../bus.js';
import type { IrqLine } from '../irq.js';

/** Conventional PC COM1 base port and ISA IRQ (IBM PC/AT Technical Reference, I/O address map). */
export const COM1_PORT_BASE = 0x3f8;
export const COM1_IRQ = 4;
/** COM2, should a second UART be wanted. */
export const COM2_PORT_BASE = 0x2f8;
export const COM2_IRQ = 3;
/** A 16550 decodes eight consecutive ports (PC16550D, A0-A2 register select). */
export const SERIAL_PORT_COUNT = 8;

// Register offsets (PC16550D table II). Several share an offset, selected by direction or DLAB.
const RBR_THR_DLL = 0; // RBR on read, THR on write; DLL when LCR.DLAB = 1
const IER_DLM = 1; // IER; DLM when LCR.DLAB = 1
const IIR_FCR = 2; // IIR on read, FCR on write
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

// IER bits (PC16550D 8.3). Bits 7:4 are always 0.
const IER_ERBFI = 0x01; // enable received data available (and character timeout) interrupt
const IER_ETBEI = 0x02; // enable transmitter holding register empty interrupt
const IER_ELSI = 0x04; // enable receiver line status interrupt
const IER_EDSSI = 0x08; // enable modem status interrupt
const IER_WRITABLE = 0x0f;

// IIR values (PC16550D table IV): bit 0 = 1 means no interrupt pending; bits 3:1 identify the
// highest-priority source; bits 7:6 are set when FCR bit 0 (FIFO enable) is set.
const IIR_NO_INTERRUPT = 0x01;
const IIR_RECEIVER_LINE_STATUS = 0x06; // priority 1
const IIR_RECEIVED_DATA_AVAILABLE = 0x04; // priority 2
const IIR_CHARACTER_TIMEOUT = 0x0c; // priority 2
const IIR_THR_EMPTY = 0x02; // priority 3
const IIR_MODEM_STATUS = 0x00; // priority 4
const IIR_FIFOS_ENABLED = 0xc0;

// FCR bits (PC16550D 8.4).
const FCR_FIFO_ENABLE = 0x01;
const FCR_RX_FIFO_RESET = 0x02;
// FCR bit 2 (transmit FIFO reset) needs no action: we never hold transmit bytes.
const FCR_RX_TRIGGER_SHIFT = 6;
/** RX trigger levels selected by FCR bits 7:6 (PC16550D table III). */
const RX_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

// LCR bits (PC16550D 8.5).
const LCR_DLAB = 0x80; // divisor latch access bit

// MCR bits (PC16550D 8.6). Bits 7:5 are always 0.
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MCR_WRITABLE = 0x1f;

// LSR bits (PC16550D 8.7).
const LSR_DR = 0x01; // data ready
const LSR_OE = 0x02; // overrun error
const LSR_THRE = 0x20; // transmitter holding register empty
const LSR_TEMT = 0x40; // transmitter empty

// MSR bits (PC16550D 8.8): bits 3:0 are deltas since the last MSR read, bits 7:4 the lines.
const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04; // trailing edge of ring indicator (RI went from 1 to 0)
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
const MSR_DELTA_MASK = 0x0f;
/**
 * Modem inputs when not in loopback: a null-modem terminal that is always there and ready
 * (carrier detect, data set ready, clear to send), as QEMU and Firecracker present them.
 */
const MSR_LINES_CONNECTED = MSR_DCD | MSR_DSR | MSR_CTS;

/** Receive FIFO depth of the 16550A (PC16550D 1.0, "16-byte FIFOs"). */
const RX_FIFO_SIZE = 16;
/** Power-on divisor: 12 = 9600 baud from the PC's 1.8432 MHz clock (PC16550D table I). */
const DEFAULT_DIVISOR = 12;
const NEWLINE = 0x0a;

export interface Serial16550Options {
  /** The UART's interrupt line (ISA IRQ 4 for COM1). */
  irq: IrqLine;
  /**
   * Receives transmitted bytes. Each call gets a fresh copy the sink may keep (stream writes
   * hold on to their chunk). Must not throw. Without a sink, output is discarded.
   */
  output?: (bytes: Uint8Array) => void;
  /** Host-side input queue in front of the 16-byte FIFO. Default 4096 bytes. */
  inputQueueCapacity?: number;
  /** Transmit buffer size; reaching it flushes. Default 4096 bytes. */
  outputBufferSize?: number;
}

export class Serial16550 implements BusDevice {
  private readonly irq: IrqLine;
  private output: ((bytes: Uint8Array) => void) | undefined;

  // Registers.
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private divisor = DEFAULT_DIVISOR;
  private fifoEnabled = false;
  private rxTriggerLevel: number = RX_TRIGGER_LEVELS[0];
  /** LSR.OE, latched until LSR is read. */
  private overrun = false;
  /** MSR line state (bits 7:4) and deltas (bits 3:0). */
  private msr = MSR_LINES_CONNECTED;
  /** The THR-empty interrupt latch: set when THR empties, cleared by an IIR read naming it or a THR write. */
  private thrEmptyInterrupt = false;
  private irqLevel = false;

  // Receive FIFO: a ring of RX_FIFO_SIZE; without FIFO mode (16450 mode) only one byte is held.
  private readonly rxFifo = new Uint8Array(RX_FIFO_SIZE);
  private rxHead = 0;
  private rxCount = 0;

  // Host input queue: a ring feeding the FIFO as the guest drains it.
  private readonly inputQueue: Uint8Array;
  private inputHead = 0;
  private inputCount = 0;
  /** Set when enqueueInput turned bytes away; cleared when space is announced. */
  private inputWasRefused = false;
  /**
   * Called (synchronously, from the guest's RBR read) when space frees up after `enqueueInput`
   * could not take everything. It may call `enqueueInput` again.
   */
  onInputSpace: (() => void) | undefined;

  // Transmit buffer.
  private readonly txBuffer: Uint8Array;
  private txCount = 0;
  private flushQueued = false;
  private readonly flushFromMicrotask = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  constructor(options: Serial16550Options) {
    this.irq = options.irq;
    this.output = options.output;
    this.inputQueue = new Uint8Array(Math.max(1, options.inputQueueCapacity ?? 4096));
    this.txBuffer = new Uint8Array(Math.max(1, options.outputBufferSize ?? 4096));
  }

  /** Replace the output sink (undefined discards). Buffered bytes go to the old sink first. */
  setOutput(output: ((bytes: Uint8Array) => void) | undefined): void {
    this.flush();
    this.output = output;
  }

  // ---- Guest side -------------------------------------------------------------------------

  read(offset: number, data: Uint8Array): void {
    data[0] = this.readRegister(offset);
  }

  write(offset: number, data: Uint8Array): void {
    // The UART is byte-wide; a wider access writes its low byte (what the ISA bus would latch).
    this.writeRegister(offset, data[0] ?? 0);
  }

  private readRegister(offset: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case RBR_THR_DLL:
        return dlab ? this.divisor & 0xff : this.readReceiveBuffer();
      case IER_DLM:
        return dlab ? (this.divisor >>> 8) & 0xff : this.ier;
      case IIR_FCR:
        return this.readInterruptIdentification();
      case LCR:
        return this.lcr;
      case MCR:
        return this.mcr;
      case LSR:
        return this.readLineStatus();
      case MSR:
        return this.readModemStatus();
      case SCR:
        return this.scr;
      default:
        return 0xff; // outside the 8 registers: nothing drives the bus
    }
  }

  private writeRegister(offset: number, value: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (offset) {
      case RBR_THR_DLL:
        if (dlab) this.divisor = (this.divisor & 0xff00) | value;
        else this.transmit(value);
        break;
      case IER_DLM:
        if (dlab) this.divisor = (this.divisor & 0x00ff) | (value << 8);
        else this.writeInterruptEnable(value);
        break;
      case IIR_FCR:
        this.writeFifoControl(value);
        break;
      case LCR:
        this.lcr = value;
        break;
      case MCR:
        this.writeModemControl(value);
        break;
      case LSR:
      case MSR:
        break; // read-only in practice (PC16550D: writing LSR/MSR is for factory test only)
      case SCR:
        this.scr = value;
        break;
      default:
        break;
    }
  }

  private readReceiveBuffer(): number {
    if (this.rxCount === 0) return 0;
    const value = this.rxFifo[this.rxHead]!;
    this.rxHead = (this.rxHead + 1) % RX_FIFO_SIZE;
    this.rxCount--;
    this.refillFromInput();
    this.updateIrq();
    return value;
  }

  private transmit(value: number): void {
    // Writing THR clears the THR-empty interrupt; the byte leaves at once, so THR is empty again
    // and the interrupt re-arms (PC16550D 8.2: THRE interrupt set when THR is emptied).
    this.thrEmptyInterrupt = true;
    if (this.mcr & MCR_LOOP) {
      // Loopback: the transmitter output is wired to the receiver input (PC16550D 8.6, MCR bit 4).
      this.receiveByte(value);
    } else {
      this.bufferOutput(value);
    }
    this.updateIrq();
  }

  private writeInterruptEnable(value: number): void {
    const enabling = value & ~this.ier;
    this.ier = value & IER_WRITABLE;
    // Enabling ETBEI while THR is empty (always, for us) raises the THR-empty interrupt: the
    // behaviour Linux's THRE test in serial8250_do_startup() checks.
    if (enabling & IER_ETBEI) this.thrEmptyInterrupt = true;
    this.updateIrq();
  }

  private writeFifoControl(value: number): void {
    const enable = (value & FCR_FIFO_ENABLE) !== 0;
    // Changing FCR bit 0 clears both FIFOs (PC16550D 8.4, FCR bit 0).
    if (enable !== this.fifoEnabled || value & FCR_RX_FIFO_RESET) this.clearReceiveFifo();
    this.fifoEnabled = enable;
    this.rxTriggerLevel = RX_TRIGGER_LEVELS[(value >>> FCR_RX_TRIGGER_SHIFT) & 3]!;
    this.refillFromInput();
    this.updateIrq();
  }

  private writeModemControl(value: number): void {
    const wasLoop = (this.mcr & MCR_LOOP) !== 0;
    this.mcr = value & MCR_WRITABLE;
    this.setModemLines(this.modemInputLines());
    // Leaving loopback reconnects the receiver to the host input.
    if (wasLoop && !(this.mcr & MCR_LOOP)) this.refillFromInput();
    this.updateIrq();
  }

  /**
   * The modem inputs as the UART sees them. In loopback they are the modem outputs wired back
   * (PC16550D 8.6: CTS<-RTS, DSR<-DTR, RI<-OUT1, DCD<-OUT2); otherwise our always-ready terminal.
   */
  private modemInputLines(): number {
    if (!(this.mcr & MCR_LOOP)) return MSR_LINES_CONNECTED;
    let lines = 0;
    if (this.mcr & MCR_RTS) lines |= MSR_CTS;
    if (this.mcr & MCR_DTR) lines |= MSR_DSR;
    if (this.mcr & MCR_OUT1) lines |= MSR_RI;
    if (this.mcr & MCR_OUT2) lines |= MSR_DCD;
    return lines;
  }

  /** Set MSR[7:4] and accumulate the delta bits the change implies (PC16550D 8.8). */
  private setModemLines(lines: number): void {
    const old = this.msr;
    const changed = (old ^ lines) & 0xf0;
    let deltas = 0;
    if (changed & MSR_CTS) deltas |= MSR_DCTS;
    if (changed & MSR_DSR) deltas |= MSR_DDSR;
    if (changed & MSR_DCD) deltas |= MSR_DDCD;
    if (old & MSR_RI && !(lines & MSR_RI)) deltas |= MSR_TERI; // trailing edge only
    this.msr = lines | (old & MSR_DELTA_MASK) | deltas;
  }

  private readInterruptIdentification(): number {
    const source = this.highestPendingInterrupt();
    // Reading IIR when THR-empty is the reported source clears it (PC16550D table IV).
    if (source === IIR_THR_EMPTY) {
      this.thrEmptyInterrupt = false;
      this.updateIrq();
    }
    return (this.fifoEnabled ? IIR_FIFOS_ENABLED : 0) | source;
  }

  private readLineStatus(): number {
    let lsr = LSR_THRE | LSR_TEMT;
    if (this.rxCount > 0) lsr |= LSR_DR;
    if (this.overrun) lsr |= LSR_OE;
    // Reading LSR clears the error bits and with them the line status interrupt.
    if (this.overrun) {
      this.overrun = false;
      this.updateIrq();
    }
    return lsr;
  }

  private readModemStatus(): number {
    const msr = this.msr;
    // Reading MSR clears the delta bits and with them the modem status interrupt.
    if (msr & MSR_DELTA_MASK) {
      this.msr = msr & ~MSR_DELTA_MASK;
      this.updateIrq();
    }
    return msr;
  }

  /** The IIR identification (bits 3:0) of the highest-priority enabled pending interrupt. */
  private highestPendingInterrupt(): number {
    const ier = this.ier;
    if (ier & IER_ELSI && this.overrun) return IIR_RECEIVER_LINE_STATUS;
    if (ier & IER_ERBFI && this.rxCount > 0) {
      if (!this.fifoEnabled || this.rxCount >= this.rxTriggerLevel) return IIR_RECEIVED_DATA_AVAILABLE;
      // Below the trigger level: the timeout fires once no more characters are coming.
      if (this.inputCount === 0 || this.mcr & MCR_LOOP) return IIR_CHARACTER_TIMEOUT;
    }
    if (ier & IER_ETBEI && this.thrEmptyInterrupt) return IIR_THR_EMPTY;
    if (ier & IER_EDSSI && this.msr & MSR_DELTA_MASK) return IIR_MODEM_STATUS;
    return IIR_NO_INTERRUPT;
  }

  private updateIrq(): void {
    const level = this.highestPendingInterrupt() !== IIR_NO_INTERRUPT;
    if (level !== this.irqLevel) {
      this.irqLevel = level;
      this.irq.setLevel(level);
    }
  }

  // ---- Receive path -----------------------------------------------------------------------

  private receiveCapacity(): number {
    return this.fifoEnabled ? RX_FIFO_SIZE : 1;
  }

  /** A byte arriving at the receiver. With the FIFO (or holding register) full it is lost: overrun. */
  private receiveByte(value: number): void {
    if (this.rxCount >= this.receiveCapacity()) {
      // PC16550D 8.7 LSR bit 1: in FIFO mode the FIFO stays intact and the character in the shift
      // register is lost; without FIFOs the new character overwrites the one in RBR.
      this.overrun = true;
      if (!this.fifoEnabled) this.rxFifo[this.rxHead] = value;
      return;
    }
    this.rxFifo[(this.rxHead + this.rxCount) % RX_FIFO_SIZE] = value;
    this.rxCount++;
  }

  private clearReceiveFifo(): void {
    this.rxHead = 0;
    this.rxCount = 0;
  }

  /** Move host input into the FIFO while it has room. The receiver is disconnected in loopback. */
  private refillFromInput(): void {
    if (this.mcr & MCR_LOOP) return;
    const capacity = this.receiveCapacity();
    let moved = false;
    while (this.inputCount > 0 && this.rxCount < capacity) {
      this.receiveByte(this.inputQueue[this.inputHead]!);
      this.inputHead = (this.inputHead + 1) % this.inputQueue.length;
      this.inputCount--;
      moved = true;
    }
    if (moved && this.inputWasRefused) {
      this.inputWasRefused = false;
      this.onInputSpace?.();
    }
  }

  // ---- Host side --------------------------------------------------------------------------

  /**
   * Queue bytes for the guest to receive. Never overruns the FIFO: bytes wait in the input queue
   * until the guest reads. Returns how many bytes were accepted (from the start of `bytes`); when
   * fewer than all, `onInputSpace` is called once room frees up.
   */
  enqueueInput(bytes: Uint8Array): number {
    const queue = this.inputQueue;
    const receiverConnected = !(this.mcr & MCR_LOOP);
    const capacity = this.receiveCapacity();
    let accepted = 0;
    for (; accepted < bytes.length; accepted++) {
      const value = bytes[accepted]!;
      if (receiverConnected && this.inputCount === 0 && this.rxCount < capacity) {
        this.receiveByte(value); // straight into the FIFO while nothing waits ahead of it
      } else if (this.inputCount < queue.length) {
        queue[(this.inputHead + this.inputCount) % queue.length] = value;
        this.inputCount++;
      } else {
        this.inputWasRefused = true;
        break;
      }
    }
    this.updateIrq();
    return accepted;
  }

  /** Bytes waiting for the guest: in the host queue plus in the receive FIFO. */
  get pendingInput(): number {
    return this.inputCount + this.rxCount;
  }

  /** Whether the interrupt line is currently asserted. */
  get interruptAsserted(): boolean {
    return this.irqLevel;
  }

  /**
   * The registers and interrupt state in one line, read without the side effects a guest read
   * has (IIR and LSR reads clear bits): for a VMM's report on a guest that stopped talking.
   */
  describeState(): string {
    const hex = (n: number): string => `0x${n.toString(16).padStart(2, '0')}`;
    return `ier=${hex(this.ier)} iir=${hex((this.fifoEnabled ? IIR_FIFOS_ENABLED : 0) | this.highestPendingInterrupt())} lcr=${hex(this.lcr)} mcr=${hex(this.mcr)} thre_latch=${this.thrEmptyInterrupt ? 1 : 0} irq=${this.irqLevel ? 'high' : 'low'} rx_fifo=${this.rxCount} rx_queued=${this.inputCount} tx_buffered=${this.txCount}`;
  }

  /** The baud-rate divisor the guest programmed (DLM:DLL). Informational only. */
  get baudDivisor(): number {
    return this.divisor;
  }

  private bufferOutput(value: number): void {
    this.txBuffer[this.txCount++] = value;
    if (value === NEWLINE || this.txCount === this.txBuffer.length) {
      this.flush();
    } else if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushFromMicrotask);
    }
  }

  /** Hand buffered output to the sink now. */
  flush(): void {
    if (this.txCount === 0) return;
    const bytes = this.txBuffer.slice(0, this.txCount);
    this.txCount = 0;
    this.output?.(bytes);
  }
}
