/** Public surface of the VM lifecycle. */
export * from './cpu-modes.js';
export * from './machine.js';
export { VcpuRunner, type VcpuExitCounts, type VcpuStop, type VcpuStopReason } from './vcpu-runner.js';
