// Adds package-lock.json entries for platform-specific optional dependencies that the registry
// mirror used here does not serve (e.g. @biomejs/cli-darwin-arm64, msgpackr-extract-win32-x64).
// npm cannot resolve them, so it leaves them out of the lock file, and `npm ci` then refuses the
// lock as "out of sync". Each added entry carries the os/cpu (and libc) read from the package
// name, so npm skips it on every other platform without fetching; on its own platform npm fetches
// it by name and version like any other package. Run after `npm install` changes the lock file.
import { readFileSync, writeFileSync } from 'node:fs';

const OS = {
  android: 'android',
  darwin: 'darwin',
  linux: 'linux',
  win32: 'win32',
  windows: 'win32',
  freebsd: 'freebsd',
};
const CPU = ['arm64', 'x64', 'arm', 'ia32', 'ppc64', 's390x', 'riscv64', 'loong64'];

function platformOf(name) {
  const parts = name.split('/').pop().split('-');
  const os = parts.map((p) => OS[p]).find(Boolean);
  const cpu = parts.find((p) => CPU.includes(p));
  if (!os || !cpu) return undefined;
  const entry = { os: [os], cpu: [cpu] };
  if (parts.includes('musl')) entry.libc = ['musl'];
  else if (os === 'linux') entry.libc = ['glibc'];
  return entry;
}

const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'));
const added = [];
for (const [path, pkg] of Object.entries(lock.packages)) {
  for (const [dep, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const base = path === '' ? '' : `${path}/`;
    const candidates = [`${base}node_modules/${dep}`, `node_modules/${dep}`];
    if (candidates.some((c) => lock.packages[c])) continue;
    const platform = platformOf(dep);
    if (!platform) continue;
    const exact = String(version).replace(/^[~^=]/, '');
    lock.packages[`node_modules/${dep}`] = {
      version: exact,
      ...(pkg.dev ? { dev: true } : {}),
      optional: true,
      ...platform,
    };
    added.push(`${dep}@${exact}`);
  }
}
lock.packages = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))),
);
writeFileSync('package-lock.json', `${JSON.stringify(lock, null, 2)}\n`);
console.log(added.length ? `added ${added.length} lock entries: ${added.join(', ')}` : 'lock file already complete');
