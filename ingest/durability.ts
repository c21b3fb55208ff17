// Durable mode (SURGE_DURABILITY=durable): a 202 also waits for WAITAOF 1 0 (Redis ≥ 7.2 with
// appendonly: the write is fsynced to the local AOF) or WAIT 1 (a replica received it).
// `checkDurability` picks one at start and proves it works once, or refuses with the reason.
// `DurabilityBarrier` group-commits: WAIT/WAITAOF block the connection they run on and cover
// every earlier write of that connection, so one call answers every order written before it.
import type { Redis } from 'ioredis';
import type { Config } from '../common/config.js';
import type { RedisClient } from '../common/redis.js';

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

/**
 * Chooses WAITAOF 1 0 or WAIT 1 for this server and runs it once. Throws
 * DurabilityUnavailableError saying why when neither can succeed.
 */
export async function checkDurability(
  redis: RedisClient,
  config: Pick<Config, 'durableTimeoutMs' | 'redisClusterNodes'>,
): Promise<DurabilityCommand> {
  if (config.redisClusterNodes.length > 0) {
    throw new DurabilityUnavailableError(
      'SURGE_DURABILITY=durable is not supported on Redis Cluster yet (WAITAOF/WAIT must run on the node of each ' +
        'shard); use fast mode with appendfsync always on the nodes',
    );
  }
  const [server, persistence, replication] = await Promise.all([
    redis.info('server'),
    redis.info('persistence'),
    redis.info('replication'),
  ]);
  const version = infoField(server, 'redis_version') ?? '0.0.0';
  const aof = infoField(persistence, 'aof_enabled') === '1';
  const replicas = Number(infoField(replication, 'connected_slaves') ?? '0');
  const hasWaitAof = versionAtLeast(version, 7, 2);
  let command: DurabilityCommand;
  if (hasWaitAof && aof) command = { kind: 'WAITAOF', args: [1, 0, config.durableTimeoutMs] };
  else if (replicas >= 1) command = { kind: 'WAIT', args: [1, config.durableTimeoutMs] };
  else {
    const why = [
      hasWaitAof
        ? 'WAITAOF 1 0 needs appendonly yes (aof_enabled:0)'
        : `WAITAOF needs Redis ≥ 7.2 (this server is ${version})`,
      'WAIT 1 needs a connected replica (connected_slaves:0)',
    ];
    throw new DurabilityUnavailableError(
      `SURGE_DURABILITY=durable cannot be honoured by this Redis: ${why.join('; ')}. ` +
        'Enable AOF on Redis ≥ 7.2, add a replica, or use SURGE_DURABILITY=fast',
    );
  }
  const reply = await redis.call(command.kind, ...command.args);
  if (!confirmed(command, reply)) {
    throw new DurabilityUnavailableError(
      `SURGE_DURABILITY=durable: ${command.kind} ${command.args.join(' ')} did not confirm ` +
        `within ${config.durableTimeoutMs} ms (reply ${JSON.stringify(reply)})`,
    );
  }
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
