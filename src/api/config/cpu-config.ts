/**
 * Firecracker's `cpu-config`: a custom CPU template, either inline or as the path of a JSON file
 * holding one (the config file takes both; PUT /cpu-config takes the object).
 */
import { ConfigError, ObjectReader, describeValue, isJsonObject, readArray, readEnum, readInteger, readString } from './schema.js';

export interface CpuidRegisterModifier {
  register: 'eax' | 'ebx' | 'ecx' | 'edx';
  /** "0b" then 32 of '0' (clear), '1' (set), 'x' (keep), most significant bit first. */
  bitmap: string;
}

export interface CpuidLeafModifier {
  leaf: number;
  subleaf: number;
  /** KVM_CPUID_FLAG_* for the entry (1 = significant index). */
  flags: number;
  modifiers: CpuidRegisterModifier[];
}

export interface MsrModifier {
  addr: number;
  /** "0b" then 64 of '0', '1', 'x'. */
  bitmap: string;
}

export interface KvmCapabilityModifier {
  capability: number;
  /** true for "!N": remove a capability the VMM would otherwise require. */
  remove: boolean;
}

export interface CustomCpuTemplate {
  kvm_capabilities: KvmCapabilityModifier[];
  cpuid_modifiers: CpuidLeafModifier[];
  msr_modifiers: MsrModifier[];
}

export type CpuConfigSource = { kind: 'path'; path: string } | { kind: 'template'; template: CustomCpuTemplate };

/** Firecracker writes numbers in templates as strings: "0x1f", "0b101" or "31". */
function readNumericString(value: unknown, path: string, max: number): number {
  const text = typeof value === 'string' ? value.trim() : undefined;
  let parsed = NaN;
  if (text !== undefined && /^(0x[0-9a-f_]+|0b[01_]+|[0-9_]+)$/i.test(text)) {
    const digits = text.replace(/_/g, '');
    parsed = /^0[xb]/i.test(digits) ? Number(digits.toLowerCase()) : Number(digits);
  }
  if (!Number.isSafeInteger(parsed) || parsed < 0 || parsed > max) {
    throw new ConfigError(path, `must be a number written as a string ("0x10a", "0b1", "266") up to 0x${max.toString(16)}, got ${describeValue(value)}`);
  }
  return parsed;
}

function readBitmap(value: unknown, path: string, bits: number): string {
  const text = readString(value, path);
  const body = text.startsWith('0b') ? text.slice(2).replace(/_/g, '') : '';
  if (!/^[01x]*$/.test(body) || body.length !== bits) {
    throw new ConfigError(path, `must be "0b" followed by ${bits} characters each 0, 1 or x, got ${describeValue(text)}`);
  }
  return `0b${body}`;
}

function parseCpuidModifier(json: unknown, path: string): CpuidLeafModifier {
  const r = ObjectReader.open(json, path, ['leaf', 'subleaf', 'flags', 'modifiers']);
  return {
    leaf: r.requiredNested('leaf', (v, p) => readNumericString(v, p, 0xffffffff)),
    subleaf: r.requiredNested('subleaf', (v, p) => readNumericString(v, p, 0xffffffff)),
    flags: r.requiredNested('flags', (v, p) => readInteger(v, p, { min: 0, max: 0x7fffffff })),
    modifiers: r.requiredNested('modifiers', (v, p) =>
      readArray(v, p, (item, itemPath) => {
        const m = ObjectReader.open(item, itemPath, ['register', 'bitmap']);
        return {
          register: m.requiredNested('register', (rv, rp) => readEnum(rv, rp, ['eax', 'ebx', 'ecx', 'edx'] as const)),
          bitmap: m.requiredNested('bitmap', (bv, bp) => readBitmap(bv, bp, 32)),
        };
      }),
    ),
  };
}

function parseMsrModifier(json: unknown, path: string): MsrModifier {
  const r = ObjectReader.open(json, path, ['addr', 'bitmap']);
  return {
    addr: r.requiredNested('addr', (v, p) => readNumericString(v, p, 0xffffffff)),
    bitmap: r.requiredNested('bitmap', (v, p) => readBitmap(v, p, 64)),
  };
}

function parseKvmCapability(json: unknown, path: string): KvmCapabilityModifier {
  const text = readString(json, path);
  const m = /^(!?)(\d+)$/.exec(text);
  if (m === null) throw new ConfigError(path, `must be a KVM capability number such as "121", or "!121" to remove it, got ${describeValue(text)}`);
  return { capability: Number(m[2]), remove: m[1] === '!' };
}

/** A custom CPU template (x86_64 fields; the aarch64 ones are refused, tsvmm runs x86_64 guests). */
export function parseCpuTemplate(json: unknown, path: string): CustomCpuTemplate {
  const aarch64Only = 'aarch64 only; tsvmm runs x86_64 guests';
  const r = ObjectReader.open(json, path, ['kvm_capabilities', 'cpuid_modifiers', 'msr_modifiers'], {
    reg_modifiers: aarch64Only,
    vcpu_features: aarch64Only,
  });
  return {
    kvm_capabilities: r.array('kvm_capabilities', parseKvmCapability),
    cpuid_modifiers: r.array('cpuid_modifiers', parseCpuidModifier),
    msr_modifiers: r.array('msr_modifiers', parseMsrModifier),
  };
}

/** The config file's `cpu-config`: a template file's path, or the template itself. */
export function parseCpuConfig(json: unknown, path: string): CpuConfigSource {
  if (typeof json === 'string') return { kind: 'path', path: readString(json, path, { nonEmpty: true }) };
  if (!isJsonObject(json)) {
    throw new ConfigError(path, `must be the path of a CPU template file or a template object, got ${describeValue(json)}`);
  }
  return { kind: 'template', template: parseCpuTemplate(json, path) };
}
