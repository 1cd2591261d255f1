import { TsvmmError } from '../util/errors.js';

/** tsvmm's machine limits, in a module of their own so the CLI can check them without loading the VMM. */
export const MIN_VCPUS = 1;
export const MAX_VCPUS = 32;
export const MIN_MEMORY_MIB = 128;
export const MAX_MEMORY_MIB = 65536;

export class MicroVmConfigError extends TsvmmError {}

/** The vCPU and memory limits, with one-line errors. */
export function validateMachineShape(vcpus: number, memoryMib: number): void {
  if (!Number.isInteger(vcpus) || vcpus < MIN_VCPUS || vcpus > MAX_VCPUS) {
    throw new MicroVmConfigError(`vcpu count must be an integer from ${MIN_VCPUS} to ${MAX_VCPUS}, got ${vcpus}`);
  }
  if (!Number.isInteger(memoryMib) || memoryMib < MIN_MEMORY_MIB || memoryMib > MAX_MEMORY_MIB) {
    throw new MicroVmConfigError(`memory must be an integer from ${MIN_MEMORY_MIB} to ${MAX_MEMORY_MIB} MiB, got ${memoryMib}`);
  }
}
