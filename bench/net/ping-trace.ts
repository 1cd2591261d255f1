/**
 * Where a ping's round trip goes: the kernel's trace events while the host pings the guest, cut
 * into the VMM's and the guest's shares. Ping's own figure says only that one VMM is slower; the
 * phases say whether its receive path, its transmit path or its guest (woken later, or doing more
 * work) is.
 *
 * Per echo request, in trace order (trace_clock "mono", so CPUs agree):
 *   request on the tap    net_dev_xmit, dev = the tap: the host's stack hands the frame to the tap
 *   receive interrupt     the first kvm_msi_set_irq after it: the VMM put the frame in the guest's
 *                         receive queue and interrupted (irqfd); VMM receive = this − request
 *   transmit kick         the first kvm_mmio write of an odd value after that: the guest notified a
 *                         transmit queue (virtio 1.2 §4.1.4.4: the driver writes the queue's index
 *                         to its notify address; net's transmit queues are the odd ones, §5.1.2);
 *                         guest = this − interrupt (waking the vCPU, the guest's receive, its reply)
 *   reply on the tap      netif_receive_skb or netif_rx, dev = the tap: the VMM wrote the reply into
 *                         the tap; VMM transmit = this − kick
 * Frames shorter than MIN_FRAME_BYTES (ARP) are left out: an echo is 98 bytes on the wire.
 */
import type { TraceEvent } from '../blk/tracefs.js';
import { parseTraceLine } from '../blk/tracefs.js';

/** The events the phases are cut from (kvm_mmio: include/trace/events/kvm.h; kvm_msi_set_irq: arch/x86/kvm/trace.h; net: include/trace/events/net.h). */
export const PING_TRACE_EVENTS: readonly TraceEvent[] = ['kvm/kvm_msi_set_irq', 'kvm/kvm_mmio', 'net/net_dev_xmit', 'net/netif_receive_skb', 'net/netif_rx'];

/**
 * Added for a raw trace (--ping-trace-dir): which thread ran and woke when, and every system call,
 * to follow one round trip through the VMM's threads by hand.
 */
export const PING_TIMELINE_EVENTS: readonly TraceEvent[] = ['sched/sched_switch', 'sched/sched_wakeup', 'raw_syscalls/sys_enter', 'raw_syscalls/sys_exit'];

/** Shorter frames are not echoes (an ARP frame is 42 bytes; skb lengths here are 84 or 98 for a default ping). */
const MIN_FRAME_BYTES = 64;

export interface PingPhases {
  /** Echo requests whose four events were all found. */
  readonly matched: number;
  /** Echo requests on the tap in the trace. */
  readonly requests: number;
  /** Per matched request, µs: tap → receive interrupt. */
  readonly vmmReceiveUs: readonly number[];
  /** Interrupt → transmit kick. */
  readonly guestUs: readonly number[];
  /** Kick → reply on the tap. */
  readonly vmmTransmitUs: readonly number[];
  /** Request on the tap → reply on the tap. */
  readonly tapToTapUs: readonly number[];
}

function frameOn(details: string, tap: string): boolean {
  const m = /dev=(\S+) .*?len=(\d+)/.exec(details);
  return m !== null && m[1] === tap && Number(m[2]) >= MIN_FRAME_BYTES;
}

/** "mmio write len 2 gpa 0x... val 0x1": whether it writes an odd value (a transmit queue's index). */
function transmitKick(details: string): boolean {
  const m = /^mmio write .*val 0x([0-9a-f]+)/.exec(details);
  return m !== null && (parseInt(m[1]!.slice(-1), 16) & 1) === 1;
}

/** Cut the text of a trace taken while pinging through `tap` into per-request phases. */
export function pingPhases(text: string, tap: string): PingPhases {
  const vmmReceiveUs: number[] = [];
  const guestUs: number[] = [];
  const vmmTransmitUs: number[] = [];
  const tapToTapUs: number[] = [];
  let requests = 0;
  // The request being followed: its timestamps so far (seconds).
  let request: number | undefined;
  let irq: number | undefined;
  let kick: number | undefined;
  const us = (from: number, to: number): number => Math.round((to - from) * 1e7) / 10;
  for (const line of text.split('\n')) {
    const t = parseTraceLine(line);
    if (t === undefined) continue;
    if (t.event === 'net_dev_xmit') {
      if (!frameOn(t.details, tap)) continue;
      requests++;
      request = t.time;
      irq = kick = undefined;
    } else if (t.event === 'kvm_msi_set_irq') {
      if (request !== undefined && irq === undefined) irq = t.time;
    } else if (t.event === 'kvm_mmio') {
      if (irq !== undefined && kick === undefined && transmitKick(t.details)) kick = t.time;
    } else if (t.event === 'netif_receive_skb' || t.event === 'netif_rx') {
      if (kick === undefined || request === undefined || irq === undefined || !frameOn(t.details, tap)) continue;
      vmmReceiveUs.push(us(request, irq));
      guestUs.push(us(irq, kick));
      vmmTransmitUs.push(us(kick, t.time));
      tapToTapUs.push(us(request, t.time));
      request = irq = kick = undefined;
    }
  }
  return { matched: tapToTapUs.length, requests, vmmReceiveUs, guestUs, vmmTransmitUs, tapToTapUs };
}
