/** Firecracker's `boot-source` (PUT /boot-source): the guest kernel, its command line, an initrd. */
import { BOOT_ARGS_MAX_BYTES } from './limits.js';
import { ConfigError, ObjectReader } from './schema.js';

export { BOOT_ARGS_MAX_BYTES };

export interface BootSourceConfig {
  kernel_image_path: string;
  /** Absent means the VMM's default command line (Firecracker has one too). */
  boot_args?: string;
  initrd_path?: string;
}


export function parseBootSource(json: unknown, path: string): BootSourceConfig {
  const r = ObjectReader.open(json, path, ['kernel_image_path', 'boot_args', 'initrd_path'], {
    kernel_path: "the field is 'kernel_image_path'",
    kernel: "the field is 'kernel_image_path'",
    initrd: "the field is 'initrd_path'",
    cmdline: "the field is 'boot_args'",
  });
  const config: BootSourceConfig = { kernel_image_path: r.requiredString('kernel_image_path', { nonEmpty: true }) };
  const bootArgs = r.optionalString('boot_args');
  if (bootArgs !== undefined) {
    const bytes = Buffer.byteLength(bootArgs, 'utf8');
    if (bytes > BOOT_ARGS_MAX_BYTES) {
      throw new ConfigError(r.at('boot_args'), `is ${bytes} bytes long, the limit is ${BOOT_ARGS_MAX_BYTES}`);
    }
    if (bootArgs.includes('\0')) throw new ConfigError(r.at('boot_args'), 'must not contain a NUL character');
    config.boot_args = bootArgs;
  }
  const initrd = r.optionalString('initrd_path', { nonEmpty: true });
  if (initrd !== undefined) config.initrd_path = initrd;
  return config;
}
