/**
 * MSI-X (PCI Local Bus 3.0 §6.8.2): the capability in configuration space, the vector table and
 * the pending bit array (PBA) the device model places in one of its memory BARs.
 *
 * Each table entry holds a message (64-bit address, 32-bit data) and a vector control word
 * whose bit 0 masks the vector. The capability's Message Control word carries the MSI-X Enable
 * and Function Mask bits. A vector fires by writing its message, unless MSI-X is disabled or
 * the vector or the whole function is masked; then the vector's pending bit is set and the
 * message goes out when it is unmasked (§6.8.2.9 and §6.8.2.10). This is how Linux's
 * msix_capability_init() proceeds: it sets Enable together with Function Mask, programs and
 * unmasks the entries, then clears Function Mask.
 *
 * Delivery goes to an injectable MsiSink; the VMM backs it with KVM_SIGNAL_MSI or with a GSI
 * route and irqfd per vector (which it updates when vectorChanged reports a new message).
 */
import type { PciConfigSpace } from './config-space.js';

/** Capability ID of MSI-X (PCI Code and ID Assignment spec, Table 7-1; PCI Local Bus 3.0 §6.8.2). */
export const PCI_CAP_ID_MSIX = 0x11;
/** The capability: ID, next, Message Control (16 bits), Table Offset/BIR, PBA Offset/BIR (§6.8.2, Figure 6-10). */
export const MSIX_CAPABILITY_LENGTH = 12;
const CAP_MESSAGE_CONTROL = 2;
const CAP_TABLE = 4;
const CAP_PBA = 8;
// Message Control (§6.8.2.3).
export const MSIX_CONTROL_ENABLE = 1 << 15;
export const MSIX_CONTROL_FUNCTION_MASK = 1 << 14;
/** Table Size is encoded as N - 1 in bits 10:0, so at most 2048 vectors. */
const MSIX_CONTROL_TABLE_SIZE_MASK = 0x7ff;
export const MSIX_MAX_VECTORS = 2048;
/** The BAR indicator (BIR) is the low 3 bits of the table and PBA offset registers (§6.8.2.4, §6.8.2.5). */
const BIR_MASK = 0x7;

// Table entries (§6.8.2.6–§6.8.2.9).
export const MSIX_TABLE_ENTRY_SIZE = 16;
const ENTRY_ADDRESS_LOW = 0;
const ENTRY_ADDRESS_HIGH = 4;
const ENTRY_DATA = 8;
const ENTRY_VECTOR_CONTROL = 12;
export const MSIX_VECTOR_CONTROL_MASKED = 1 << 0;
/** Message Address bits 1:0 are reserved: messages are DWORD-aligned (§6.8.2.6). */
const ADDRESS_LOW_WRITABLE = 0xfffffffc;
/** The PBA holds one bit per vector in QWORDs (§6.8.2.10). */
const PBA_QWORD_BYTES = 8;

/** Where MSI messages go. The VMM implements it with KVM; tests record the messages. */
export interface MsiSink {
  /**
   * Deliver `vector`'s message. The address comes as two 32-bit halves, as KVM's struct kvm_msi
   * takes it (the high half carries x2APIC extended destination IDs), so delivery allocates nothing.
   */
  signal(vector: number, addressLow: number, addressHigh: number, data: number): void;
  /** A vector's message or mask bit changed (for per-vector GSI routes). */
  vectorChanged?(vector: number): void;
  /** MSI-X Enable or Function Mask changed. */
  controlChanged?(enabled: boolean, functionMasked: boolean): void;
}

/** One table entry as the guest programmed it. */
export interface MsixMessage {
  readonly addressLow: number;
  readonly addressHigh: number;
  readonly data: number;
  readonly masked: boolean;
}

export interface MsixOptions {
  readonly vectors: number;
  /** BAR holding the table and the offset of the table in it (8-byte aligned). */
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
  readonly sink: MsiSink;
}

export class MsixCapability {
  readonly vectors: number;
  /** Offset of the capability in configuration space. */
  readonly capabilityOffset: number;
  /** Bytes the table and the PBA occupy in their BAR. */
  readonly tableBytes: number;
  readonly pbaBytes: number;
  /** Messages held back because the vector or function was masked, and sent on unmask (a counter for tests and metrics). */
  deferred = 0;
  private readonly table: Uint8Array;
  private readonly tableView: DataView;
  private readonly pba: Uint8Array;
  private readonly sink: MsiSink;
  private wasEnabled = false;
  private wasFunctionMasked = false;

  constructor(
    private readonly config: PciConfigSpace,
    options: MsixOptions,
  ) {
    const { vectors, tableBar, tableOffset, pbaBar, pbaOffset, sink } = options;
    if (!Number.isInteger(vectors) || vectors < 1 || vectors > MSIX_MAX_VECTORS) {
      throw new RangeError(`MSI-X supports 1..${MSIX_MAX_VECTORS} vectors, got ${vectors}`);
    }
    if (tableOffset % 8 !== 0 || pbaOffset % 8 !== 0) throw new RangeError('MSI-X table and PBA offsets must be QWORD-aligned');
    this.vectors = vectors;
    this.sink = sink;
    this.tableBytes = vectors * MSIX_TABLE_ENTRY_SIZE;
    this.pbaBytes = Math.ceil(vectors / 64) * PBA_QWORD_BYTES;
    this.table = new Uint8Array(this.tableBytes);
    this.tableView = new DataView(this.table.buffer);
    this.pba = new Uint8Array(this.pbaBytes);
    this.resetTable();

    const at = config.addCapability(PCI_CAP_ID_MSIX, MSIX_CAPABILITY_LENGTH);
    this.capabilityOffset = at;
    config.setU16(at + CAP_MESSAGE_CONTROL, (vectors - 1) & MSIX_CONTROL_TABLE_SIZE_MASK);
    config.setWritable(at + CAP_MESSAGE_CONTROL, 2, MSIX_CONTROL_ENABLE | MSIX_CONTROL_FUNCTION_MASK);
    config.setU32(at + CAP_TABLE, tableOffset | (tableBar & BIR_MASK));
    config.setU32(at + CAP_PBA, pbaOffset | (pbaBar & BIR_MASK));
    config.onWrite(at + CAP_MESSAGE_CONTROL, 2, () => this.controlWritten());
  }

  get enabled(): boolean {
    return (this.messageControl() & MSIX_CONTROL_ENABLE) !== 0;
  }

  get functionMasked(): boolean {
    return (this.messageControl() & MSIX_CONTROL_FUNCTION_MASK) !== 0;
  }

  /** Vector `vector`'s entry (for the VMM's GSI routing; allocates, not for the hot path). */
  message(vector: number): MsixMessage {
    const base = vector * MSIX_TABLE_ENTRY_SIZE;
    return {
      addressLow: this.tableView.getUint32(base + ENTRY_ADDRESS_LOW, true),
      addressHigh: this.tableView.getUint32(base + ENTRY_ADDRESS_HIGH, true),
      data: this.tableView.getUint32(base + ENTRY_DATA, true),
      masked: this.vectorMasked(vector),
    };
  }

  isPending(vector: number): boolean {
    return (this.pba[vector >>> 3]! & (1 << (vector & 7))) !== 0;
  }

  /**
   * Raise `vector`. Returns false when MSI-X is disabled (the caller may fall back to INTx) or the
   * vector does not exist; true when the message was sent or left pending behind a mask.
   */
  signal(vector: number): boolean {
    if (!this.enabled || !Number.isInteger(vector) || vector < 0 || vector >= this.vectors) return false;
    if (this.functionMasked || this.vectorMasked(vector)) {
      this.pba[vector >>> 3]! |= 1 << (vector & 7);
      this.deferred++;
      return true;
    }
    this.deliver(vector);
    return true;
  }

  // ---- BAR accesses. PCI 3.0 §6.8.2 allows only aligned DWORD or QWORD accesses; others are
  // undefined there, and here they act bytewise so a guest cannot confuse the model with them.

  readTable(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      data[i] = at >= 0 && at < this.tableBytes ? this.table[at]! : 0;
    }
  }

  writeTable(offset: number, data: Uint8Array): void {
    if (offset < 0 || offset >= this.tableBytes) return;
    const first = Math.floor(offset / MSIX_TABLE_ENTRY_SIZE);
    const end = Math.min(offset + data.length, this.tableBytes);
    const lastVector = Math.floor((end - 1) / MSIX_TABLE_ENTRY_SIZE);
    // Remember mask states to notice unmasking (an access of at most 8 bytes spans two entries).
    let maskedBefore = 0;
    for (let v = first; v <= lastVector; v++) if (this.vectorMasked(v)) maskedBefore |= 1 << (v - first);
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      if (at >= this.tableBytes) break;
      const field = at % MSIX_TABLE_ENTRY_SIZE;
      let writable = 0xff;
      if (field === ENTRY_ADDRESS_LOW) writable = ADDRESS_LOW_WRITABLE & 0xff;
      else if (field === ENTRY_VECTOR_CONTROL) writable = MSIX_VECTOR_CONTROL_MASKED;
      else if (field > ENTRY_VECTOR_CONTROL) writable = 0; // Vector Control bits 31:1 are reserved
      this.table[at] = (this.table[at]! & ~writable) | (data[i]! & writable);
    }
    for (let v = first; v <= lastVector; v++) {
      this.sink.vectorChanged?.(v);
      const wasMasked = (maskedBefore & (1 << (v - first))) !== 0;
      if (wasMasked && !this.vectorMasked(v)) this.deliverIfPending(v);
    }
  }

  readPba(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      data[i] = at >= 0 && at < this.pbaBytes ? this.pba[at]! : 0;
    }
  }

  /** The PBA is read-only (§6.8.2.10): writes are ignored. */
  writePba(_offset: number, _data: Uint8Array): void {}

  /** Function reset: all vectors masked, nothing pending, MSI-X disabled. */
  reset(): void {
    this.resetTable();
    const control = this.config.getU16(this.capabilityOffset + CAP_MESSAGE_CONTROL);
    this.config.setU16(this.capabilityOffset + CAP_MESSAGE_CONTROL, control & MSIX_CONTROL_TABLE_SIZE_MASK);
    this.controlWritten();
  }

  // ---- internals

  private messageControl(): number {
    return this.config.getU16(this.capabilityOffset + CAP_MESSAGE_CONTROL);
  }

  private vectorMasked(vector: number): boolean {
    return (this.table[vector * MSIX_TABLE_ENTRY_SIZE + ENTRY_VECTOR_CONTROL]! & MSIX_VECTOR_CONTROL_MASKED) !== 0;
  }

  /** Every vector starts masked with a zero message (§6.8.2.9: Mask Bit's default is 1). */
  private resetTable(): void {
    this.table.fill(0);
    this.pba.fill(0);
    for (let v = 0; v < this.vectors; v++) this.table[v * MSIX_TABLE_ENTRY_SIZE + ENTRY_VECTOR_CONTROL] = MSIX_VECTOR_CONTROL_MASKED;
  }

  private controlWritten(): void {
    const enabled = this.enabled;
    const functionMasked = this.functionMasked;
    if (enabled === this.wasEnabled && functionMasked === this.wasFunctionMasked) return;
    this.wasEnabled = enabled;
    this.wasFunctionMasked = functionMasked;
    this.sink.controlChanged?.(enabled, functionMasked);
    if (enabled && !functionMasked) {
      for (let v = 0; v < this.vectors; v++) if (!this.vectorMasked(v)) this.deliverIfPending(v);
    }
  }

  private deliverIfPending(vector: number): void {
    if (!this.enabled || this.functionMasked || !this.isPending(vector)) return;
    this.pba[vector >>> 3]! &= ~(1 << (vector & 7));
    this.deliver(vector);
  }

  private deliver(vector: number): void {
    const base = vector * MSIX_TABLE_ENTRY_SIZE;
    this.sink.signal(
      vector,
      this.tableView.getUint32(base + ENTRY_ADDRESS_LOW, true),
      this.tableView.getUint32(base + ENTRY_ADDRESS_HIGH, true),
      this.tableView.getUint32(base + ENTRY_DATA, true),
    );
  }
}
