/**
 * What a dynamically linked program needs to start somewhere else: the shared libraries `ldd`
 * lists and the dynamic loader. Used to carry Debian's fio into the guest's initramfs, which has
 * only a static busybox. Every library a program links (DT_NEEDED, transitively) is loaded at
 * start-up, so all of them go, even those fio only uses for engines the benchmark never picks.
 */
import { execFileSync } from 'node:child_process';

export interface SharedObject {
  /** The path the loader looks for (what ldd printed): where the file must be inside the guest. */
  readonly path: string;
  /** True for the dynamic loader itself (the program's PT_INTERP). */
  readonly loader: boolean;
}

/** Parse `ldd` output. Exported for testing on captured text; a library `not found` is an error. */
export function parseLdd(text: string, program: string): SharedObject[] {
  const out: SharedObject[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('linux-vdso.so') || line.startsWith('statically linked')) continue;
    if (/=>\s*not found/.test(line)) throw new Error(`${program} needs ${line.split(/\s/)[0]}, which this machine lacks (ldd: ${line})`);
    // "libaio.so.1 => /lib/x86_64-linux-gnu/libaio.so.1 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)".
    const mapped = /^\S+\s+=>\s+(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    const direct = /^(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    if (mapped) out.push({ path: mapped[1]!, loader: false });
    else if (direct) out.push({ path: direct[1]!, loader: true });
    else throw new Error(`cannot read this ldd line for ${program}: '${line}'`);
  }
  if (!out.some((o) => o.loader)) throw new Error(`ldd names no dynamic loader for ${program}; is it dynamically linked?`);
  return out;
}

/** The shared objects `program` loads, per this machine's `ldd`. */
export function sharedObjects(program: string): SharedObject[] {
  return parseLdd(execFileSync('ldd', [program], { encoding: 'utf8' }), program);
}
