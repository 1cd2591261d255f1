/** The kernel loaders' public API: bzImage, ELF vmlinux (+ PVH), vmlinux extraction, initrd, command line. */
export * from './bzimage.js';
export * from './cmdline.js';
export * from './elf.js';
export * from './errors.js';
export * from './guest-memory.js';
export * from './initrd.js';
export * from './lz4.js';
export * from './vmlinux.js';
