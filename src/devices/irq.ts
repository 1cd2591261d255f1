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
