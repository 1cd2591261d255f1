/**
 * The virtio-vsock wire format (virtio 1.2 §5.10.6): the 44-byte packet header, its operations,
 * socket types and flags, and copying packet payloads between descriptor chains and host buffers.
 * Shared by the device (vsock.ts), which moves packets through the virtqueues, and the backend
 * (vsock-backend.ts), which gives them meaning on host Unix sockets.
 */
import type { DescriptorChain } from './queue.js';

/** struct virtio_vsock_hdr is packed: le64 src_cid, le64 dst_cid, le32 src_port, dst_port, len, le16 type, op, le32 flags, buf_alloc, fwd_cnt (§5.10.6). */
export const VSOCK_HEADER_BYTES = 44;
export const VSOCK_HDR_SRC_CID = 0;
export const VSOCK_HDR_DST_CID = 8;
export const VSOCK_HDR_SRC_PORT = 16;
export const VSOCK_HDR_DST_PORT = 20;
export const VSOCK_HDR_LEN = 24;
export const VSOCK_HDR_TYPE = 28;
export const VSOCK_HDR_OP = 30;
export const VSOCK_HDR_FLAGS = 32;
export const VSOCK_HDR_BUF_ALLOC = 36;
export const VSOCK_HDR_FWD_CNT = 40;

/** Well-known CIDs (§5.10.4): the host is 2; guest CIDs start at 3. */
export const VSOCK_HOST_CID = 2;

// Socket types (§5.10.6).
export const VIRTIO_VSOCK_TYPE_STREAM = 1;
export const VIRTIO_VSOCK_TYPE_SEQPACKET = 2;

// Operations (§5.10.6).
export const VIRTIO_VSOCK_OP_INVALID = 0;
export const VIRTIO_VSOCK_OP_REQUEST = 1;
export const VIRTIO_VSOCK_OP_RESPONSE = 2;
export const VIRTIO_VSOCK_OP_RST = 3;
export const VIRTIO_VSOCK_OP_SHUTDOWN = 4;
export const VIRTIO_VSOCK_OP_RW = 5;
export const VIRTIO_VSOCK_OP_CREDIT_UPDATE = 6;
export const VIRTIO_VSOCK_OP_CREDIT_REQUEST = 7;

// VIRTIO_VSOCK_OP_SHUTDOWN flags (§5.10.6.5): the sender will receive / send no more data.
export const VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE = 1;
export const VIRTIO_VSOCK_SHUTDOWN_F_SEND = 2;

/**
 * Largest payload of one packet, either way: Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE (64 KiB), the
 * bound Firecracker also enforces. A transmitted packet claiming more is malformed.
 */
export const VSOCK_MAX_PAYLOAD_BYTES = 64 * 1024;

/**
 * The header fields the backend works with. The CIDs are the device's business (it checks them on
 * the way in and writes them on the way out), so they are not here. One instance per direction is
 * reused for every packet.
 */
export class VsockHeader {
  srcPort = 0;
  dstPort = 0;
  len = 0;
  type = 0;
  op = 0;
  flags = 0;
  bufAlloc = 0;
  fwdCnt = 0;

  /** Read the port-and-later fields from a 44-byte header. */
  decode(view: DataView): void {
    this.srcPort = view.getUint32(VSOCK_HDR_SRC_PORT, true);
    this.dstPort = view.getUint32(VSOCK_HDR_DST_PORT, true);
    this.len = view.getUint32(VSOCK_HDR_LEN, true);
    this.type = view.getUint16(VSOCK_HDR_TYPE, true);
    this.op = view.getUint16(VSOCK_HDR_OP, true);
    this.flags = view.getUint32(VSOCK_HDR_FLAGS, true);
    this.bufAlloc = view.getUint32(VSOCK_HDR_BUF_ALLOC, true);
    this.fwdCnt = view.getUint32(VSOCK_HDR_FWD_CNT, true);
  }

  /** Write them into a 44-byte header (the CIDs are left as they are). */
  encode(view: DataView): void {
    view.setUint32(VSOCK_HDR_SRC_PORT, this.srcPort, true);
    view.setUint32(VSOCK_HDR_DST_PORT, this.dstPort, true);
    view.setUint32(VSOCK_HDR_LEN, this.len, true);
    view.setUint16(VSOCK_HDR_TYPE, this.type, true);
    view.setUint16(VSOCK_HDR_OP, this.op, true);
    view.setUint32(VSOCK_HDR_FLAGS, this.flags, true);
    view.setUint32(VSOCK_HDR_BUF_ALLOC, this.bufAlloc, true);
    view.setUint32(VSOCK_HDR_FWD_CNT, this.fwdCnt, true);
  }

  /** Fill in a reply-shaped header in one call. */
  set(srcPort: number, dstPort: number, op: number, len: number, flags: number, bufAlloc: number, fwdCnt: number): void {
    this.srcPort = srcPort;
    this.dstPort = dstPort;
    this.type = VIRTIO_VSOCK_TYPE_STREAM;
    this.op = op;
    this.len = len;
    this.flags = flags;
    this.bufAlloc = bufAlloc;
    this.fwdCnt = fwdCnt;
  }
}

/**
 * Copy `length` bytes from `src` (from `srcStart`) into the chain's device-writable bytes, starting
 * `skip` bytes into them. Returns the number copied (less when the chain is shorter). The packet
 * framing is free (§2.6.4), so header and payload may share or split descriptors in any way.
 */
export function copyToChain(chain: DescriptorChain, skip: number, src: Uint8Array, srcStart: number, length: number): number {
  let done = 0;
  let toSkip = skip;
  for (let s = chain.readableSegments; s < chain.segmentCount && done < length; s++) {
    const segmentLength = chain.lengths[s]!;
    if (toSkip >= segmentLength) {
      toSkip -= segmentLength;
      continue;
    }
    const n = Math.min(segmentLength - toSkip, length - done);
    chain.buffers[s]!.set(src.subarray(srcStart + done, srcStart + done + n), chain.offsets[s]! + toSkip);
    toSkip = 0;
    done += n;
  }
  return done;
}

/** Copy `length` device-readable bytes, starting `skip` bytes into them, into `dst` at `dstStart`. Returns the number copied. */
export function copyFromChain(chain: DescriptorChain, skip: number, dst: Uint8Array, dstStart: number, length: number): number {
  let done = 0;
  let toSkip = skip;
  for (let s = 0; s < chain.readableSegments && done < length; s++) {
    const segmentLength = chain.lengths[s]!;
    if (toSkip >= segmentLength) {
      toSkip -= segmentLength;
      continue;
    }
    const n = Math.min(segmentLength - toSkip, length - done);
    const start = chain.offsets[s]! + toSkip;
    dst.set(chain.buffers[s]!.subarray(start, start + n), dstStart + done);
    toSkip = 0;
    done += n;
  }
  return done;
}
