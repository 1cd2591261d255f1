/**
 * virtio-rng, the entropy device (virtio 1.2 §5.4): one request queue; the driver posts
 * device-writable buffers and the device fills them with random bytes. No feature bits and no
 * configuration space. Linux binds it with hw_random/virtio-rng.c and exposes it as /dev/hwrng.
 *
 * Bytes come from the host CSPRNG (crypto.randomFillSync) straight into guest memory: the chain's
 * segments are (region buffer, offset, length) triples, so there is no copy and no allocation
 * per request. A request is served up to MAX_BYTES_PER_REQUEST bytes (§5.4.6.2 lets the device
 * use less than the whole buffer), so a guest cannot stall the event loop with a huge buffer.
 *
 * A chain with a device-readable buffer is a driver error (§5.4.6.1: "The driver MUST NOT place
 * device-readable buffers into the queue"): the device asks for a reset rather than guess.
 */
import { randomFillSync } from 'node:crypto';
import { VIRTIO_ID_ENTROPY, type VirtioActivation, type VirtioDevice } from './device.js';
import { DescriptorChain } from './queue.js';

/** The only queue: requestq (§5.4.2). */
export const RNG_REQUEST_QUEUE = 0;
/** Queue size offered; Linux's driver keeps one request in flight, so this is ample. */
export const RNG_QUEUE_SIZE = 256;
/** Most bytes written for one request. */
export const MAX_BYTES_PER_REQUEST = 64 * 1024;

/** Fills `length` bytes of `buffer` at `offset` with random data (injectable for tests). */
export type RandomFill = (buffer: Uint8Array, offset: number, length: number) => void;

export interface VirtioRngOptions {
  readonly fill?: RandomFill;
}

export class VirtioRng implements VirtioDevice {
  readonly deviceType = VIRTIO_ID_ENTROPY;
  /** Its queue and backend handlers queue no promise continuation or nextTick (VirtioDevice.holdSafe). */
  readonly holdSafe = true;
  readonly name = 'virtio-rng';
  readonly deviceFeatures = 0n;
  readonly queueMaxSizes: readonly number[] = [RNG_QUEUE_SIZE];
  readonly configSize = 0;
  /** Random bytes handed to the guest so far. */
  bytesServed = 0;
  requestsServed = 0;

  private readonly fill: RandomFill;
  private readonly chain = new DescriptorChain(RNG_QUEUE_SIZE);
  private activation: VirtioActivation | undefined;

  constructor(options: VirtioRngOptions = {}) {
    this.fill = options.fill ?? ((buffer, offset, length) => randomFillSync(buffer, offset, length));
  }

  readConfig(_offset: number, _data: Uint8Array): void {}
  writeConfig(_offset: number, _data: Uint8Array): void {}

  activate(activation: VirtioActivation): void {
    this.activation = activation;
  }

  reset(): void {
    this.activation = undefined;
  }

  processQueue(index: number): void {
    const activation = this.activation;
    if (activation === undefined || index !== RNG_REQUEST_QUEUE) return;
    const queue = activation.queues[RNG_REQUEST_QUEUE]!;
    const chain = this.chain;
    // SplitQueue bounds the pass: a guest that keeps requests coming cannot keep this loop going for ever.
    for (;;) {
      queue.disableNotification();
      while (queue.pop(chain)) {
        if (chain.readableSegments > 0) {
          activation.fail(`request ${chain.head} has a device-readable buffer; entropy requests are device-writable only`);
          return;
        }
        let written = 0;
        for (let s = 0; s < chain.writableSegments && written < MAX_BYTES_PER_REQUEST; s++) {
          const n = Math.min(chain.lengths[s]!, MAX_BYTES_PER_REQUEST - written);
          this.fill(chain.buffers[s]!, chain.offsets[s]!, n);
          written += n;
        }
        queue.addUsed(chain.head, written);
        this.bytesServed += written;
        this.requestsServed++;
      }
      if (!queue.enableNotification()) break;
    }
    activation.notifyIfNeeded(RNG_REQUEST_QUEUE);
  }
}
