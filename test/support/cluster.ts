// A real Redis Cluster on loopback for tests: N masters (`redis-server --cluster-enabled yes`,
// AOF with appendfsync always), each with 0 or 1 replica. Each node has its own temp dir (AOF +
// nodes.conf) so a node can be SIGKILLed and restarted on the same port and dir and rejoin (with
// its slots, or as the replica of the master promoted meanwhile).
//
// The cluster is joined here rather than by `redis-cli --cluster create`, which sends one CLUSTER
// MEET per node from the first node. A node that is not scheduled for longer than the handshake
// timeout (cluster-node-timeout) while a MEET's handshake is pending — a loaded host, an fsync of
// nodes.conf behind other writes — drops the handshake; if the other side completed it, that node
// knows the cluster but no node knows it, and gossip never fixes that (a node learns of another
// only by a MEET or from the gossip of a node it knows). So every node MEETs every other, and
// every wait MEETs again whichever node some node does not know yet.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../common/net.js';
import { waitFor } from '../../devkit/wait.js';
import { defined } from './defined.js';

const SLOTS = 16384;
/** A generous deadline for each wait: the joins recover on their own, this only bounds a broken one. */
const SETTLE_MS = 60_000;

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
  // A node may be stalled (not scheduled): a probe gives up and the wait asks again.
  const r = new Redis(port, '127.0.0.1', {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 2000,
    commandTimeout: 2000,
  });
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

/** The nodes `port` knows (handshakes excluded), by port, from its CLUSTER NODES. */
async function knownPorts(port: number): Promise<Set<number>> {
  const lines = String(await nodeCommand(port, 'CLUSTER', 'NODES'))
    .trim()
    .split('\n');
  const known = new Set<number>();
  for (const line of lines) {
    const [, address, flags] = line.split(' ');
    if (!address || !flags || flags.includes('handshake') || flags.includes('noaddr')) continue;
    known.add(Number(/:(\d+)@/.exec(address)?.[1]));
  }
  return known;
}

/**
 * Whether every node in `ports` knows every node in `all`; for each node one does not know, sends
 * it a CLUSTER MEET (again: a MEET whose handshake timed out is lost). A MEET to a node with a
 * handshake already pending is a no-op.
 */
async function meetAll(ports: readonly number[], all: readonly ClusterNode[]): Promise<boolean> {
  let complete = true;
  for (const port of ports) {
    const known = await knownPorts(port);
    for (const n of all) {
      if (n.port === port || known.has(n.port)) continue;
      complete = false;
      await nodeCommand(port, 'CLUSTER', 'MEET', '127.0.0.1', String(n.port), String(n.busPort));
    }
  }
  return complete;
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
  const taken = new Set<number>();
  /** A free port no other node of this cluster has (freePort may hand the same one out twice). */
  const uniquePort = async () => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) {
        taken.add(p);
        return p;
      }
    }
  };
  for (let i = 0; i < count; i++)
    nodes.push({
      port: await uniquePort(),
      busPort: await uniquePort(),
      dir: mkdtempSync(join(tmpdir(), 'surge-cluster-')),
      pid: -1,
    });
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
        '--logfile',
        'redis.log',
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
        // A replica's first sync starts at once rather than after waiting 5 s for more replicas.
        '--repl-diskless-sync-delay',
        '0',
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
        if (child.exitCode !== null) {
          const log = (() => {
            try {
              return readFileSync(join(n.dir, 'redis.log'), 'utf8').trim().split('\n').slice(-3).join(' | ');
            } catch {
              return 'no log';
            }
          })();
          throw new Error(`redis-server on port ${n.port} exited with ${child.exitCode}: ${log}`);
        }
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
  const livePorts = () =>
    nodes
      .filter((_, i) => {
        const c = children[i];
        return c !== undefined && c.exitCode === null && c.signalCode === null;
      })
      .map((n) => n.port);
  /**
   * Waits until every node knows every node and reports cluster_state:ok and, with replicas, each
   * replica is linked to its master; MEETs again whatever a node does not know.
   */
  const settled = async (when: string) => {
    const wait = { timeoutMs: SETTLE_MS, intervalMs: 100 };
    await waitFor(
      `cluster_state:ok on every node ${when}`,
      async () => (await meetAll(livePorts(), nodes)) && clusterOk(livePorts(), nodes.length),
      wait,
    );
    if (replicas > 0)
      await waitFor(`every replica linked to its master ${when}`, () => replicasLinked(livePorts()), wait);
  };
  try {
    for (let i = 0; i < count; i++) {
      // A port freePort found free may be taken before redis-server binds it: new ports, once more.
      try {
        await launch(i);
      } catch (e) {
        const n = defined(nodes[i], `cluster node ${i}`);
        if (children[i]?.exitCode === null) throw e;
        n.port = await uniquePort();
        n.busPort = await uniquePort();
        await launch(i);
      }
    }
    // Masters are nodes 0 … masters-1, each with its share of the slots and its own config epoch
    // (set before any node knows another, so no epoch collision is left to resolve); the replica of
    // master j is node masters + j.
    for (let i = 0; i < masters; i++) {
      const port = defined(nodes[i], `master ${i}`).port;
      const first = Math.round((i * SLOTS) / masters);
      const last = Math.round(((i + 1) * SLOTS) / masters) - 1;
      await nodeCommand(port, 'CLUSTER', 'ADDSLOTSRANGE', String(first), String(last));
    }
    for (const [i, n] of nodes.entries()) await nodeCommand(n.port, 'CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1));
    await waitFor(`every node knowing every node after the MEETs`, () => meetAll(livePorts(), nodes), {
      timeoutMs: SETTLE_MS,
      intervalMs: 100,
    });
    for (let j = 0; j < masters * replicas; j++) {
      const master = defined(nodes[j], `master ${j}`);
      const replica = defined(nodes[masters + j], `replica ${j}`);
      const masterId = String(await nodeCommand(master.port, 'CLUSTER', 'MYID'));
      // The replica must know the master's ID (it does once the MEETs are through; asked again if not).
      await waitFor(
        `port ${replica.port} replicating port ${master.port}`,
        async () => {
          await nodeCommand(replica.port, 'CLUSTER', 'REPLICATE', masterId);
          return true;
        },
        { timeoutMs: SETTLE_MS, intervalMs: 100 },
      );
    }
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
