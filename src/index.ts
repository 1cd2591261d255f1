/** tsvmm as a library: boot and control microVMs from TypeScript. */
export { MicroVm, type MicroVmExit, type MicroVmExitReason, type MicroVmOptions, MicroVmConfigError, MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, MIN_VCPUS } from './vmm/microvm.js';
export { LinuxBootError, preflightLinuxBoot } from './vmm/linux-boot.js';
export { detectVirtualization, type VirtualizationEnvironment } from './host/environment.js';
export { runInNestedHost } from './host/nested.js';
export { ensureDefaultGuest, type DefaultGuest } from './image/default-guest.js';
export { commandCmdlineArg } from './image/guest-protocol.js';
export { loadConfigFile, parseVmConfig, type VmConfig } from './api/config.js';
export { TsvmmError } from './util/errors.js';
// The SDK: start here. (MicroVm above is the in-process machine it drives.)
export { MicroVM, CONSOLE_BUFFER_BYTES, ApiRequestError, ApiUnreachableError, type MicroVMConfig, type MicroVMDrive, type MicroVMOptions, type MicroVMConsole, type MicroVMEvents, type VmExitSummary, type VmMetrics } from './sdk/microvm.js';
export { VmmController, ApiFault, type InstanceState } from './api/server/controller.js';
export { ApiServer, ApiSocketError, MAX_BODY_BYTES } from './api/server/http-server.js';
export { OPENAPI_DOCUMENT } from './api/server/openapi.js';
