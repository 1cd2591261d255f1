/**
 * Connect a Serial16550 to the host terminal: guest output to stdout, stdin to the guest.
 *
 * When stdin is a TTY it is put in raw mode, so keys such as Ctrl-C reach the guest instead of
 * killing the VMM, and the TTY mode is restored on detach and on process exit. As in QEMU's
 * `-nographic`, Ctrl-A is an escape prefix in interactive mode:
 *   Ctrl-A x       quit: calls `onQuit` (the VMM's job to stop the VM)
 *   Ctrl-A Ctrl-A  send one Ctrl-A to the guest
 *   Ctrl-A other   send both bytes to the guest (nothing is swallowed)
 * Escapes are off when stdin is not a TTY (piped input goes through byte for byte) unless
 * `escapes: true` is passed.
 *
 * Back-pressure: bytes the UART's input queue cannot take are held here and stdin is paused
 * until the guest drains the queue.
 */

/** What this helper needs of a UART (Serial16550 fits, and so does MicroVm's `console`). */
export interface SerialPort {
  /** Replace where the guest's transmitted bytes go (undefined discards). */
  setOutput(output: ((bytes: Uint8Array) => void) | undefined): void;
  /** Queue bytes for the guest to receive; returns how many were taken. */
  enqueueInput(bytes: Uint8Array): number;
  /** Called once room frees up after enqueueInput took fewer bytes than offered. */
  onInputSpace: (() => void) | undefined;
}

const CTRL_A = 0x01;
const ESCAPE_QUIT = 0x78; // 'x'

/** The parts of a readable stream this helper uses (process.stdin fits). */
export interface TerminalInput {
  on(event: 'data', listener: (chunk: Buffer | string) => void): unknown;
  off(event: 'data', listener: (chunk: Buffer | string) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
  isRaw?: boolean;
}

/** The parts of a writable stream this helper uses (process.stdout fits). */
export interface TerminalOutput {
  write(chunk: Uint8Array): unknown;
}

export interface AttachSerialOptions {
  stdin: TerminalInput;
  stdout: TerminalOutput;
  /** Ctrl-A x was typed. Default: nothing beyond detaching. */
  onQuit?: () => void;
  /** Recognise Ctrl-A escapes. Default: only when stdin is a TTY. */
  escapes?: boolean;
}

export interface SerialTerminalAttachment {
  /** Stop forwarding, restore the TTY mode, release stdin. Idempotent. */
  detach(): void;
}

export function attachSerialToTerminal(serial: SerialPort, options: AttachSerialOptions): SerialTerminalAttachment {
  const { stdin, stdout } = options;
  const isTTY = stdin.isTTY === true && typeof stdin.setRawMode === 'function';
  const escapes = options.escapes ?? isTTY;
  const wasRaw = stdin.isRaw === true;
  let detached = false;
  let escapePending = false;
  /** Input the UART could not take yet, oldest first. */
  let held: Uint8Array[] = [];

  serial.setOutput((bytes) => {
    stdout.write(bytes);
  });

  const restoreTty = (): void => {
    if (isTTY) stdin.setRawMode!(wasRaw);
  };
  if (isTTY) stdin.setRawMode!(true);
  process.once('exit', restoreTty);

  /** Offer held input to the UART; pause stdin while any remains. */
  const pump = (): void => {
    while (held.length > 0) {
      const chunk = held[0]!;
      const accepted = serial.enqueueInput(chunk);
      if (accepted < chunk.length) {
        held[0] = chunk.subarray(accepted);
        stdin.pause();
        return;
      }
      held.shift();
    }
    if (!detached) stdin.resume();
  };
  serial.onInputSpace = pump;

  const send = (bytes: Uint8Array): void => {
    if (bytes.length === 0) return;
    held.push(bytes);
    if (held.length === 1) pump();
    else stdin.pause();
  };

  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    if (!escapes) {
      send(Uint8Array.from(bytes));
      return;
    }
    const forward: number[] = [];
    for (const b of bytes) {
      if (escapePending) {
        escapePending = false;
        if (b === ESCAPE_QUIT) {
          send(Uint8Array.from(forward));
          attachment.detach();
          options.onQuit?.();
          return;
        }
        if (b === CTRL_A) forward.push(CTRL_A);
        else forward.push(CTRL_A, b);
      } else if (b === CTRL_A) {
        escapePending = true; // decide on the next byte, which may come in the next chunk
      } else {
        forward.push(b);
      }
    }
    send(Uint8Array.from(forward));
  };

  stdin.on('data', onData);
  stdin.resume();

  const attachment: SerialTerminalAttachment = {
    detach(): void {
      if (detached) return;
      detached = true;
      stdin.off('data', onData);
      stdin.pause();
      serial.onInputSpace = undefined;
      serial.setOutput(undefined);
      held = [];
      restoreTty();
      process.off('exit', restoreTty);
    },
  };
  return attachment;
}
