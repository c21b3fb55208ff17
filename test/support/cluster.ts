// A real Redis Cluster on loopback for tests: N masters (`redis-server --cluster-enabled yes`,
// AOF with appendfsync always), each with 0 or 1 replica, joined by `redis-cli --cluster create
// … --cluster-replicas <0|1>`. Each node has its own temp dir (AOF + nodes.conf) so a node can be
// SIGKILLed and restarted on the same port and dir and rejoin (with its slots, or as the replica
// of the master promoted meanwhile).
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from '../../common/net.js';
import { waitFor } from '../../devkit/wait.js';
import { defined } from './defined.js';

const run = promisify(execFile);

export interface ClusterNode {
  port: number;
  /** Cluster bus port (set explicitly with --cluster-port, so it is free too). */
  busPort: number;
  dir: string;
  pid: number;
}

export interface RedisClusterHandle {
  /** Every node, masters and replicas (roles change on failover: ask `locate` or `masterPorts`). */
  nodes: ClusterNode[];
  /** `127.0.0.1:p1,127.0.0.1:p2,…` for REDIS_CLUSTER_NODES. */
  seeds: string;
  /** SIGKILL node i (its dir stays). */
  kill(i: number): Promise<void>;
  /** Start node i again on the same port and dir; resolves once the cluster reports ok. */
  restart(i: number): Promise<void>;
  /** Which node (index) serves this key's slot, and the slot. */
  locate(key: string): Promise<{ slot: number; node: number }>;
  /**
   * Resolves once the slot of `key` is served by another node than `node` (its replica took
   * over after the master failed) and every live node reports cluster_state:ok.
   */
  failedOver(key: string, node: number): Promise<void>;
  /** Kill every node and remove the dirs. */
  stop(): Promise<void>;
}

async function nodeCommand(port: number, command: string, ...args: string[]): Promise<unknown> {
  const r = new Redis(port, '127.0.0.1', { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    return await r.call(command, ...args);
  } finally {
    r.disconnect();
  }
}

async function clusterOk(ports: readonly number[], known = ports.length): Promise<boolean> {
  for (const port of ports) {
    const info = String(await nodeCommand(port, 'CLUSTER', 'INFO'));
    if (!info.includes('cluster_state:ok')) return false;
    if (!/cluster_known_nodes:(\d+)/.test(info) || Number(/cluster_known_nodes:(\d+)/.exec(info)?.[1]) !== known)
      return false;
  }
  return true;
}

/** Every master has a replica whose link to it is up (what WAIT 1 needs). */
async function replicasLinked(ports: readonly number[]): Promise<boolean> {
  for (const port of ports) {
    const info = String(await nodeCommand(port, 'INFO', 'replication'));
    if (info.includes('role:master') && !/connected_slaves:[1-9]/.test(info)) return false;
    if (info.includes('role:slave') && !info.includes('master_link_status:up')) return false;
  }
  return true;
}

/** The port of the node serving `slot`, from `port`'s CLUSTER SLOTS (-1 when none). */
async function ownerOf(port: number, slot: number): Promise<number> {
  const ranges = (await nodeCommand(port, 'CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, string]]>;
  const owner = ranges.find(([lo, hi]) => slot >= lo && slot <= hi);
  return owner ? Number(owner[2][1]) : -1;
}

export async function startRedisCluster(
  options: { masters?: number; replicas?: 0 | 1 } = {},
): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 0;
  const count = masters * (1 + replicas);
  const nodes: ClusterNode[] = [];
  const children: Array<ChildProcess | undefined> = [];
  for (let i = 0; i < count; i++) {
    const port = await freePort();
    let busPort = await freePort();
    while (busPort === port) busPort = await freePort();
    nodes.push({ port, busPort, dir: mkdtempSync(join(tmpdir(), 'surge-cluster-')), pid: -1 });
  }
  const launch = async (i: number) => {
    const n = defined(nodes[i], `cluster node ${i}`);
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(n.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        n.dir,
        '--save',
        '',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-port',
        String(n.busPort),
        '--cluster-node-timeout',
        '2000',
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--maxmemory-policy',
        'noeviction',
      ],
      { stdio: 'ignore' },
    );
    children[i] = child;
    n.pid = child.pid ?? -1;
    await waitFor(
      `cluster node on port ${n.port}`,
      async () => {
        if (child.exitCode !== null) throw new Error(`redis-server on port ${n.port} exited with ${child.exitCode}`);
        const info = String(await nodeCommand(n.port, 'INFO', 'persistence'));
        return !info.includes('loading:1');
      },
      { timeoutMs: 10_000, intervalMs: 25 },
    );
  };
  const killNode = async (i: number) => {
    const child = children[i];
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await gone;
  };
  /** Waits until every node reports cluster_state:ok and, with replicas, each replica is linked to its master. */
  const settled = async (when: string) => {
    const ports = nodes.map((n) => n.port);
    const wait = { timeoutMs: 30_000, intervalMs: 100 };
    await waitFor(`cluster_state:ok on every node ${when}`, () => clusterOk(ports), wait);
    if (replicas > 0) await waitFor(`every replica linked to its master ${when}`, () => replicasLinked(ports), wait);
  };
  const livePorts = () =>
    nodes
      .filter((_, i) => {
        const c = children[i];
        return c !== undefined && c.exitCode === null && c.signalCode === null;
      })
      .map((n) => n.port);
  try {
    for (let i = 0; i < count; i++) await launch(i);
    await run(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        '--cluster-replicas',
        String(replicas),
        '--cluster-yes',
      ],
      { timeout: 30_000 },
    );
    await settled('after the create');
  } catch (e) {
    for (let i = 0; i < count; i++) await killNode(i);
    for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
    throw e;
  }
  return {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
    kill: killNode,
    async restart(i) {
      await launch(i);
      await settled('after the restart');
    },
    async locate(key) {
      // Asked of a live node: after a kill, node 0 may be the one down.
      const port = defined(livePorts()[0], 'a live cluster node');
      const slot = Number(await nodeCommand(port, 'CLUSTER', 'KEYSLOT', key));
      const owner = await ownerOf(port, slot);
      return { slot, node: nodes.findIndex((n) => n.port === owner) };
    },
    async failedOver(key, node) {
      const down = defined(nodes[node], `cluster node ${node}`).port;
      const live = livePorts();
      const first = defined(live[0], 'a live cluster node');
      const slot = Number(await nodeCommand(first, 'CLUSTER', 'KEYSLOT', key));
      await waitFor(
        `a replica to take over slot ${slot} from port ${down}`,
        async () => {
          for (const port of live) {
            const owner = await ownerOf(port, slot);
            if (owner === down || owner === -1) return false;
          }
          return clusterOk(live, nodes.length);
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
    },
    async stop() {
      for (let i = 0; i < count; i++) await killNode(i);
      for (const n of nodes) rmSync(n.dir, { recursive: true, force: true });
    },
  };
}
