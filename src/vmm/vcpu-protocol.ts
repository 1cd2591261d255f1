/**
 * The handshake between a vCPU worker thread and the main thread, over one SharedArrayBuffer.
 *
 * The worker runs KVM_RUN; on return it stores the errno in RESULT, sets STATE to EXITED,
 * notifies, and sleeps in Atomics.wait until STATE leaves EXITED. The main thread, woken by
 * Atomics.waitAsync, handles the exit in the shared kvm_run mapping, then stores RUN (run
 * again) or QUIT (leave) and notifies. Only the worker writes EXITED; only the main thread
 * writes RUN and QUIT: each state has one writer, so no compare-and-swap is needed.
 */

/** Int32 slots of the control block. */
export const CTL_STATE = 0;
export const CTL_RESULT = 1;
export const CTL_READY = 2;
/** BigInt64 slot (byte offset 16) with the worker's pthread_t, for pthread_kill. */
export const CTL_THREAD_ID_BIGINT_INDEX = 2;
export const CTL_BYTES = 32;

/** Values of CTL_STATE. */
export const STATE_IDLE = 0;
export const STATE_RUN = 1;
export const STATE_EXITED = 2;
export const STATE_QUIT = 3;

/** What the worker receives as workerData. */
export interface VcpuWorkerData {
  vcpuId: number;
  vcpuFd: number;
  control: SharedArrayBuffer;
  /** Run the thread under SCHED_BATCH (vcpu-runner.ts vcpuSchedulingPolicy). */
  schedBatch: boolean;
}
