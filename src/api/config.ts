/**
 * Firecracker-compatible VM configuration: the `--config-file` document and the per-resource
 * bodies of the REST API, parsed into typed objects with one-line errors naming the field.
 *
 *   loadConfigFile(path)        read + parse + validate a config file
 *   checkConfigFiles(config)    the files it names exist and can be opened
 *   assertSupported(config, …)  refuse features tsvmm does not implement yet
 *   parseMachineConfig(json, path), parseDrive(…), …   one resource, e.g. a PUT body
 */
export { ConfigError } from './config/schema.js';
export { JsonSyntaxError, parseJson, type JsonValue, type JsonObject } from './config/json.js';
export { ConfigReadError, loadConfigFile, parseConfigText } from './config/load.js';
export { ConfigFileError, checkConfigFiles } from './config/files.js';
export { CONFIG_FILE_KEYS, checkVmConfig, parseVmConfig, toFirecrackerJson, type VmConfig } from './config/vm-config.js';
export {
  CONFIG_FEATURES,
  NotSupportedYetError,
  assertSupported,
  featuresUsed,
  unsupportedFeatures,
  type ConfigFeature,
  type FeatureUse,
} from './config/features.js';

export {
  CPU_TEMPLATES,
  HUGE_PAGES,
  MEM_SIZE_MIB_RANGE,
  VCPU_COUNT_RANGE,
  defaultMachineConfig,
  parseMachineConfig,
  parseMachineConfigPatch,
  type CpuTemplate,
  type HugePages,
  type MachineConfig,
} from './config/machine-config.js';
export { BOOT_ARGS_MAX_BYTES, parseBootSource, type BootSourceConfig } from './config/boot-source.js';
export {
  CACHE_TYPES,
  IO_ENGINES,
  parseDrive,
  parseDriveUpdate,
  type CacheType,
  type DriveConfig,
  type DriveUpdate,
  type IoEngine,
} from './config/drive.js';
export {
  HOST_DEV_NAME_MAX_BYTES,
  MTU_RANGE,
  parseMacAddress,
  parseNetworkInterface,
  parseNetworkInterfaceUpdate,
  type NetworkInterfaceConfig,
  type NetworkInterfaceUpdate,
} from './config/network-interface.js';
export { GUEST_CID_RANGE, UDS_PATH_MAX_BYTES, parseVsock, type VsockConfig } from './config/vsock.js';
export { parseEntropy, type EntropyConfig } from './config/entropy.js';
export { LOG_LEVELS, parseLogger, type LogLevel, type LoggerConfig } from './config/logger.js';
export { parseMetrics, type MetricsConfig } from './config/metrics.js';
export { parseBalloon, parseBalloonStatsUpdate, parseBalloonUpdate, type BalloonConfig } from './config/balloon.js';
export { DEFAULT_MMDS_IPV4_ADDRESS, MMDS_VERSIONS, parseMmdsConfig, type MmdsConfig, type MmdsVersion } from './config/mmds.js';
export {
  parseCpuConfig,
  parseCpuTemplate,
  type CpuConfigSource,
  type CpuidLeafModifier,
  type CpuidRegisterModifier,
  type CustomCpuTemplate,
  type KvmCapabilityModifier,
  type MsrModifier,
} from './config/cpu-config.js';
export { parsePmem, type PmemConfig } from './config/pmem.js';
export { parseMemoryHotplug, type MemoryHotplugConfig } from './config/memory-hotplug.js';
export {
  limitsAnything,
  parseRateLimiter,
  parseTokenBucket,
  type RateLimiterConfig,
  type TokenBucketConfig,
} from './config/rate-limiter.js';
