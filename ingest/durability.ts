// Durable mode (SURGE_DURABILITY=durable): a 202 also waits for WAITAOF 1 0 (Redis ≥ 7.2 with
// appendonly: the write is fsynced to the local AOF) or WAIT 1 (a replica received it).
// `checkDurability` picks one at start and proves it works once, or refuses with the reason.
// `DurabilityBarrier` group-commits: WAIT/WAITAOF block the connection they run on and cover
// every earlier write of that connection, so one call answers every order written before it.
// On Redis Cluster a write is covered only by a WAIT/WAITAOF on the connection to the master that
// ran it: `ClusterDurability` sends each accept call to its slot's master itself and keeps one
// barrier per master connection.
import { Cluster, type Redis } from 'ioredis';
import type { Config } from '../common/config.js';
import { keySlot, type RedisClient } from '../common/redis.js';
import { defineIngestCommands } from './scripts.js';

export type DurabilityCommand =
  | { kind: 'WAITAOF'; args: [number, number, number] }
  | { kind: 'WAIT'; args: [number, number] };

class DurabilityUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DurabilityUnavailableError';
  }
}

function infoField(info: string, name: string): string | undefined {
  const m = new RegExp(`^${name}:(.*)$`, 'm').exec(info);
  return m?.[1]?.trim();
}

function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/** True when the reply of the command confirms the write. */
function confirmed(command: DurabilityCommand, reply: unknown): boolean {
  if (command.kind === 'WAITAOF') return Array.isArray(reply) && Number(reply[0]) >= 1;
  return Number(reply) >= 1;
}

/** What one server can give, from its INFO. */
interface ServerCapability {
  /** WAITAOF 1 0 can succeed: Redis ≥ 7.2 with appendonly. */
  waitAof: boolean;
  /** WAIT 1 can succeed: a replica is connected. */
  wait: boolean;
  /** Why each that cannot, cannot (for the refusal). */
  why: string[];
}

async function capabilityOf(redis: RedisClient): Promise<ServerCapability> {
  const [server, persistence, replication] = await Promise.all([
    redis.info('server'),
    redis.info('persistence'),
    redis.info('replication'),
  ]);
  const version = infoField(server, 'redis_version') ?? '0.0.0';
  const aof = infoField(persistence, 'aof_enabled') === '1';
  const replicas = Number(infoField(replication, 'connected_slaves') ?? '0');
  const hasWaitAof = versionAtLeast(version, 7, 2);
  return {
    waitAof: hasWaitAof && aof,
    wait: replicas >= 1,
    why: [
      ...(hasWaitAof && aof
        ? []
        : [
            hasWaitAof
              ? 'WAITAOF 1 0 needs appendonly yes (aof_enabled:0)'
              : `WAITAOF needs Redis ≥ 7.2 (this server is ${version})`,
          ]),
      ...(replicas >= 1 ? [] : [`WAIT 1 needs a connected replica (connected_slaves:${replicas})`]),
    ],
  };
}

async function proveOnce(redis: RedisClient, command: DurabilityCommand, timeoutMs: number, where: string) {
  const reply = await redis.call(command.kind, ...command.args);
  if (!confirmed(command, reply)) {
    throw new DurabilityUnavailableError(
      `SURGE_DURABILITY=durable: ${command.kind} ${command.args.join(' ')} did not confirm ` +
        `within ${timeoutMs} ms${where} (reply ${JSON.stringify(reply)})`,
    );
  }
}

/**
 * Chooses WAITAOF 1 0 or WAIT 1 for this server (on Cluster: for every master) and runs it once
 * (on every master). Throws DurabilityUnavailableError saying why when it cannot succeed.
 */
export async function checkDurability(
  redis: RedisClient,
  config: Pick<Config, 'durableTimeoutMs'>,
): Promise<DurabilityCommand> {
  if (redis instanceof Cluster) return checkClusterDurability(redis, config);
  const can = await capabilityOf(redis);
  let command: DurabilityCommand;
  if (can.waitAof) command = { kind: 'WAITAOF', args: [1, 0, config.durableTimeoutMs] };
  else if (can.wait) command = { kind: 'WAIT', args: [1, config.durableTimeoutMs] };
  else {
    throw new DurabilityUnavailableError(
      `SURGE_DURABILITY=durable cannot be honoured by this Redis: ${can.why.join('; ')}. ` +
        'Enable AOF on Redis ≥ 7.2, add a replica, or use SURGE_DURABILITY=fast',
    );
  }
  await proveOnce(redis, command, config.durableTimeoutMs, '');
  return command;
}

/** `host:port` of a node connection, as ioredis keys its slot table. */
function nodeName(node: Redis): string {
  return `${node.options.host}:${node.options.port}`;
}

/**
 * One command for every master, so that a master promoted later runs the one chosen here:
 * WAITAOF 1 0 when every master can give it, else WAIT 1 when every master has a replica.
 */
async function checkClusterDurability(
  cluster: Cluster,
  config: Pick<Config, 'durableTimeoutMs'>,
): Promise<DurabilityCommand> {
  const masters = cluster.nodes('master');
  if (masters.length === 0)
    throw new DurabilityUnavailableError('SURGE_DURABILITY=durable: the Redis Cluster client knows no master');
  const caps = await Promise.all(masters.map(async (node) => ({ node, can: await capabilityOf(node) })));
  let command: DurabilityCommand;
  if (caps.every(({ can }) => can.waitAof)) command = { kind: 'WAITAOF', args: [1, 0, config.durableTimeoutMs] };
  else if (caps.every(({ can }) => can.wait)) command = { kind: 'WAIT', args: [1, config.durableTimeoutMs] };
  else {
    const lacking = caps
      .filter(({ can }) => can.why.length > 0)
      .map(({ node, can }) => `master ${nodeName(node)}: ${can.why.join('; ')}`);
    throw new DurabilityUnavailableError(
      'SURGE_DURABILITY=durable cannot be honoured by this Redis Cluster: every master must give the same ' +
        `command, WAITAOF 1 0 or WAIT 1, after the accept call on it. ${lacking.join('. ')}. ` +
        'Enable AOF on Redis ≥ 7.2 on every master, give every master a replica, or use SURGE_DURABILITY=fast',
    );
  }
  for (const { node } of caps) await proveOnce(node, command, config.durableTimeoutMs, ` on master ${nodeName(node)}`);
  return command;
}

/** Group commit of WAITAOF/WAIT on one connection: `wait()` resolves true once a call issued after it confirmed. */
export class DurabilityBarrier {
  private waiting: Array<(ok: boolean) => void> = [];
  private running = false;

  constructor(
    private readonly redis: Redis,
    readonly command: DurabilityCommand,
  ) {}

  /** Call after the write's reply arrived; resolves false when the write could not be confirmed. */
  wait(): Promise<boolean> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.waiting.length > 0) {
      const batch = this.waiting;
      this.waiting = [];
      let ok = false;
      try {
        ok = confirmed(this.command, await this.redis.call(this.command.kind, ...this.command.args));
      } catch {
        ok = false;
      }
      for (const resolve of batch) resolve(ok);
    }
    this.running = false;
  }
}

/**
 * Durable mode on Redis Cluster. WAIT/WAITAOF count the writes of the connection they run on, so
 * the accept call must run on the very connection the barrier waits on: `route` names the
 * master that serves a key's slot now (from the client's slot table) with that connection's
 * barrier, and the caller sends the call there itself instead of letting the cluster client
 * route (and maybe redirect) it. A redirect or a lost node then fails the call (503) and
 * refreshes the slot table, so the next call goes to the slot's new master after a failover.
 */
export class ClusterDurability {
  private readonly barriers = new WeakMap<Redis, DurabilityBarrier>();
  private readonly slots = new Map<string, number>();

  constructor(
    private readonly cluster: Cluster,
    readonly command: DurabilityCommand,
  ) {}

  /** The master connection serving `key`'s slot and its barrier; undefined when the client knows none (refreshes). */
  route(key: string): { node: Redis; barrier: DurabilityBarrier } | undefined {
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = keySlot(key);
      this.slots.set(key, slot);
    }
    const owner = this.cluster.slots[slot]?.[0];
    const node = owner === undefined ? undefined : this.cluster.nodes('master').find((n) => nodeName(n) === owner);
    if (!node || node.status === 'end' || node.status === 'close') {
      this.refresh();
      return undefined;
    }
    let barrier = this.barriers.get(node);
    if (!barrier) {
      // The accept calls run on this connection directly, not through the cluster client.
      defineIngestCommands(node);
      barrier = new DurabilityBarrier(node, this.command);
      this.barriers.set(node, barrier);
    }
    return { node, barrier };
  }

  /** After a call failed on a node (redirected, node gone): learn the slots' owners again. */
  refresh(): void {
    this.cluster.refreshSlotsCache();
  }
}
