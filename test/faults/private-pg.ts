// A private PostgreSQL instance for the fault suite: the machine's shared cluster serves other
// test runs and must never be restarted or made read-only. Debian's binaries
// (/usr/lib/postgresql/<v>/bin, overridable with SURGE_PG_BIN) run as the `postgres` OS user when
// the suite runs as root (PostgreSQL refuses root), in a temp dir, on a free loopback port.
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from '../../common/net.js';
import { waitFor } from '../../devkit/wait.js';

const run = promisify(execFile);

export interface PrivatePostgres {
  port: number;
  dir: string;
  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database: string): string;
  /** `pg_ctl restart`: `immediate` is a crash (no checkpoint, recovery on start); `fast` a clean restart. */
  restart(mode?: 'immediate' | 'fast'): Promise<void>;
  stop(): Promise<void>;
}

function pgBin(): string {
  if (process.env.SURGE_PG_BIN) return process.env.SURGE_PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const [newest] = versions;
  if (newest === undefined)
    throw new Error('no PostgreSQL server binaries found (set SURGE_PG_BIN to the folder holding initdb and pg_ctl)');
  return join(root, newest, 'bin');
}

/** Runs a PostgreSQL binary, as the `postgres` user when we are root. */
async function pgRun(bin: string, args: string[]): Promise<void> {
  const asRoot = process.getuid?.() === 0;
  const [cmd, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  await run(cmd, argv, { timeout: 60_000 });
}

/** The OS user the private PostgreSQL runs as when we are root (files it must own), else undefined. */
export async function postgresOwner(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  return {
    uid: Number((await run('id', ['-u', 'postgres'])).stdout.trim()),
    gid: Number((await run('id', ['-g', 'postgres'])).stdout.trim()),
  };
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = pgBin();
  const dir = mkdtempSync(join(tmpdir(), 'surge-pg-'));
  const data = join(dir, 'data');
  const owner = await postgresOwner();
  if (owner) chownSync(dir, owner.uid, owner.gid);
  const port = await freePort();
  await pgRun(join(bin, 'initdb'), [
    '-D',
    data,
    '-A',
    'trust',
    '-U',
    'postgres',
    '--no-sync',
    '-E',
    'UTF8',
    '--locale=C',
  ]);
  const opts = [
    `-p ${port} -k ${dir}`,
    '-c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=32MB -c fsync=on',
  ].join(' ');
  const ctl = (...args: string[]) =>
    pgRun(join(bin, 'pg_ctl'), ['-D', data, '-l', join(dir, 'log'), '-o', opts, '-w', '-t', '60', ...args]);
  const url = (database: string) => `postgres://postgres@127.0.0.1:${port}/${database}`;
  const accepting = async () => {
    const c = new pg.Client({ connectionString: url('postgres') });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query('SELECT 1');
      return true;
    } finally {
      await c.end().catch(() => {});
    }
  };
  await ctl('start');
  await waitFor('private PostgreSQL accepting', accepting, { timeoutMs: 30_000, intervalMs: 50 });
  return {
    port,
    dir,
    url,
    async restart(mode = 'immediate') {
      await ctl('restart', '-m', mode);
      await waitFor('private PostgreSQL accepting after restart', accepting, { timeoutMs: 60_000, intervalMs: 50 });
    },
    async stop() {
      await ctl('stop', '-m', 'immediate').catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
