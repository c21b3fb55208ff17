// A small tmpfs the fault suite can fill, for the disk-full faults: Redis's AOF directory or a
// PostgreSQL tablespace lives on it, and fill() takes every free byte (writes then fail with
// ENOSPC, as on a full disk) until free() gives the space back. Mounting needs root (and a
// container that allows it); where it is refused, mountSmallFs returns undefined and the
// disk-full faults are skipped.
import { execFile } from 'node:child_process';
import { chownSync, closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SmallFs {
  /** The mount point. */
  dir: string;
  /** A new folder on it (the mount point itself cannot be removed while mounted), owned by `owner` if given. */
  folder(name: string, owner?: { uid: number; gid: number }): string;
  /** Takes every free byte: writes on this filesystem then fail with ENOSPC. */
  fill(): void;
  /** Gives the space back. */
  free(): void;
  unmount(): Promise<void>;
}

export async function mountSmallFs(sizeMiB: number): Promise<SmallFs | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'surge-smallfs-'));
  try {
    await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'tmpfs', dir]);
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  const filler = join(dir, 'filler');
  return {
    dir,
    folder(name, owner) {
      const path = join(dir, name);
      mkdirSync(path, { mode: 0o700 });
      if (owner) chownSync(path, owner.uid, owner.gid);
      return path;
    },
    fill() {
      const fd = openSync(filler, 'a');
      try {
        // Big writes first, then page-sized ones for what is left.
        for (const size of [1 << 20, 4096]) {
          const chunk = Buffer.alloc(size);
          try {
            for (;;) writeSync(fd, chunk);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
          }
        }
      } finally {
        closeSync(fd);
      }
    },
    free() {
      rmSync(filler, { force: true });
    },
    async unmount() {
      await run('umount', ['-l', dir]).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
