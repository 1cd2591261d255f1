/**
 * An interrupt line as a device sees it. The VMM backs it with KVM_IRQ_LINE or an irqfd on the
 * in-kernel irqchip; tests back it with a recorder.
 */
export interface IrqLine {
  /** Drive the line: true asserts it, false deasserts it. Repeated calls with the same level are cheap no-ops for the device. */
  setLevel(level: boolean): void;
}

/** A line that records its level, for unit tests and for devices not yet wired. */
export class RecordingIrqLine implements IrqLine {
  level = false;
  /** Number of low-to-high transitions seen. */
  raises = 0;
  setLevel(level: boolean): void {
    if (level && !this.level) this.raises++;
    this.level = level;
  }
}

/**
 * Several level-triggered sources sharing one line (PCI INTx pins wired to the same IOAPIC
 * input): the line is asserted while any input is. Each input is an IrqLine of its own.
 */
class SharedIrqLine {
  private asserted = 0;
  /** Low-to-high transitions of the shared line. */
  raises = 0;

  constructor(private readonly line: IrqLine) {}

  input(): IrqLine {
    let level = false;
    return {
      setLevel: (next: boolean) => {
        if (next === level) return;
        level = next;
        this.asserted += next ? 1 : -1;
        if (next && this.asserted === 1) {
          this.raises++;
          this.line.setLevel(true);
        } else if (!next && this.asserted === 0) {
          this.line.setLevel(false);
        }
      },
    };
  }
}

/**
 * The interrupt controller's inputs by number (GSI), each shared by every device wired to it:
 * one table for the whole machine, so PCI INTx pins and virtio-mmio devices that land on the same
 * IOAPIC input are ORed instead of overriding each other's level.
 */
export class SharedIrqLines {
  private readonly lines = new Map<number, SharedIrqLine>();

  /** `drive(gsi)` gives the line of input `gsi` (KVM_IRQ_LINE in the VMM). */
  constructor(private readonly drive: (gsi: number) => IrqLine) {}

  /** A new source on input `gsi`. */
  input(gsi: number): IrqLine {
    let line = this.lines.get(gsi);
    if (line === undefined) {
      line = new SharedIrqLine(this.drive(gsi));
      this.lines.set(gsi, line);
    }
    return line.input();
  }

  /** Low-to-high transitions of input `gsi` so far. */
  raises(gsi: number): number {
    return this.lines.get(gsi)?.raises ?? 0;
  }
}
