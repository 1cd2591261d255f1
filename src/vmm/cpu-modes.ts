/**
 * Put a vCPU into a simple execution mode before it runs: real mode at a segment:offset, flat
 * 32-bit protected mode, or 64-bit long mode over an identity map. Meant for tiny test guests
 * and as a reference; the Linux boot path builds its own GDT, page tables and registers.
 *
 * Segment registers are loaded straight into KVM's hidden descriptor caches, so no GDT needs
 * to exist in guest memory until the guest reloads a segment register itself.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME } from '../kvm/constants.js';
import { emptyRegs, type Regs, type Segment, type Sregs } from '../kvm/structs.js';
import type { Vcpu } from '../kvm/vcpu.js';

/** CR0.ET (bit 4): reads as 1 on every CPU since the 486 (Intel SDM vol. 3A 2.5). */
const CR0_ET = 1 << 4;

// Segment descriptor types (Intel SDM vol. 3A 3.4.5.1): code execute/read accessed, data read/write accessed, busy 32/64-bit TSS.
const TYPE_CODE = 0xb;
const TYPE_DATA = 0x3;
const TYPE_TSS_BUSY = 0xb;

function segment(fields: Partial<Segment>): Segment {
  return { base: 0n, limit: 0xffff, selector: 0, type: TYPE_DATA, present: 1, dpl: 0, db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0, ...fields };
}

/** Common system segments: a busy TSS (VMX entry requires a usable TR) and an unusable LDT. */
function systemSegments(): Pick<Sregs, 'tr' | 'ldt'> {
  return {
    tr: segment({ type: TYPE_TSS_BUSY, s: 0, limit: 0x67 }),
    ldt: segment({ type: 2, s: 0, present: 0, unusable: 1 }),
  };
}

function applySregs(vcpu: Vcpu, change: (s: Sregs) => void): void {
  const s = vcpu.getSregs();
  change(s);
  vcpu.setSregs(s);
}

function applyRegs(vcpu: Vcpu, regs: Partial<Regs>): void {
  vcpu.setRegs({ ...emptyRegs(), ...regs });
}

/** Real mode: CS = `cs` (base cs << 4), IP = `ip`; data segments and SS at 0. */
export function enterRealMode(vcpu: Vcpu, entry: { cs: number; ip: number; sp?: number }): void {
  applySregs(vcpu, (s) => {
    s.cs = segment({ selector: entry.cs, base: BigInt(entry.cs << 4), type: TYPE_CODE });
    for (const name of ['ds', 'es', 'fs', 'gs', 'ss'] as const) s[name] = segment({});
    Object.assign(s, systemSegments());
    s.cr0 = BigInt(CR0_ET);
    s.cr4 = 0n;
    s.efer = 0n;
  });
  applyRegs(vcpu, { rip: BigInt(entry.ip), rsp: BigInt(entry.sp ?? 0) });
}

function flat32(s: Sregs): void {
  s.cs = segment({ selector: 0x08, type: TYPE_CODE, limit: 0xffff_ffff, db: 1, g: 1 });
  for (const name of ['ds', 'es', 'fs', 'gs', 'ss'] as const) {
    s[name] = segment({ selector: 0x10, type: TYPE_DATA, limit: 0xffff_ffff, db: 1, g: 1 });
  }
  Object.assign(s, systemSegments());
}

/** Flat 32-bit protected mode, paging off: every segment covers 0..4 GiB. */
export function enterProtectedMode32(vcpu: Vcpu, entry: { eip: number; esp?: number }): void {
  applySregs(vcpu, (s) => {
    flat32(s);
    s.cr0 = BigInt(CR0_PE | CR0_ET);
    s.cr4 = 0n;
    s.efer = 0n;
  });
  applyRegs(vcpu, { rip: BigInt(entry.eip), rsp: BigInt(entry.esp ?? 0) });
}

/** Bytes of guest memory identityMapPageTables writes: PML4, PDPT and one page directory per GiB. */
export function identityMapTablesBytes(gib: number): number {
  return (2 + gib) * 4096;
}

/**
 * Write 4-level page tables at `tablesGpa` (page-aligned, identityMapTablesBytes(gib) long)
 * identity-mapping the first `gib` GiB (1..512) with 2 MiB pages (present, writable). Returns the CR3 value.
 */
export function identityMapPageTables(memory: GuestMemory, tablesGpa: number, gib = 4): number {
  if (tablesGpa % 4096 !== 0) throw new RangeError(`page tables must be page-aligned, got 0x${tablesGpa.toString(16)}`);
  if (!Number.isInteger(gib) || gib < 1 || gib > 512) throw new RangeError(`can identity-map 1 to 512 GiB with one PDPT, asked for ${gib}`);
  const PRESENT_WRITABLE = 0x3n;
  const PAGE_SIZE_2M = 0x80n;
  const pml4 = tablesGpa;
  const pdpt = tablesGpa + 4096;
  memory.fill(tablesGpa, identityMapTablesBytes(gib), 0);
  memory.writeU64(pml4, BigInt(pdpt) | PRESENT_WRITABLE);
  for (let g = 0; g < gib; g++) {
    const pd = tablesGpa + 2 * 4096 + g * 4096;
    memory.writeU64(pdpt + g * 8, BigInt(pd) | PRESENT_WRITABLE);
    for (let i = 0; i < 512; i++) {
      const phys = BigInt(g) * 0x4000_0000n + BigInt(i) * 0x20_0000n;
      memory.writeU64(pd + i * 8, phys | PRESENT_WRITABLE | PAGE_SIZE_2M);
    }
  }
  return pml4;
}

/**
 * 64-bit long mode with paging over an identity map of the first `mapGib` GiB (default 4)
 * written at `tablesGpa`. Needs RAM at [tablesGpa, tablesGpa + identityMapTablesBytes(mapGib)).
 */
export function enterLongMode64(
  vcpu: Vcpu,
  memory: GuestMemory,
  entry: { rip: number; rsp?: number; tablesGpa: number; mapGib?: number },
): void {
  const cr3 = identityMapPageTables(memory, entry.tablesGpa, entry.mapGib);
  applySregs(vcpu, (s) => {
    flat32(s);
    s.cs = segment({ selector: 0x08, type: TYPE_CODE, limit: 0xffff_ffff, l: 1, db: 0, g: 1 });
    s.cr3 = BigInt(cr3);
    s.cr4 = BigInt(CR4_PAE);
    s.efer = BigInt(EFER_LME | EFER_LMA);
    s.cr0 = BigInt(CR0_PE | CR0_ET) | BigInt(CR0_PG >>> 0);
  });
  applyRegs(vcpu, { rip: BigInt(entry.rip), rsp: BigInt(entry.rsp ?? 0) });
}
