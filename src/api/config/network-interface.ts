/** Firecracker's network interfaces (PUT /network-interfaces/{iface_id}): virtio-net over a host TAP. */
import { type RateLimiterConfig, parseRateLimiter } from './rate-limiter.js';
import { HOST_DEV_NAME_MAX_BYTES, MTU_RANGE } from './limits.js';
import { ConfigError, ObjectReader, describeValue } from './schema.js';

export interface NetworkInterfaceConfig {
  iface_id: string;
  /** Name of the host TAP device. */
  host_dev_name: string;
  /** Lower-case `xx:xx:xx:xx:xx:xx`; absent lets the guest driver pick a random address. */
  guest_mac?: string;
  /** MTU advertised with VIRTIO_NET_F_MTU; absent means not advertised. */
  mtu?: number;
  rx_rate_limiter?: RateLimiterConfig;
  tx_rate_limiter?: RateLimiterConfig;
}

export { HOST_DEV_NAME_MAX_BYTES, MTU_RANGE };

const FIELDS = ['iface_id', 'host_dev_name', 'guest_mac', 'mtu', 'rx_rate_limiter', 'tx_rate_limiter'];
const RENAMED = {
  allow_mmds_requests: 'no longer exists; list the interface in mmds-config.network_interfaces instead',
  tap: "the field is 'host_dev_name'",
  mac: "the field is 'guest_mac'",
};

/**
 * Parses a MAC address `xx:xx:xx:xx:xx:xx` (hex digits, any case) into lower case. It must be a
 * unicast address other than all zeros: Linux rejects a multicast or zero address for a NIC
 * (is_valid_ether_addr) and virtio-net would silently replace it with a random one.
 */
export function parseMacAddress(value: unknown, path: string): string {
  if (typeof value !== 'string' || !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(value)) {
    throw new ConfigError(path, `must be a MAC address like "06:00:ac:10:00:02", got ${describeValue(value)}`);
  }
  const mac = value.toLowerCase();
  const firstOctet = parseInt(mac.slice(0, 2), 16);
  if ((firstOctet & 1) !== 0) {
    throw new ConfigError(
      path,
      `must be a unicast address (the first octet must be even), got ${value}; locally administered unicast addresses start with x2, x6, xa or xe, e.g. 06:00:ac:10:00:02`,
    );
  }
  if (mac === '00:00:00:00:00:00') throw new ConfigError(path, 'must not be all zeros; omit guest_mac to let the guest pick one');
  return mac;
}

export function parseNetworkInterface(json: unknown, path: string): NetworkInterfaceConfig {
  const r = ObjectReader.open(json, path, FIELDS, RENAMED);
  const iface: NetworkInterfaceConfig = {
    iface_id: r.requiredString('iface_id', { nonEmpty: true }),
    host_dev_name: r.requiredString('host_dev_name', { nonEmpty: true }),
  };
  const nameBytes = Buffer.byteLength(iface.host_dev_name, 'utf8');
  if (nameBytes > HOST_DEV_NAME_MAX_BYTES) {
    throw new ConfigError(r.at('host_dev_name'), `is ${nameBytes} bytes long, Linux interface names are at most ${HOST_DEV_NAME_MAX_BYTES}`);
  }
  if (/[\s/]/.test(iface.host_dev_name) || iface.host_dev_name === '.' || iface.host_dev_name === '..') {
    throw new ConfigError(r.at('host_dev_name'), `is not a valid Linux interface name: ${describeValue(iface.host_dev_name)}`);
  }
  const mac = r.nested('guest_mac', parseMacAddress);
  if (mac !== undefined) iface.guest_mac = mac;
  const mtu = r.optionalInteger('mtu', MTU_RANGE);
  if (mtu !== undefined) iface.mtu = mtu;
  const rx = r.nested('rx_rate_limiter', parseRateLimiter);
  if (rx !== undefined) iface.rx_rate_limiter = rx;
  const tx = r.nested('tx_rate_limiter', parseRateLimiter);
  if (tx !== undefined) iface.tx_rate_limiter = tx;
  return iface;
}

/** PATCH /network-interfaces/{iface_id} (after boot): new rate limiters for an interface. */
export interface NetworkInterfaceUpdate {
  iface_id: string;
  rx_rate_limiter?: RateLimiterConfig;
  tx_rate_limiter?: RateLimiterConfig;
}

export function parseNetworkInterfaceUpdate(json: unknown, path: string): NetworkInterfaceUpdate {
  const r = ObjectReader.open(json, path, ['iface_id', 'rx_rate_limiter', 'tx_rate_limiter']);
  const update: NetworkInterfaceUpdate = { iface_id: r.requiredString('iface_id', { nonEmpty: true }) };
  const rx = r.nested('rx_rate_limiter', parseRateLimiter);
  if (rx !== undefined) update.rx_rate_limiter = rx;
  const tx = r.nested('tx_rate_limiter', parseRateLimiter);
  if (tx !== undefined) update.tx_rate_limiter = tx;
  return update;
}
