/**
 * Kernel modules from an unpacked Debian linux-image package, in load order.
 *
 * The package ships no modules.dep (depmod writes it at install time, and we never install), so
 * dependencies come from each module's own `.modinfo` ELF section, whose `depends=` entry lists
 * the modules it needs (scripts/mod/modpost.c writes it). Module names treat '-' and '_' alike.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TsvmmError } from '../util/errors.js';

export class KernelModuleError extends TsvmmError {}

/** Canonical module name: file name without `.ko`, with '-' as '_' (as the kernel does). */
export function moduleName(fileOrName: string): string {
  return fileOrName.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

/** name → path of every `.ko` below `<modulesDir>/kernel`. */
export function indexModules(modulesDir: string): Map<string, string> {
  const index = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(name)) index.set(moduleName(name), p);
    }
  };
  walk(join(modulesDir, 'kernel'));
  return index;
}

/** The NUL-separated `key=value` strings of an ELF64 module's `.modinfo` section. */
export function readModinfo(ko: Uint8Array, file = 'module'): Map<string, string[]> {
  const v = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  const fail = (why: string): never => {
    throw new KernelModuleError(`${file}: not a readable ELF64 kernel module (${why})`);
  };
  // ELF header (System V gABI): e_ident "\x7fELF", class 2 = 64-bit, data 1 = little-endian.
  if (ko.length < 64 || v.getUint32(0, false) !== 0x7f454c46) fail('no ELF magic');
  if (ko[4] !== 2 || ko[5] !== 1) fail('not 64-bit little-endian');
  const shoff = Number(v.getBigUint64(0x28, true));
  const shentsize = v.getUint16(0x3a, true);
  const shnum = v.getUint16(0x3c, true);
  const shstrndx = v.getUint16(0x3e, true);
  if (shentsize < 64 || shoff + shnum * shentsize > ko.length || shstrndx >= shnum) fail('section table out of bounds');
  const section = (i: number): { name: number; offset: number; size: number } => {
    const o = shoff + i * shentsize;
    const offset = Number(v.getBigUint64(o + 0x18, true));
    const size = Number(v.getBigUint64(o + 0x20, true));
    if (offset + size > ko.length) fail(`section ${i} out of bounds`);
    return { name: v.getUint32(o, true), offset, size };
  };
  const strtab = section(shstrndx);
  const nameAt = (off: number): string => {
    const start = strtab.offset + off;
    let end = start;
    while (end < strtab.offset + strtab.size && ko[end] !== 0) end++;
    return Buffer.from(ko.buffer, ko.byteOffset + start, end - start).toString('latin1');
  };
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (nameAt(s.name) !== '.modinfo') continue;
    const text = Buffer.from(ko.buffer, ko.byteOffset + s.offset, s.size).toString('latin1');
    for (const entry of text.split('\0')) {
      const eq = entry.indexOf('=');
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      const list = info.get(key) ?? [];
      list.push(entry.slice(eq + 1));
      info.set(key, list);
    }
    return info;
  }
  return fail('no .modinfo section');
}

/**
 * Paths of `wanted` modules and everything they depend on, dependencies first, each once.
 * Modules built into the kernel (listed in modules.builtin) are skipped silently.
 */
export function resolveModules(modulesDir: string, wanted: readonly string[]): string[] {
  const index = indexModules(modulesDir);
  let builtin = new Set<string>();
  try {
    builtin = new Set(
      readFileSync(join(modulesDir, 'modules.builtin'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => moduleName(l.split('/').pop() ?? l)),
    );
  } catch {
    // No modules.builtin: every wanted name must then be a module file.
  }
  const order: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (raw: string, from?: string): void => {
    const name = moduleName(raw);
    if (done.has(name) || builtin.has(name)) return;
    if (visiting.has(name)) throw new KernelModuleError(`module dependency cycle through ${name}`);
    const path = index.get(name);
    if (path === undefined) {
      throw new KernelModuleError(
        `kernel module ${name}${from ? ` (needed by ${from})` : ''} is not in ${modulesDir} nor built in`,
      );
    }
    if (/\.(xz|zst|gz)$/.test(path)) throw new KernelModuleError(`${path}: compressed modules are not supported yet`);
    visiting.add(name);
    const deps = readModinfo(readFileSync(path), path).get('depends')?.[0] ?? '';
    for (const d of deps.split(',').filter(Boolean)) visit(d, name);
    visiting.delete(name);
    done.add(name);
    order.push(path);
  };
  for (const w of wanted) visit(w);
  return order;
}
