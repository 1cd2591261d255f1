/** Typed errors of the KVM layer. Each message says what went wrong and what to do about it. */
import type { KvmCapName } from './constants.js';

/** /dev/kvm is missing or cannot be opened. */
export class KvmUnavailableError extends Error {
  constructor(
    readonly path: string,
    readonly code: string,
  ) {
    const hint =
      code === 'ENOENT'
        ? `${path} does not exist: this host has no KVM. Run on a Linux host with VT-x/AMD-V and the kvm_intel or kvm_amd module loaded (or inside a nested host that has them)`
        : code === 'EACCES' || code === 'EPERM'
          ? `no permission to open ${path}: add your user to the group that owns it (usually "kvm": sudo usermod -aG kvm $USER, then log in again) or adjust its mode`
          : `cannot open ${path} (${code})`;
    super(hint);
    this.name = 'KvmUnavailableError';
  }
}

/** KVM_GET_API_VERSION returned something other than 12. */
export class KvmApiVersionError extends Error {
  constructor(readonly version: number) {
    super(`KVM API version is ${version}, tsvmm needs 12: this kernel's KVM is not the standard one`);
    this.name = 'KvmApiVersionError';
  }
}

/** KVM_CHECK_EXTENSION says a capability tsvmm relies on is absent. */
export class KvmCapabilityError extends Error {
  constructor(readonly capability: KvmCapName) {
    super(`KVM lacks capability KVM_CAP_${capability}, which tsvmm needs; use a newer host kernel with full x86 KVM support`);
    this.name = 'KvmCapabilityError';
  }
}
