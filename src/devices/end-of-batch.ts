/**
 * Work a device puts off until the events at hand are handled: the second pass over net's transmit
 * queue, blk's one interrupt for a batch of completions, a queue pass past its budget. Without a
 * held wait that is setImmediate (after the event loop's I/O phase). Inside EventFdPoller's held
 * wait the main loop does not turn between events, so an immediate would wait for the hold to end;
 * the hold runs this work itself after each batch of events instead (deferAfterBatch), or ends so
 * the loop turns (deferToLoopTurn, for work that must let timers, the API and vCPU exits go first).
 */

/** What the held wait offers while the main thread is in it (EventFdPoller registers itself). */
export interface HeldBatchScheduler {
  /** Run `work` after the current batch, before the next wait; false when not holding now. */
  afterBatch(work: () => void): boolean;
  /** End the hold after the current batch, so the loop turns. */
  leaveAfterBatch(): void;
}

let held: HeldBatchScheduler | undefined;

/** @internal EventFdPoller in held mode, while started; undefined to unregister. */
export function setHeldBatchScheduler(scheduler: HeldBatchScheduler | undefined): void {
  held = scheduler;
}

/** @internal The scheduler now registered (to unregister only one's own). */
export function heldBatchScheduler(): HeldBatchScheduler | undefined {
  return held;
}

/** Run `work` once the events being handled are: after the held wait's batch, else from setImmediate. */
export function deferAfterBatch(work: () => void): void {
  if (held === undefined || !held.afterBatch(work)) setImmediate(work);
}

/** Run `work` on the event loop's next turn (setImmediate), ending a held wait so that the turn comes. */
export function deferToLoopTurn(work: () => void): void {
  setImmediate(work);
  held?.leaveAfterBatch();
}
