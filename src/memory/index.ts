/** Public surface of guest memory. */
export * from './guest-memory.js';
export * from './layout.js';
