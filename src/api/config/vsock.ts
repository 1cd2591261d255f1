/** Firecracker's `vsock` (PUT /vsock): virtio-vsock proxied to a host Unix socket. */
import { GUEST_CID_RANGE, UDS_PATH_MAX_BYTES } from './limits.js';
import { ConfigError, ObjectReader } from './schema.js';

export interface VsockConfig {
  /** The guest's context id. 0-2 are reserved (hypervisor, local, host); 0xFFFFFFFF is VMADDR_CID_ANY. */
  guest_cid: number;
  /** Host socket the VMM listens on; guest-initiated connections go to `${uds_path}_${port}`. */
  uds_path: string;
  /** Deprecated in Firecracker and ignored; kept so configs that carry it still load. */
  vsock_id?: string;
}

export { GUEST_CID_RANGE, UDS_PATH_MAX_BYTES };

export function parseVsock(json: unknown, path: string): VsockConfig {
  const r = ObjectReader.open(json, path, ['guest_cid', 'uds_path', 'vsock_id'], { cid: "the field is 'guest_cid'" });
  const config: VsockConfig = {
    guest_cid: r.requiredInteger('guest_cid', GUEST_CID_RANGE),
    uds_path: r.requiredString('uds_path', { nonEmpty: true }),
  };
  const bytes = Buffer.byteLength(config.uds_path, 'utf8');
  if (bytes > UDS_PATH_MAX_BYTES) {
    throw new ConfigError(r.at('uds_path'), `is ${bytes} bytes long, a Unix socket path can be at most ${UDS_PATH_MAX_BYTES}`);
  }
  const id = r.optionalString('vsock_id');
  if (id !== undefined) config.vsock_id = id;
  return config;
}
