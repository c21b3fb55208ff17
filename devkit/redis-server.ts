// A private redis-server on a free loopback port, for fault tests and benchmarks that must not
// share the machine's Redis (killing it, restarting it, timing it alone).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../common/net.js';
import { redisServerArgs } from '../stack/up.js';
import { waitFor } from './wait.js';

export interface RedisServer {
  port: number;
  url: string;
  pid: number;
  dir: string;
  /** SIGKILL the server (data on disk stays, for restart()). */
  kill(): Promise<void>;
  /** Start it again on the same port and dir (after kill or stop). */
  restart(): Promise<void>;
  /** Stop and remove its dir. */
  stop(): Promise<void>;
}

export async function startRedisServer(
  options: {
    appendonly?: boolean;
    appendfsync?: 'always' | 'everysec';
    extraArgs?: string[];
    /** Its data folder (removed by stop()); a new temp folder by default. */
    dir?: string;
  } = {},
): Promise<RedisServer> {
  const port = await freePort();
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'surge-redis-'));
  const args = [
    ...redisServerArgs(port, dir, {
      appendonly: options.appendonly ?? false,
      appendfsync: options.appendfsync ?? 'everysec',
    }),
    ...(options.extraArgs ?? []),
  ];
  let child: ChildProcess | undefined;
  const launch = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    const probe = new Redis(port, '127.0.0.1', {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    probe.on('error', () => {}); // refused while the server starts: expected, not worth a log line
    try {
      await waitFor(
        `redis-server on port ${port}`,
        async () => {
          if (probe.status !== 'ready') {
            probe.disconnect();
            await probe.connect();
          }
          const loading = (await probe.info('persistence')).includes('loading:1');
          return !loading;
        },
        { timeoutMs: 10_000, intervalMs: 20 },
      );
    } finally {
      probe.disconnect();
    }
  };
  const exited = () =>
    new Promise<void>((resolve) => {
      if (!child || child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
  await launch();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child?.pid ?? -1;
    },
    dir,
    async kill() {
      child?.kill('SIGKILL');
      await exited();
    },
    async restart() {
      await launch();
    },
    async stop() {
      child?.kill('SIGKILL');
      await exited();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
