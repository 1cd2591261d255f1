/**
 * Debian's archive as the only source of binaries tsvmm needs: host tools through apt-get install,
 * guest and nested-host kernels through `apt-get download` + `dpkg-deb -x` (unpacked into the
 * cache, never installed on the host).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../util/cache.js';
import { type ProgressSink, stderrProgress } from '../util/progress.js';

export class DebianPackageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DebianPackageError';
  }
}

let aptUpdated = false;

function run(cmd: string, args: string[], what: string, cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.error) throw new DebianPackageError(`${what}: cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0) {
    const tail = (r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' | ');
    throw new DebianPackageError(`${what} failed (${cmd} exited ${r.status}): ${tail}`);
  }
  return r.stdout;
}

function aptUpdate(progress: ProgressSink): void {
  if (aptUpdated) return;
  progress('updating Debian package lists (apt-get update)');
  run('apt-get', ['update', '-q'], 'apt-get update');
  aptUpdated = true;
}

function isInstalled(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

/**
 * Make sure Debian packages are installed on this machine (idempotent: installed ones are not
 * touched). Needs root, as the README's Quick start assumes.
 */
export function ensureAptPackages(packages: readonly string[], progress: ProgressSink = stderrProgress): void {
  const missing = packages.filter((p) => !isInstalled(p));
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new DebianPackageError(
      `missing Debian packages: ${missing.join(' ')}; install them with \`sudo apt-get install ${missing.join(' ')}\` or run as root`,
    );
  }
  aptUpdate(progress);
  progress(`installing ${missing.join(' ')} (apt-get install)`);
  run('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], `apt-get install ${missing.join(' ')}`);
}

/**
 * The versioned package a Debian meta-package points at, e.g. `linux-image-cloud-amd64` →
 * `linux-image-6.1.0-56-cloud-amd64`.
 */
export function resolveMetaPackage(meta: string, prefix: string, progress: ProgressSink = stderrProgress): string {
  const attempt = (): string | undefined => {
    const r = spawnSync('apt-cache', ['depends', meta], { encoding: 'utf8' });
    if (r.status !== 0) return undefined;
    const m = r.stdout.split('\n').map((l) => /^\s*Depends:\s*(\S+)/.exec(l)?.[1]).find((d) => d?.startsWith(prefix));
    return m;
  };
  let name = attempt();
  if (name === undefined) {
    aptUpdate(progress);
    name = attempt();
  }
  if (name === undefined) throw new DebianPackageError(`cannot resolve Debian package ${meta}: apt-cache depends found no ${prefix}* dependency`);
  return name;
}

/** A Debian package unpacked (not installed) into the cache. */
export interface UnpackedPackage {
  readonly name: string;
  /** Root of the unpacked tree (`dpkg-deb -x` output). */
  readonly root: string;
}

/**
 * `apt-get download NAME` + `dpkg-deb -x` into `<cache>/debian/NAME`, once. A previously
 * unpacked package is reused without touching the network.
 */
export function fetchDebianPackage(name: string, progress: ProgressSink = stderrProgress): UnpackedPackage {
  const root = cacheDir('debian', name);
  if (existsSync(join(root, '.unpacked'))) return { name, root };
  const work = cacheDir('debian', `.${name}.partial`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  // apt-get download drops privileges to _apt when it can; a world-writable work folder lets it.
  chmodSync(work, 0o777);
  progress(`downloading ${name} from Debian's archive (apt-get download)`);
  try {
    run('apt-get', ['download', '-q', name], `apt-get download ${name}`, work);
  } catch (e) {
    aptUpdate(progress);
    run('apt-get', ['download', '-q', name], `apt-get download ${name}`, work);
  }
  const deb = readdirSync(work).find((f) => f.endsWith('.deb'));
  if (deb === undefined) throw new DebianPackageError(`apt-get download ${name} produced no .deb file`);
  progress(`unpacking ${deb}`);
  const tree = join(work, 'tree');
  execFileSync('dpkg-deb', ['-x', join(work, deb), tree]);
  writeFileSync(join(tree, '.unpacked'), `${deb}\n`);
  rmSync(root, { recursive: true, force: true });
  renameSync(tree, root);
  rmSync(work, { recursive: true, force: true });
  return { name, root };
}

/** How long a resolved meta-package name is trusted before apt-cache is asked again. */
const RESOLUTION_TTL_MS = 24 * 3600 * 1000;

/**
 * `linux-image-<flavour>` → the versioned package, remembered in the cache for a day: asking
 * apt-cache costs about a second, and inside the nested test host (read-only root, no network)
 * it may not work at all. Falls back to the newest unpacked kernel of that flavour.
 */
function resolveKernelPackage(flavour: string, progress: ProgressSink): string {
  const file = cacheDir('debian', 'resolved.json');
  const meta = `linux-image-${flavour}`;
  let known: Record<string, { name: string; at: number }> = {};
  try {
    known = JSON.parse(readFileSync(file, 'utf8')) as typeof known;
  } catch {
    // No cache yet.
  }
  const hit = known[meta];
  if (hit && Date.now() - hit.at < RESOLUTION_TTL_MS && existsSync(join(cacheDir('debian', hit.name), '.unpacked'))) return hit.name;
  try {
    const name = resolveMetaPackage(meta, 'linux-image-6', progress);
    known[meta] = { name, at: Date.now() };
    try {
      mkdirSync(cacheDir('debian'), { recursive: true });
      writeFileSync(file, JSON.stringify(known, null, 2));
    } catch {
      // A read-only cache (the nested host) just resolves again next time.
    }
    return name;
  } catch (e) {
    const cached = existsSync(cacheDir('debian'))
      ? readdirSync(cacheDir('debian'))
          .filter((d) => new RegExp(`^linux-image-[0-9.]+-[0-9]+-${flavour}$`).test(d) && existsSync(join(cacheDir('debian', d), '.unpacked')))
          .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
      : [];
    if (cached.length === 0) throw e;
    return cached[cached.length - 1]!;
  }
}

/** A kernel unpacked from a Debian linux-image package. */
export interface DebianKernel {
  /** Kernel release, e.g. `6.1.0-56-cloud-amd64`. */
  readonly release: string;
  /** The bzImage (`/boot/vmlinuz-<release>`). */
  readonly bzImage: string;
  /** `/lib/modules/<release>` in the unpacked tree. */
  readonly modulesDir: string;
  /** `/boot/config-<release>`. */
  readonly config: string;
}

/**
 * Fetch the kernel Debian's `linux-image-<flavour>` currently points at (`cloud-amd64` for guests,
 * `amd64` for the nested test host, which needs kvm-amd and 9p). Reuses any cached kernel of that
 * flavour when the package lists cannot be read.
 */
export function fetchDebianKernel(flavour: 'amd64' | 'cloud-amd64', progress: ProgressSink = stderrProgress): DebianKernel {
  const name = resolveKernelPackage(flavour, progress);
  const pkg = fetchDebianPackage(name, progress);
  const release = name.slice('linux-image-'.length);
  const k: DebianKernel = {
    release,
    bzImage: join(pkg.root, 'boot', `vmlinuz-${release}`),
    modulesDir: join(pkg.root, 'lib', 'modules', release),
    config: join(pkg.root, 'boot', `config-${release}`),
  };
  if (!existsSync(k.bzImage)) throw new DebianPackageError(`${name} has no /boot/vmlinuz-${release}`);
  return k;
}
