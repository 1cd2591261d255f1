/**
 * Which optional parts of Firecracker's configuration a VmConfig uses, so that the VMM can refuse
 * what it does not implement yet with one clear line instead of silently ignoring it. The parser
 * accepts and validates everything Firecracker accepts; devices "arrive" by being added to the
 * set of supported features the VMM passes here.
 */
import { TsvmmError } from '../../util/errors.js';
import { limitsAnything } from './rate-limiter.js';
import { fieldPath, indexPath } from './schema.js';
import type { VmConfig } from './vm-config.js';

/** What a feature is called in "… is not supported yet". */
export const CONFIG_FEATURES = {
  initrd: 'an initrd',
  drives: 'block devices (virtio-block)',
  'vhost-user-block': 'vhost-user block devices',
  'async-io-engine': 'the "Async" io_engine',
  'network-interfaces': 'network interfaces (virtio-net)',
  'net-mtu': 'a network interface MTU',
  vsock: 'vsock (virtio-vsock)',
  entropy: 'the entropy device (virtio-rng)',
  balloon: 'the balloon device (virtio-balloon)',
  pmem: 'pmem devices (virtio-pmem)',
  'memory-hotplug': 'memory hotplug (virtio-mem)',
  'mmds-config': 'the metadata service (MMDS)',
  'cpu-config': 'custom CPU templates',
  'cpu-template': 'static CPU templates',
  smt: 'SMT (two threads per core)',
  'huge-pages': 'huge pages',
  'track-dirty-pages': 'dirty page tracking',
  'rate-limiter': 'rate limiters',
  logger: 'the logger',
  metrics: 'metrics',
} as const;
export type ConfigFeature = keyof typeof CONFIG_FEATURES;

/** One use of a feature: which, and where in the config. */
export interface FeatureUse {
  feature: ConfigFeature;
  path: string;
}

/** The VMM refuses a configuration that uses something it cannot do yet. */
export class NotSupportedYetError extends TsvmmError {
  constructor(readonly use: FeatureUse) {
    super(`${use.path}: tsvmm does not support ${CONFIG_FEATURES[use.feature]} yet; remove it from the configuration`);
  }
}

/** Every optional feature the configuration uses, in document order. Defaults count as unused. */
export function featuresUsed(config: VmConfig): FeatureUse[] {
  const uses: FeatureUse[] = [];
  const use = (feature: ConfigFeature, path: string): void => {
    uses.push({ feature, path });
  };
  if (config.bootSource.initrd_path !== undefined) use('initrd', 'boot-source.initrd_path');

  const machine = config.machineConfig;
  if (machine.smt) use('smt', 'machine-config.smt');
  if (machine.track_dirty_pages) use('track-dirty-pages', 'machine-config.track_dirty_pages');
  if (machine.cpu_template !== 'None') use('cpu-template', 'machine-config.cpu_template');
  if (machine.huge_pages !== 'None') use('huge-pages', 'machine-config.huge_pages');

  config.drives.forEach((drive, i) => {
    const at = indexPath('drives', i);
    if (drive.socket !== undefined) {
      use('vhost-user-block', fieldPath(at, 'socket'));
      return;
    }
    use('drives', at);
    if (drive.io_engine === 'Async') use('async-io-engine', fieldPath(at, 'io_engine'));
    if (limitsAnything(drive.rate_limiter)) use('rate-limiter', fieldPath(at, 'rate_limiter'));
  });

  config.networkInterfaces.forEach((iface, i) => {
    const at = indexPath('network-interfaces', i);
    use('network-interfaces', at);
    if (iface.mtu !== undefined) use('net-mtu', fieldPath(at, 'mtu'));
    if (limitsAnything(iface.rx_rate_limiter)) use('rate-limiter', fieldPath(at, 'rx_rate_limiter'));
    if (limitsAnything(iface.tx_rate_limiter)) use('rate-limiter', fieldPath(at, 'tx_rate_limiter'));
  });

  if (config.vsock !== undefined) use('vsock', 'vsock');
  if (config.entropy !== undefined) {
    use('entropy', 'entropy');
    if (limitsAnything(config.entropy.rate_limiter)) use('rate-limiter', 'entropy.rate_limiter');
  }
  if (config.logger !== undefined) use('logger', 'logger');
  if (config.metrics !== undefined) use('metrics', 'metrics');
  if (config.balloon !== undefined) use('balloon', 'balloon');
  if (config.mmdsConfig !== undefined) use('mmds-config', 'mmds-config');
  if (config.cpuConfig !== undefined) use('cpu-config', 'cpu-config');
  config.pmem.forEach((pmem, i) => {
    use('pmem', indexPath('pmem', i));
    if (limitsAnything(pmem.rate_limiter)) use('rate-limiter', fieldPath(indexPath('pmem', i), 'rate_limiter'));
  });
  if (config.memoryHotplug !== undefined) use('memory-hotplug', 'memory-hotplug');
  return uses;
}

/** The uses of features outside `supported`. */
export function unsupportedFeatures(config: VmConfig, supported: Iterable<ConfigFeature>): FeatureUse[] {
  const ok = new Set(supported);
  return featuresUsed(config).filter((u) => !ok.has(u.feature));
}

/** Throws NotSupportedYetError for the first use of a feature outside `supported`. */
export function assertSupported(config: VmConfig, supported: Iterable<ConfigFeature>): void {
  const first = unsupportedFeatures(config, supported)[0];
  if (first !== undefined) throw new NotSupportedYetError(first);
}
