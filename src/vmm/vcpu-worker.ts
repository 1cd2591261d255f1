/**
 * Worker-thread body for one vCPU: run KVM_RUN synchronously, report each return to the main
 * thread and wait for it to be handled (protocol in vcpu-protocol.ts). It decodes nothing: the
 * main thread reads the exit from its own mapping of the same kvm_run area.
 */
import { workerData } from 'node:worker_threads';
import { KVM_RUN } from '../kvm/constants.js';
import { SCHED_BATCH, ioctlValueRaw, lastErrno, pthreadSelf, setThreadSchedulingPolicy } from '../kvm/libc.js';
import {
  CTL_READY,
  CTL_RESULT,
  CTL_STATE,
  CTL_THREAD_ID_BIGINT_INDEX,
  STATE_EXITED,
  STATE_QUIT,
  STATE_RUN,
  type VcpuWorkerData,
} from './vcpu-protocol.js';

const { vcpuFd, control, schedBatch } = workerData as VcpuWorkerData;
// SCHED_BATCH: a vCPU woken by the main thread's irqfd write does not preempt it (CFS skips
// wake-up preemption for batch tasks), so the main thread finishes its turn before the guest runs
// (vcpu-runner.ts vcpuSchedulingPolicy). A refusal (a seccomp filter, say) leaves SCHED_OTHER.
if (schedBatch) setThreadSchedulingPolicy(SCHED_BATCH);
const ctl = new Int32Array(control);
new BigInt64Array(control)[CTL_THREAD_ID_BIGINT_INDEX] = pthreadSelf();
Atomics.store(ctl, CTL_READY, 1);
Atomics.notify(ctl, CTL_READY);

for (;;) {
  const state = Atomics.load(ctl, CTL_STATE);
  if (state === STATE_QUIT) break;
  if (state !== STATE_RUN) {
    // Parked (IDLE before start, or EXITED while the main thread handles the exit).
    Atomics.wait(ctl, CTL_STATE, state);
    continue;
  }
  const rc = ioctlValueRaw(vcpuFd, KVM_RUN, 0);
  Atomics.store(ctl, CTL_RESULT, rc < 0 ? lastErrno() : 0);
  // Only RUN becomes EXITED: if the main thread meanwhile set QUIT, keep it and leave.
  if (Atomics.compareExchange(ctl, CTL_STATE, STATE_RUN, STATE_EXITED) !== STATE_RUN) break;
  Atomics.notify(ctl, CTL_STATE);
}
