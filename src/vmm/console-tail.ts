/**
 * The last bytes a guest wrote to its console, kept for error reports, and a watch for a marker
 * (Linux's panic line) that may arrive split across any number of pieces: the UART hands output
 * over per flush, not per line. Fixed-size; pushing allocates nothing.
 */
export class ConsoleTail {
  private readonly buf: Uint8Array;
  private length = 0;
  private readonly marker: Buffer | undefined;
  /** Whether the marker has appeared. */
  markerSeen = false;

  constructor(capacity: number, marker?: string, private readonly onMarker?: () => void) {
    if (marker !== undefined && Buffer.byteLength(marker) > capacity) throw new RangeError('console tail smaller than its marker');
    this.buf = new Uint8Array(capacity);
    this.marker = marker === undefined ? undefined : Buffer.from(marker);
  }

  push(bytes: Uint8Array): void {
    const cap = this.buf.length;
    let fresh: number;
    if (bytes.length >= cap) {
      this.buf.set(bytes.subarray(bytes.length - cap));
      this.length = cap;
      fresh = 0;
    } else {
      const keep = Math.min(this.length, cap - bytes.length);
      this.buf.copyWithin(0, this.length - keep, this.length);
      this.buf.set(bytes, keep);
      this.length = keep + bytes.length;
      fresh = keep;
    }
    if (this.marker === undefined || this.markerSeen) return;
    // Search the new bytes plus enough of the old to catch a marker split across pieces.
    const from = Math.max(0, fresh - this.marker.length + 1);
    if (Buffer.from(this.buf.buffer, this.buf.byteOffset + from, this.length - from).includes(this.marker)) {
      this.markerSeen = true;
      this.onMarker?.();
    }
  }

  text(): string {
    return Buffer.from(this.buf.buffer, this.buf.byteOffset, this.length).toString('utf8');
  }
}
