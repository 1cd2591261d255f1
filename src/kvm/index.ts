/** Public surface of the KVM layer. */
export * from './constants.js';
export * from './errors.js';
export * from './eventfd.js';
export * from './exits.js';
export * from './kvm.js';
export * from './structs.js';
export * from './vcpu.js';
export * from './vm.js';
export { SystemCallError, errnoName } from './libc.js';
