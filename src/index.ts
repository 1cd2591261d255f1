/** tsvmm as a library: boot and control microVMs from TypeScript. */
export { MicroVm, type MicroVmExit, type MicroVmExitReason, type MicroVmOptions, MicroVmConfigError, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS } from './vmm/microvm.js';
export { LinuxBootError, preflightLinuxBoot } from './vmm/linux-boot.js';
export { detectVirtualization, type VirtualizationEnvironment } from './host/environment.js';
export { runInNestedHost } from './host/nested.js';
export { ensureDefaultGuest, type DefaultGuest } from './image/default-guest.js';
export { commandCmdlineArg } from './image/guest-protocol.js';
export { loadConfigFile, parseVmConfig, type VmConfig } from './api/config.js';
export { TsvmmError } from './util/errors.js';
