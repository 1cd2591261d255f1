/** Firecracker's `mmds-config` (PUT /mmds/config): the microVM metadata service's address and interfaces. */
import { ConfigError, ObjectReader, describeValue, readString } from './schema.js';

export const MMDS_VERSIONS = ['V1', 'V2'] as const;
export type MmdsVersion = (typeof MMDS_VERSIONS)[number];
export const DEFAULT_MMDS_IPV4_ADDRESS = '169.254.169.254';

export interface MmdsConfig {
  version: MmdsVersion;
  /** iface_id values of the interfaces that answer MMDS requests; must name configured interfaces. */
  network_interfaces: string[];
  ipv4_address: string;
  imds_compat: boolean;
}

/** Firecracker's rule: 169.254.x.y with x in 1..254 (the first and last /24 are reserved by RFC 3927). */
function parseLinkLocalAddress(value: unknown, path: string): string {
  const text = readString(value, path);
  const m = /^169\.254\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const third = m === null ? -1 : Number(m[1]);
  const fourth = m === null ? -1 : Number(m[2]);
  if (m === null || third < 1 || third > 254 || fourth > 255 || /(^|\.)0\d/.test(text)) {
    throw new ConfigError(path, `must be an IPv4 link-local address 169.254.1.0 to 169.254.254.255, got ${describeValue(text)}`);
  }
  return text;
}

export function parseMmdsConfig(json: unknown, path: string): MmdsConfig {
  const r = ObjectReader.open(json, path, ['version', 'network_interfaces', 'ipv4_address', 'imds_compat']);
  const interfaces = r.requiredNested('network_interfaces', (value, p) => {
    if (!Array.isArray(value)) throw new ConfigError(p, `must be an array of iface_id strings, got ${describeValue(value)}`);
    if (value.length === 0) throw new ConfigError(p, 'must list at least one iface_id');
    return value.map((item, i) => readString(item, `${p}[${i}]`, { nonEmpty: true }));
  });
  return {
    version: r.enumOf('version', MMDS_VERSIONS, 'V1'),
    network_interfaces: interfaces,
    ipv4_address: r.nested('ipv4_address', parseLinkLocalAddress) ?? DEFAULT_MMDS_IPV4_ADDRESS,
    imds_compat: r.boolean('imds_compat', false),
  };
}
