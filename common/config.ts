// The one place Surge reads its environment. Every variable is declared once below with its
// default, its accepted values and a description; `loadConfig` validates them all at start and
// `configMarkdownTable` renders the README's table from the same declarations (a test checks
// the README against it, so the two cannot drift).

export type Durability = 'fast' | 'durable';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  /** PostgreSQL connection string. */
  databaseUrl: string;
  /** Redis URL (single node). */
  redisUrl: string;
  /** Redis Cluster seed nodes; when non-empty Surge connects in cluster mode. */
  redisClusterNodes: Array<{ host: string; port: number }>;
  /** Prefix of every Redis key (tests and tenants share a server by prefix). */
  redisPrefix: string;
  /** Number of shard streams. Changing it on a live deployment is a migration. */
  shards: number;
  listenHost: string;
  ingestPort: number;
  /** Ingest `/metrics` port, apart from the public API port. */
  ingestMetricsPort: number;
  /** The request line and headers must arrive within this (slowloris guard). */
  ingestHeadersTimeoutMs: number;
  /** The whole request, body included, must arrive within this. */
  ingestRequestTimeoutMs: number;
  /** Threads that prepare large `:batch` bodies (0: the main thread does). */
  ingestBatchThreads: number;
  /** Ingest sheds writes (503) while this many are in flight. 0 disables. */
  ingestMaxInFlight: number;
  /** Ingest sheds writes (503) while the event-loop delay is over this (ms). 0 disables. */
  ingestMaxEventLoopDelayMs: number;
  /** Ingest sheds writes (503) arriving once the event-loop turn has run longer than this (ms). 0 disables. */
  ingestMaxTurnMs: number;
  /** Connections the kernel queues before ingest accepts them (listen backlog). */
  ingestListenBacklog: number;
  /** Listeners polling the API socket; each takes one new connection per event-loop turn. */
  ingestListeners: number;
  /** Where ingest writes its event-loop timeline when it stops ('' = not recorded). */
  ingestTimelineFile: string;
  /** Node flags `surge up` starts ingest with (before the script). */
  ingestNodeFlags: string[];
  /** Node flags `surge up` starts the worker with (before the script). */
  workerNodeFlags: string[];
  workerMetricsPort: number;
  lagExporterPort: number;
  durability: Durability;
  /** Wait at most this long for WAITAOF/WAIT in durable mode. */
  durableTimeoutMs: number;
  idempotencyTtlSeconds: number;
  authCacheMs: number;
  /** Ingest answers 503 when lag + pending across shards passes this. 0 disables. */
  maxBacklog: number;
  /** Ingest answers 503 when Redis used_memory passes this many bytes. 0 = 90 % of maxmemory if set. */
  maxRedisMemoryBytes: number;
  /** How often ingest re-reads backlog and memory for its 503 decision. */
  backpressureIntervalMs: number;
  batchSize: number;
  batchLingerMs: number;
  workerThreads: number;
  /** How much a worker process lowers its OS priority (nice) at start. */
  workerNice: number;
  /** Apply transactions in flight per worker process; 0: adaptive. */
  maxInFlight: number;
  /** PostgreSQL connections per worker process. */
  pgPoolSize: number;
  claimTimeoutMs: number;
  claimIntervalMs: number;
  maxDeliveries: number;
  shutdownTimeoutMs: number;
  lagCacheMs: number;
  /** How often the stream jobs (safe trim, idle-consumer cleanup) run. */
  maintenanceIntervalMs: number;
  /** Outcome stream entries older than this are trimmed, read by a downstream group or not. */
  outcomeRetentionSeconds: number;
  /** How often the PostgreSQL retention jobs (orders, dead letters) run. */
  retentionIntervalMs: number;
  /** Orders (and so their idempotency keys) older than this many days are deleted; 0 keeps them forever. */
  orderRetentionDays: number;
  /** Dead letters first seen longer ago than this many days are deleted; 0 keeps them forever. */
  deadLetterRetentionDays: number;
  /** Rows per DELETE statement of the retention jobs (one short transaction each). */
  retentionBatchSize: number;
  /** A consumer idle longer than this is removed from its group (its pending entries are claimed first). */
  consumerIdleMs: number;
  /** `surge maintenance` `/metrics`, `/healthz`, `/readyz` port. */
  maintenanceMetricsPort: number;
  /** Address `surge dashboard` binds (loopback by default, whatever SURGE_LISTEN_HOST says). */
  dashboardHost: string;
  /** Port of `surge dashboard` (Bull Board). */
  dashboardPort: number;
  logLevel: LogLevel;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

interface VarSpec<K extends keyof Config> {
  name: string;
  key: K;
  default: string;
  accepts: string;
  description: string;
  parse: (raw: string, name: string) => Config[K];
}

function int(min: number, max: number) {
  return (raw: string, name: string): number => {
    if (!/^-?\d+$/.test(raw.trim())) {
      throw new ConfigError(name, `"${raw}" is not an integer; accepted: an integer from ${min} to ${max}`);
    }
    const n = Number(raw.trim());
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(name, `${raw} is out of range; accepted: an integer from ${min} to ${max}`);
    }
    return n;
  };
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: string, name: string): T => {
    const v = raw.trim() as T;
    if (!values.includes(v)) {
      throw new ConfigError(name, `"${raw}" is not accepted; accepted: ${values.join(' | ')}`);
    }
    return v;
  };
}

function url(protocols: readonly string[]) {
  return (raw: string, name: string): string => {
    let u: URL;
    try {
      u = new URL(raw);
    } catch {
      throw new ConfigError(
        name,
        `"${redact(raw)}" is not a URL; accepted: ${protocols.map((p) => `${p}//…`).join(' or ')}`,
      );
    }
    if (!protocols.includes(u.protocol)) {
      throw new ConfigError(name, `protocol ${u.protocol} is not accepted; accepted: ${protocols.join(' or ')}`);
    }
    return raw;
  };
}

function redact(raw: string): string {
  return raw.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
}

function hostPorts(raw: string, name: string): Array<{ host: string; port: number }> {
  if (raw.trim() === '') return [];
  return raw.split(',').map((part) => {
    const [, host, portText] = /^\s*([^\s:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})\s*$/.exec(part) ?? [];
    const port = Number(portText);
    if (host === undefined || port < 1 || port > 65535) {
      throw new ConfigError(name, `"${part}" is not host:port; accepted: comma-separated host:port list`);
    }
    return { host, port };
  });
}

function prefix(raw: string, name: string): string {
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(raw)) {
    throw new ConfigError(
      name,
      `"${raw}" is not accepted; accepted: 1–64 characters of A–Z a–z 0–9 _ . : - (no braces)`,
    );
  }
  return raw;
}

function text(raw: string): string {
  return raw;
}

function nodeFlags(raw: string, name: string): string[] {
  const flags = raw.split(/\s+/).filter(Boolean);
  for (const f of flags) {
    if (!f.startsWith('--'))
      throw new ConfigError(name, `"${f}" is not a node flag; accepted: space-separated --flags`);
  }
  return flags;
}

// The declarations. Order = order of the README table.
const SPECS = [
  {
    name: 'DATABASE_URL',
    key: 'databaseUrl',
    default: 'postgres://postgres@127.0.0.1:5432/surge',
    accepts: 'postgres:// or postgresql:// URL',
    description: 'PostgreSQL to apply orders to (`surge up` creates the database if it is missing).',
    parse: url(['postgres:', 'postgresql:']),
  },
  {
    name: 'REDIS_URL',
    key: 'redisUrl',
    default: 'redis://127.0.0.1:6379',
    accepts: 'redis:// or rediss:// URL',
    description: 'Redis holding the shard streams and idempotency records.',
    parse: url(['redis:', 'rediss:']),
  },
  {
    name: 'REDIS_CLUSTER_NODES',
    key: 'redisClusterNodes',
    default: '',
    accepts: 'comma-separated host:port',
    description:
      'Seed nodes of a Redis Cluster; when set, Surge uses cluster mode and ignores the host of `REDIS_URL`.',
    parse: hostPorts,
  },
  {
    name: 'SURGE_REDIS_PREFIX',
    key: 'redisPrefix',
    default: 'surge',
    accepts: '1–64 of `A-Za-z0-9_.:-`',
    description: 'Every Redis key starts with it (streams are `<prefix>:{s<i>}:orders`).',
    parse: prefix,
  },
  {
    name: 'SURGE_SHARDS',
    key: 'shards',
    default: '4',
    accepts: 'integer 1–1024',
    description: 'Number of shard streams. Changing it on a live deployment moves keys: treat it as a migration.',
    parse: int(1, 1024),
  },
  {
    name: 'SURGE_LISTEN_HOST',
    key: 'listenHost',
    default: '127.0.0.1',
    accepts: 'an address',
    description: 'Address the HTTP servers bind (containers set `0.0.0.0`).',
    parse: text,
  },
  {
    name: 'SURGE_INGEST_PORT',
    key: 'ingestPort',
    default: '8080',
    accepts: 'integer 0–65535',
    description: 'Ingest HTTP API port, with `/healthz` and `/readyz` (the probes). 0 picks a free port.',
    parse: int(0, 65535),
  },
  {
    name: 'SURGE_INGEST_METRICS_PORT',
    key: 'ingestMetricsPort',
    default: '9463',
    accepts: 'integer 0–65535, ≠ SURGE_INGEST_PORT',
    description:
      'Ingest `/metrics` port, kept off the public API port so only Prometheus need reach it. 0 picks a free port.',
    parse: int(0, 65535),
  },
  {
    name: 'SURGE_INGEST_HEADERS_TIMEOUT_MS',
    key: 'ingestHeadersTimeoutMs',
    default: '10000',
    accepts: 'integer 100–600000',
    description:
      'Ingest closes a connection whose request line and headers have not all arrived within this (slowloris guard; ' +
      'answers 408).',
    parse: int(100, 600000),
  },
  {
    name: 'SURGE_INGEST_REQUEST_TIMEOUT_MS',
    key: 'ingestRequestTimeoutMs',
    default: '30000',
    accepts: 'integer 100–600000, ≥ the headers timeout',
    description:
      'Ingest answers 408 and closes the connection when a whole request (body included) has not arrived within this.',
    parse: int(100, 600000),
  },
  {
    name: 'SURGE_INGEST_BATCH_THREADS',
    key: 'ingestBatchThreads',
    default: '1',
    accepts: 'integer 0–16',
    description:
      'Threads that parse, validate and fingerprint `:batch` bodies of 16 KiB or more, off the event loop. ' +
      '0: the main thread does it (use 0 when ingest has a single core).',
    parse: int(0, 16),
  },
  {
    name: 'SURGE_INGEST_MAX_IN_FLIGHT',
    key: 'ingestMaxInFlight',
    default: '1000',
    accepts: 'integer ≥ 0',
    description:
      'Ingest answers writes 503 + Retry-After at once, before reading the body, while this many writes are being ' +
      'served (overload at the door); 0 disables.',
    parse: int(0, Number.MAX_SAFE_INTEGER),
  },
  {
    name: 'SURGE_INGEST_MAX_EVENT_LOOP_DELAY_MS',
    key: 'ingestMaxEventLoopDelayMs',
    default: '50',
    accepts: 'integer 0–10000',
    description:
      'Ingest answers writes 503 + Retry-After at once, before reading the body, while its event-loop delay ' +
      '(mean over the last 100 ms) is over this; 0 disables.',
    parse: int(0, 10000),
  },
  {
    name: 'SURGE_INGEST_MAX_TURN_MS',
    key: 'ingestMaxTurnMs',
    default: '20',
    accepts: 'integer 0–10000',
    description:
      'Ingest answers writes 503 + Retry-After at once, before reading the body, when they arrive in an event-loop ' +
      'turn that has already run longer than this (a burst read in one turn, where no timer runs), and reads nothing ' +
      'more from their connections in that turn; 0 disables.',
    parse: int(0, 10000),
  },
  {
    name: 'SURGE_INGEST_TIMELINE_FILE',
    key: 'ingestTimelineFile',
    default: '',
    accepts: 'a file path, or empty',
    description:
      'A debugging aid: ingest records when its event loop ran late (stalls over 10 ms), its GC pauses, its CPU ' +
      "every 100 ms, and each request read (its loop turn, answer time and status, and a load generator's send " +
      'time), and writes them to this JSON file when it stops (docs/performance.md); empty: nothing recorded.',
    parse: text,
  },
  {
    name: 'SURGE_INGEST_NODE_FLAGS',
    key: 'ingestNodeFlags',
    default: '',
    accepts: 'space-separated `--flags`, or empty',
    description:
      'Node flags `surge up` (and the bench scenarios) start ingest with, for those NODE_OPTIONS does not accept ' +
      '(such as `--single-threaded-gc`); a container sets them in its command instead (docs/performance.md).',
    parse: nodeFlags,
  },
  {
    name: 'SURGE_WORKER_NODE_FLAGS',
    key: 'workerNodeFlags',
    default: '',
    accepts: 'space-separated `--flags`, or empty',
    description:
      'Node flags `surge up` (and the bench scenarios) start the worker with, for those NODE_OPTIONS does not ' +
      'accept (such as `--min-semi-space-size=16`); a container sets them in its command instead (docs/workers.md).',
    parse: nodeFlags,
  },
  {
    name: 'SURGE_INGEST_LISTEN_BACKLOG',
    key: 'ingestListenBacklog',
    default: '4096',
    accepts: 'integer 1–65535',
    description:
      'Connections the kernel holds for ingest before it accepts them (the listen backlog; Linux caps it at ' +
      '`net.core.somaxconn`). A connection beyond it is not refused on Linux but dropped, and its client waits ' +
      'a second or more to try again.',
    parse: int(1, 65535),
  },
  {
    name: 'SURGE_INGEST_LISTENERS',
    key: 'ingestListeners',
    default: '16',
    accepts: 'integer 1–64',
    description:
      'Listeners on the API socket. Node takes one new connection per event-loop turn from each, so a burst of ' +
      'new connections waits in the listen queue for turns; more listeners take more per turn (and a lone new ' +
      'connection costs each extra one an accept call that finds nothing).',
    parse: int(1, 64),
  },
  {
    name: 'SURGE_WORKER_METRICS_PORT',
    key: 'workerMetricsPort',
    default: '9464',
    accepts: 'integer 0–65535',
    description: 'Worker `/metrics`, `/healthz`, `/readyz` port. 0 picks a free port.',
    parse: int(0, 65535),
  },
  {
    name: 'SURGE_LAG_EXPORTER_PORT',
    key: 'lagExporterPort',
    default: '9465',
    accepts: 'integer 0–65535',
    description: 'Lag exporter `/metrics` port. 0 picks a free port.',
    parse: int(0, 65535),
  },
  {
    name: 'SURGE_DURABILITY',
    key: 'durability',
    default: 'fast',
    accepts: '`fast` | `durable`',
    description:
      '`fast`: answer 202 once Redis acknowledged the XADD. `durable`: also wait for `WAITAOF 1 0` ' +
      '(or `WAIT 1` with a replica); refuses to start if the server can give neither.',
    parse: oneOf(['fast', 'durable'] as const),
  },
  {
    name: 'SURGE_DURABLE_TIMEOUT_MS',
    key: 'durableTimeoutMs',
    default: '1000',
    accepts: 'integer 1–60000',
    description: 'Longest wait for WAITAOF/WAIT before answering 503 in durable mode.',
    parse: int(1, 60000),
  },
  {
    name: 'SURGE_IDEMPOTENCY_TTL_SECONDS',
    key: 'idempotencyTtlSeconds',
    default: '86400',
    accepts: 'integer 60–2592000',
    description:
      'Lifetime of the Redis idempotency record (PostgreSQL keeps the key as the final word). ' +
      'Keep it ≥ 86400 and beyond any client retry window in production; short values are for soaks and tests.',
    parse: int(60, 2592000),
  },
  {
    name: 'SURGE_AUTH_CACHE_MS',
    key: 'authCacheMs',
    default: '5000',
    accepts: 'integer 0–600000',
    description: 'How long ingest caches an API-key lookup (a revoked key works at most this long).',
    parse: int(0, 600000),
  },
  {
    name: 'SURGE_MAX_BACKLOG',
    key: 'maxBacklog',
    default: '1000000',
    accepts: 'integer ≥ 0',
    description: 'Ingest answers 503 + Retry-After while lag + pending over all shards exceeds this; 0 disables.',
    parse: int(0, Number.MAX_SAFE_INTEGER),
  },
  {
    name: 'SURGE_MAX_REDIS_MEMORY_BYTES',
    key: 'maxRedisMemoryBytes',
    default: '0',
    accepts: 'integer ≥ 0',
    description:
      'Ingest answers 503 while Redis `used_memory` exceeds this; 0 = 90 % of Redis `maxmemory` when that is set.',
    parse: int(0, Number.MAX_SAFE_INTEGER),
  },
  {
    name: 'SURGE_BACKPRESSURE_INTERVAL_MS',
    key: 'backpressureIntervalMs',
    default: '500',
    accepts: 'integer 50–60000',
    description: 'How often ingest re-reads backlog and Redis memory for the 503 decision.',
    parse: int(50, 60000),
  },
  {
    name: 'SURGE_BATCH_SIZE',
    key: 'batchSize',
    default: '1000',
    accepts: 'integer 1–10000',
    description: 'Most entries per apply batch (one PostgreSQL transaction); docs/workers.md: how it was chosen.',
    parse: int(1, 10000),
  },
  {
    name: 'SURGE_BATCH_LINGER_MS',
    key: 'batchLingerMs',
    default: '0',
    accepts: 'integer 0–10000',
    description:
      'How long a worker waits to fill a batch before applying a partial one ' +
      '(0: backpressure alone makes batches grow under load; docs/workers.md).',
    parse: int(0, 10000),
  },
  {
    name: 'SURGE_WORKER_THREADS',
    key: 'workerThreads',
    default: '0',
    accepts: 'integer 0–64',
    description:
      'piscina threads per worker process, each applying batches over its share of the connections ' +
      '(0: no threads, the main thread applies them; docs/workers.md).',
    parse: int(0, 64),
  },
  {
    name: 'SURGE_WORKER_NICE',
    key: 'workerNice',
    default: '0',
    accepts: 'integer 0–19',
    description:
      'Nice increment a worker process applies to itself at start (and to its autogroup when it leads its ' +
      'session, as under `surge up`), so co-located ingest keeps the cores it needs (`surge up` sets 10 ' +
      'unless given; docs/workers.md).',
    parse: int(0, 19),
  },
  {
    name: 'SURGE_MAX_IN_FLIGHT',
    key: 'maxInFlight',
    default: '0',
    accepts: 'integer 0–256',
    description:
      'Apply transactions in flight per worker process. 0: adaptive, from 1 up to the connections, ' +
      'following batch fullness and commit latency (docs/workers.md).',
    parse: int(0, 256),
  },
  {
    name: 'SURGE_PG_POOL_SIZE',
    key: 'pgPoolSize',
    default: '4',
    accepts: 'integer 1–200',
    description:
      'PostgreSQL connections per worker process, shared equally by its threads if it has any ' +
      '(budget replicas × this against `max_connections`).',
    parse: int(1, 200),
  },
  {
    name: 'SURGE_CLAIM_TIMEOUT_MS',
    key: 'claimTimeoutMs',
    default: '30000',
    accepts: 'integer 100–3600000',
    description: 'An entry pending longer than this is claimed by another consumer (keep ≥ 3× the worst batch time).',
    parse: int(100, 3600000),
  },
  {
    name: 'SURGE_CLAIM_INTERVAL_MS',
    key: 'claimIntervalMs',
    default: '5000',
    accepts: 'integer 50–600000',
    description: 'How often each worker runs XAUTOCLAIM.',
    parse: int(50, 600000),
  },
  {
    name: 'SURGE_MAX_DELIVERIES',
    key: 'maxDeliveries',
    default: '5',
    accepts: 'integer 1–1000',
    description: 'An entry delivered more often than this is dead-lettered.',
    parse: int(1, 1000),
  },
  {
    name: 'SURGE_SHUTDOWN_TIMEOUT_MS',
    key: 'shutdownTimeoutMs',
    default: '20000',
    accepts: 'integer 100–600000',
    description: 'Graceful drain on SIGTERM before a forced exit (keep below the pod termination grace period).',
    parse: int(100, 600000),
  },
  {
    name: 'SURGE_LAG_CACHE_MS',
    key: 'lagCacheMs',
    default: '1000',
    accepts: 'integer 0–60000',
    description: 'The lag exporter reuses one Redis reading for this long across scrapes.',
    parse: int(0, 60000),
  },
  {
    name: 'SURGE_MAINTENANCE_INTERVAL_MS',
    key: 'maintenanceIntervalMs',
    default: '60000',
    accepts: 'integer 100–86400000',
    description:
      'Tick of the stream maintenance jobs (safe trim, idle-consumer cleanup); ' +
      'one execution per tick across all `surge maintenance` replicas.',
    parse: int(100, 86_400_000),
  },
  {
    name: 'SURGE_OUTCOME_RETENTION_SECONDS',
    key: 'outcomeRetentionSeconds',
    default: '3600',
    accepts: 'integer 60–2592000',
    description:
      'How long the outcome streams keep an entry: maintenance trims older ones even when no downstream ' +
      'group has read them (without a group, only this trims), so memory stays bounded. A reader further ' +
      'behind than this misses outcomes (GET still answers).',
    parse: int(60, 2_592_000),
  },
  {
    name: 'SURGE_RETENTION_INTERVAL_MS',
    key: 'retentionIntervalMs',
    default: '3600000',
    accepts: 'integer 100–86400000',
    description: 'Tick of the PostgreSQL retention jobs (expired orders, old dead letters).',
    parse: int(100, 86_400_000),
  },
  {
    name: 'SURGE_ORDER_RETENTION_DAYS',
    key: 'orderRetentionDays',
    default: '0',
    accepts: 'integer 0–36500',
    description:
      'Orders received longer ago than this are deleted, and with them their idempotency keys ' +
      '(a later retry of such a key would be applied again). 0 keeps them forever.',
    parse: int(0, 36500),
  },
  {
    name: 'SURGE_DLQ_RETENTION_DAYS',
    key: 'deadLetterRetentionDays',
    default: '30',
    accepts: 'integer 0–36500',
    description:
      'Dead letters (table rows and DLQ stream entries) first seen longer ago than this are deleted, ' +
      'replayed or not. 0 keeps them forever.',
    parse: int(0, 36500),
  },
  {
    name: 'SURGE_RETENTION_BATCH_SIZE',
    key: 'retentionBatchSize',
    default: '1000',
    accepts: 'integer 1–100000',
    description: 'Rows per DELETE of the retention jobs; each batch is its own short transaction.',
    parse: int(1, 100_000),
  },
  {
    name: 'SURGE_CONSUMER_IDLE_MS',
    key: 'consumerIdleMs',
    default: '3600000',
    accepts: 'integer 100–2592000000, ≥ `SURGE_CLAIM_TIMEOUT_MS`',
    description:
      'A group consumer idle longer than this is removed (`XGROUP DELCONSUMER`) ' +
      '— only once it holds no pending entries; its pending entries are first claimed by a live consumer.',
    parse: int(100, 2_592_000_000),
  },
  {
    name: 'SURGE_MAINTENANCE_METRICS_PORT',
    key: 'maintenanceMetricsPort',
    default: '9466',
    accepts: 'integer 0–65535',
    description: '`surge maintenance` `/metrics`, `/healthz`, `/readyz` port. 0 picks a free port.',
    parse: int(0, 65535),
  },
  {
    name: 'SURGE_DASHBOARD_HOST',
    key: 'dashboardHost',
    default: '127.0.0.1',
    accepts: 'an address',
    description:
      'Address `surge dashboard` (Bull Board) binds. Not taken from `SURGE_LISTEN_HOST`: the board can retry and ' +
      'delete jobs and has no login, so it stays on loopback unless set here or with `--host`.',
    parse: text,
  },
  {
    name: 'SURGE_DASHBOARD_PORT',
    key: 'dashboardPort',
    default: '9467',
    accepts: 'integer 0–65535',
    description: '`surge dashboard` port (`--port`). 0 picks a free port.',
    parse: int(0, 65535),
  },
  {
    name: 'SURGE_LOG_LEVEL',
    key: 'logLevel',
    default: 'info',
    accepts: '`fatal` | `error` | `warn` | `info` | `debug` | `trace` | `silent`',
    description: 'Log level of the JSON logs (stdout).',
    parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
  },
] as const satisfies ReadonlyArray<VarSpec<keyof Config>>;

/** The names of every variable Surge reads (used by the k8s checks). */
export const CONFIG_VARIABLES: readonly string[] = SPECS.map((s) => s.name);

/** Reads and validates the configuration. Throws ConfigError naming the variable. */
export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const out: Record<string, unknown> = {};
  for (const spec of SPECS) {
    const raw = env[spec.name];
    const value = raw === undefined || raw === '' ? spec.default : raw;
    out[spec.key] = (spec.parse as (raw: string, name: string) => unknown)(value, spec.name);
  }
  const config = { ...(out as unknown as Config), ...overrides };
  if (config.claimTimeoutMs < config.batchLingerMs * 3) {
    throw new ConfigError(
      'SURGE_CLAIM_TIMEOUT_MS',
      `must be at least 3× SURGE_BATCH_LINGER_MS (${config.batchLingerMs * 3})`,
    );
  }
  if (config.ingestHeadersTimeoutMs > config.ingestRequestTimeoutMs) {
    throw new ConfigError(
      'SURGE_INGEST_HEADERS_TIMEOUT_MS',
      `must not exceed SURGE_INGEST_REQUEST_TIMEOUT_MS (${config.ingestRequestTimeoutMs})`,
    );
  }
  if (config.consumerIdleMs < config.claimTimeoutMs) {
    throw new ConfigError(
      'SURGE_CONSUMER_IDLE_MS',
      `must be at least SURGE_CLAIM_TIMEOUT_MS (${config.claimTimeoutMs})`,
    );
  }
  if (config.ingestMetricsPort !== 0 && config.ingestMetricsPort === config.ingestPort) {
    throw new ConfigError(
      'SURGE_INGEST_METRICS_PORT',
      `must differ from SURGE_INGEST_PORT (${config.ingestPort}): /metrics is not served on the API port`,
    );
  }
  return config;
}

/** The README's configuration table, generated from the declarations above. */
export function configMarkdownTable(): string {
  const rows = SPECS.map(
    (s) => `| \`${s.name}\` | ${s.default === '' ? '(unset)' : `\`${s.default}\``} | ${s.accepts} | ${s.description} |`,
  );
  return ['| Variable | Default | Accepted | Meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

/** A URL with its password replaced, for logs and banners. */
export function redactUrl(raw: string): string {
  return redact(raw);
}
