// The fault suite's stack: its own redis-server (AOF, appendfsync always) or a Redis Cluster,
// its own PostgreSQL (a private instance it may restart, or a database on the shared server),
// 2 `surge ingest` + 2 `surge work` processes, the load client, and the fault runner: one fault
// at a time (or a mix), then drain, then the one checker. Each run of a fault is a row of the
// results table.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { type CreatedClient, createClient } from '../../common/clients.js';
import { allOutcomeKeys, allStreamKeys, GROUP, streamKey } from '../../common/keys.js';
import { parseOutcome } from '../../common/outcome.js';
import { migrate } from '../../common/migrate.js';
import { createRedis, type RedisClient } from '../../common/redis.js';
import { streamBacklog } from '../../ingest/backpressure.js';
import type { RedisClusterHandle } from '../support/cluster.js';
import { createTestDatabase, uniquePrefix } from '../../devkit/scratch.js';
import { type RedisServer, startRedisServer } from '../../devkit/redis-server.js';
import { waitFor } from '../../devkit/wait.js';
import { defined } from '../support/defined.js';
import { http } from '../support/http.js';
import { metricValues, type SurgeProcess, type SurgeRole, startSurge } from '../support/procs.js';
import { type CheckResult, checkInvariants } from './checker.js';
import { LoadClient } from './load.js';
import { type PrivatePostgres, postgresOwner, startPrivatePostgres } from './private-pg.js';
import { mountSmallFs, type SmallFs } from './small-fs.js';

/** Each fault the suites inject one at a time, in the order they run them. */
export const SINGLE_FAULTS = [
  'worker-sigkill',
  'ingest-sigkill',
  'worker-sigstop',
  'redis-restart',
  'postgres-restart',
  'pg-terminate-backend',
  'postgres-read-only',
  'redis-disk-full',
  'postgres-disk-full',
] as const;
/** The faults that need the small filesystems (`smallDisks`). */
export const DISK_FULL: ReadonlySet<FaultName> = new Set<FaultName>(['redis-disk-full', 'postgres-disk-full']);

export type FaultName =
  | 'none'
  | (typeof SINGLE_FAULTS)[number]
  | 'cluster-master-restart'
  | 'cluster-failover'
  | 'mixed';

export interface FaultRow {
  fault: FaultName;
  /** Distinct orders (keys) the client sent in this phase. */
  sent: number;
  /** HTTP requests for them (retries included). */
  requests: number;
  accepted: number;
  /** Rows in `orders` for the phase's keys (applied + rejected out of stock). */
  applied: number;
  rejected: number;
  deadLettered: number;
  duplicates: number;
  lost: number;
  phantoms: number;
  /** Fault injected → every order accepted before it is in PostgreSQL, ms. */
  recoveryMs: number;
  metrics: string;
  check: CheckResult;
}

export interface StackOptions {
  /** Private PostgreSQL (needed for restart / read-only faults). Default true. */
  privatePostgres?: boolean;
  /** Use this Redis Cluster instead of an own redis-server. */
  cluster?: RedisClusterHandle;
  shards?: number;
  claimTimeoutMs?: number;
  ingests?: number;
  workers?: number;
  /** Extra environment for every process. */
  env?: Record<string, string>;
  /**
   * Put the own redis-server's folder and the private PostgreSQL's database (a tablespace) each
   * on a small tmpfs, for the disk-full faults. Needs root and a mountable tmpfs; without them
   * the stack runs on the ordinary disk and `canFillDisks` is false.
   */
  smallDisks?: boolean;
  /** Load: concurrent senders. */
  concurrency?: number;
  /** Orders accepted between the steps of a fault (how long each step lasts, in load, not time). */
  progress?: number;
  log?: (line: string) => void;
}

const STOCKED = ['hot-a', 'hot-b', 'hot-c'];
const INITIAL_STOCK = 400;

export class FaultStack {
  redis?: RedisServer;
  pgServer?: PrivatePostgres;
  /** The small filesystems of the disk-full faults (smallDisks), when they could be mounted. */
  redisFs?: SmallFs;
  pgFs?: SmallFs;
  dropDb?: () => Promise<void>;
  env: Record<string, string> = {};
  ingests: SurgeProcess[] = [];
  workers: SurgeProcess[] = [];
  pool!: pg.Pool;
  admin!: RedisClient;
  client!: CreatedClient;
  load!: LoadClient;
  dbName = 'surge';
  readonly rows: FaultRow[] = [];
  /** Last scraped inserted+rejected (and duplicate) of each worker process (by pid), killed ones too. */
  private readonly scraped = new Map<number, { applied: number; duplicates: number }>();
  private scrapeTimer?: NodeJS.Timeout;
  private workerKilledInPhase = false;
  private readonly opts: Required<Omit<StackOptions, 'cluster' | 'env' | 'log' | 'smallDisks'>> &
    Pick<StackOptions, 'cluster' | 'env' | 'log' | 'smallDisks'>;
  private seq = 0;

  constructor(options: StackOptions = {}) {
    this.opts = {
      privatePostgres: true,
      shards: 4,
      claimTimeoutMs: 1500,
      ingests: 2,
      workers: 2,
      concurrency: 4,
      progress: 100,
      ...options,
    };
  }

  private log(line: string): void {
    this.opts.log?.(line);
  }

  async start(): Promise<void> {
    const prefix = uniquePrefix();
    let redisEnv: { REDIS_URL: string } & Record<string, string>;
    if (this.opts.cluster) {
      redisEnv = {
        REDIS_URL: `redis://${this.opts.cluster.seeds.split(',')[0]}`,
        REDIS_CLUSTER_NODES: this.opts.cluster.seeds,
      };
    } else {
      if (this.opts.smallDisks) this.redisFs = await mountSmallFs(64);
      this.redis = await startRedisServer({
        appendonly: true,
        appendfsync: 'always',
        ...(this.redisFs ? { dir: this.redisFs.folder('redis') } : {}),
      });
      redisEnv = { REDIS_URL: this.redis.url };
    }
    let databaseUrl: string;
    if (this.opts.privatePostgres) {
      this.pgServer = await startPrivatePostgres();
      const admin = new pg.Client({ connectionString: this.pgServer.url('postgres') });
      await admin.connect();
      if (this.opts.smallDisks) this.pgFs = await mountSmallFs(48);
      if (this.pgFs) {
        // The whole database (tables, indexes, the workers' temp staging tables) on the small
        // filesystem; the WAL stays in the data folder.
        const location = this.pgFs.folder('pg', await postgresOwner());
        await admin.query(`CREATE TABLESPACE surge_small LOCATION '${location}'`);
        await admin.query(`CREATE DATABASE ${this.dbName} TABLESPACE surge_small`);
      } else await admin.query(`CREATE DATABASE ${this.dbName}`);
      await admin.end();
      databaseUrl = this.pgServer.url(this.dbName);
      await migrate(databaseUrl);
    } else {
      const db = await createTestDatabase();
      this.dbName = db.name;
      this.dropDb = () => db.drop();
      databaseUrl = db.url;
    }
    const claim = this.opts.claimTimeoutMs;
    this.env = {
      DATABASE_URL: databaseUrl,
      ...redisEnv,
      SURGE_REDIS_PREFIX: prefix,
      SURGE_SHARDS: String(this.opts.shards),
      SURGE_INGEST_PORT: '0',
      SURGE_INGEST_METRICS_PORT: '0',
      SURGE_WORKER_METRICS_PORT: '0',
      SURGE_LAG_EXPORTER_PORT: '0',
      SURGE_MAINTENANCE_METRICS_PORT: '0',
      SURGE_CLAIM_TIMEOUT_MS: String(claim),
      SURGE_CLAIM_INTERVAL_MS: String(Math.max(50, Math.floor(claim / 5))),
      SURGE_MAX_DELIVERIES: '50',
      // The default placement (the main thread applies); test/workers*.test.ts cover threads.
      SURGE_WORKER_THREADS: '0',
      SURGE_BATCH_SIZE: '50',
      SURGE_BATCH_LINGER_MS: '5',
      SURGE_BACKPRESSURE_INTERVAL_MS: '100',
      SURGE_AUTH_CACHE_MS: '60000',
      ...this.opts.env,
    };
    this.pool = new pg.Pool({ connectionString: databaseUrl, max: 2, application_name: 'surge-fault-checker' });
    this.pool.on('error', () => {});
    this.client = await createClient(this.pool, 'fault-load');
    await this.pool.query('INSERT INTO inventory (sku, available) SELECT unnest($1::text[]), $2', [
      STOCKED,
      INITIAL_STOCK,
    ]);
    this.admin = createRedis(
      {
        redisUrl: redisEnv.REDIS_URL,
        redisClusterNodes: this.opts.cluster
          ? this.opts.cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port }))
          : [],
      },
      { connectionName: 'surge-fault-admin', maxRetriesPerRequest: 1 },
    );
    this.admin.on('error', () => {});
    for (let i = 0; i < this.opts.ingests; i++) this.ingests.push(await this.spawn('ingest', i));
    for (let i = 0; i < this.opts.workers; i++) this.workers.push(await this.spawn('work', i));
    this.load = new LoadClient({
      targets: () => this.ingests.filter((p) => p.alive()).map((p) => p.url),
      apiKey: this.client.apiKey,
      concurrency: this.opts.concurrency,
      stockedSkus: STOCKED,
      keyPrefix: `k-${prefix}`,
    });
    this.scrapeTimer = setInterval(() => void this.scrape(), 200);
  }

  /** SIGKILLs the master serving shard 0 and waits until the load feels it. */
  private async killShardMaster(needs: string): Promise<{ cluster: RedisClusterHandle; key: string; victim: number }> {
    const cluster = this.opts.cluster;
    if (!cluster) throw new Error(needs);
    const key = streamKey(this.prefix, 0);
    const victim = (await cluster.locate(key)).node;
    const failuresBefore = this.load.failures();
    await cluster.kill(victim);
    await waitFor(
      'the client sees failed requests while a master is down',
      () => this.load.failures() > failuresBefore,
      { timeoutMs: 30_000 },
    );
    return { cluster, key, victim };
  }

  private spawn(role: SurgeRole, i: number): Promise<SurgeProcess> {
    return startSurge(role, this.env, `${role}-${i}#${++this.seq}`);
  }

  private async scrape(): Promise<void> {
    await Promise.all(
      this.workers.map(async (w) => {
        if (!w.alive()) return;
        try {
          const res = await Promise.race([http(w.url, { path: '/metrics' }), sleep(500).then(() => undefined)]);
          if (!res) return;
          const applied = metricValues(res.text, 'surge_orders_applied_total');
          let n = 0;
          let d = 0;
          for (const [labels, v] of applied) {
            if (/result="(inserted|rejected)"/.test(labels)) n += v;
            if (labels.includes('result="duplicate"')) d += v;
          }
          this.scraped.set(w.pid, { applied: n, duplicates: d });
        } catch {
          // stopped or restarting: keep the last value
        }
      }),
    );
  }

  private metricsTotal(): { applied: number; duplicates: number } {
    const t = { applied: 0, duplicates: 0 };
    for (const v of this.scraped.values()) {
      t.applied += v.applied;
      t.duplicates += v.duplicates;
    }
    return t;
  }

  /** Accepted keys so far. */
  private accepted(): number {
    return this.load.counts().accepted;
  }

  /** Waits until `n` more orders were accepted (the load advanced): how fault steps last. */
  async progress(n = this.opts.progress, what = 'load progress'): Promise<void> {
    const target = this.accepted() + n;
    await waitFor(`${what}: ${n} more orders accepted`, () => this.accepted() >= target, {
      timeoutMs: 120_000,
      intervalMs: 20,
    });
  }

  /** Keys in orders ∪ dead_letters among these. */
  private async present(keys: string[]): Promise<number> {
    if (keys.length === 0) return 0;
    const r = await this.pool.query<{ n: string }>(
      `SELECT count(DISTINCT k) AS n FROM (
         SELECT idempotency_key AS k FROM orders WHERE client_id = $1 AND idempotency_key = ANY($2::text[])
         UNION ALL SELECT idempotency_key FROM dead_letters WHERE client_id = $1 AND idempotency_key = ANY($2::text[])) x`,
      [this.client.id, keys],
    );
    return Number(r.rows[0]?.n ?? 0);
  }

  /** Both disk-full faults can run: the small filesystems were mounted. */
  get canFillDisks(): boolean {
    return this.redisFs !== undefined && this.pgFs !== undefined;
  }

  /** The workers' apply retries so far (surge_apply_retries_total over the live workers), of one SQLSTATE if given. */
  private async applyRetries(sqlstate?: string): Promise<number> {
    let n = 0;
    for (const w of this.workers) {
      if (!w.alive()) continue;
      const m = metricValues((await http(w.url, { path: '/metrics' })).text, 'surge_apply_retries_total');
      for (const [labels, v] of m) if (sqlstate === undefined || labels.includes(`sqlstate="${sqlstate}"`)) n += v;
    }
    return n;
  }

  /** The Redis key prefix of the stack's processes (start() sets it). */
  get prefix(): string {
    return defined(this.env.SURGE_REDIS_PREFIX, 'SURGE_REDIS_PREFIX (is the stack started?)');
  }

  private ingest(i: number): SurgeProcess {
    return defined(this.ingests[i], `ingest process ${i}`);
  }

  private worker(i: number): SurgeProcess {
    return defined(this.workers[i], `worker process ${i}`);
  }

  /** This client's entries of every outcome stream. */
  private async outcomes(): Promise<Array<{ key: string; status: string }>> {
    const out: Array<{ key: string; status: string }> = [];
    for (const key of allOutcomeKeys(this.prefix, this.opts.shards))
      for (const [, fields] of await this.admin.xrange(key, '-', '+')) {
        const o = parseOutcome(fields);
        if (o?.clientId === this.client.id) out.push({ key: o.idempotencyKey, status: o.status });
      }
    return out;
  }

  /** Each consumer's pending count and idle time, per shard, on one line (for failure messages). */
  async consumers(): Promise<string> {
    const parts: string[] = [];
    for (const key of allStreamKeys(this.prefix, this.opts.shards)) {
      const rows = (await this.admin.xinfo('CONSUMERS', key, GROUP).catch(() => [])) as unknown[][];
      parts.push(`${key.split(':').at(-2)}: ${rows.map((r) => `${r[1]} pending ${r[3]} idle ${r[5]} ms`).join(', ')}`);
    }
    return `consumers ${parts.join('; ')}`;
  }

  /** Backlog (lag + pending) over all shards. */
  async backlog(): Promise<number> {
    let total = 0;
    for (const key of allStreamKeys(this.prefix, this.opts.shards)) {
      const [groups, xlen] = await Promise.all([
        this.admin.xinfo('GROUPS', key).catch(() => null),
        this.admin.xlen(key),
      ]);
      total += streamBacklog(groups, xlen);
    }
    return total;
  }

  /**
   * Writes the processes' last lines and each shard's group and consumers (when a wait fails) to
   * the stack's log, or to stderr when it has none: a failure in CI must show its state.
   */
  async dumpProcesses(): Promise<void> {
    const log = this.opts.log ?? ((line: string) => console.error(line));
    for (const proc of [...this.ingests, ...this.workers])
      log(`--- ${proc.name} (pid ${proc.pid}, ${proc.alive() ? 'alive' : 'dead'}):\n${proc.tail()}`);
    for (const key of allStreamKeys(this.prefix, this.opts.shards)) {
      const groups = await this.admin.xinfo('GROUPS', key).catch((e: Error) => e.message);
      const consumers = await this.admin.xinfo('CONSUMERS', key, GROUP).catch((e: Error) => e.message);
      log(
        `${key}: xlen ${await this.admin.xlen(key).catch(() => -1)} ` +
          `groups ${JSON.stringify(groups)} consumers ${JSON.stringify(consumers)}`,
      );
    }
    const sessions = await this.pool
      .query(
        'SELECT pid, application_name, state, wait_event_type, wait_event, left(query, 60) AS query FROM pg_stat_activity WHERE datname = $1',
        [this.dbName],
      )
      .catch((e: Error) => ({ rows: [e.message] }));
    log(`sessions: ${JSON.stringify(sessions.rows)}`);
  }

  async restartIngest(i: number): Promise<void> {
    await this.ingest(i).kill();
    this.ingests[i] = await this.spawn('ingest', i);
  }

  async killWorker(i: number): Promise<void> {
    this.workerKilledInPhase = true;
    await this.worker(i).kill();
  }

  async restartWorker(i: number): Promise<void> {
    if (this.worker(i).alive()) await this.killWorker(i);
    this.workers[i] = await this.spawn('work', i);
  }

  /** Terminates the sessions of this database with the given application_name (the workers' by default). */
  async terminate(applicationName = 'surge-worker'): Promise<number> {
    const r = await this.pool.query<{ n: string }>(
      'SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()',
      [this.dbName, applicationName],
    );
    return Number(r.rows[0]?.n ?? 0);
  }

  private async injectOne(fault: FaultName): Promise<void> {
    const p = this.opts.progress;
    switch (fault) {
      case 'none':
        await this.progress(p);
        return;
      case 'worker-sigkill':
        await this.killWorker(0);
        await this.progress(p, 'one worker left');
        await this.restartWorker(0);
        return;
      case 'ingest-sigkill':
        this.ingest(0).signal('SIGKILL');
        await this.progress(p, 'one ingest left');
        await this.restartIngest(0);
        return;
      case 'worker-sigstop': {
        const zombie = this.worker(0);
        const consumer = (name: string) => name;
        const pendingOf = async (name: string) => {
          let n = 0;
          for (const key of allStreamKeys(this.prefix, this.opts.shards)) {
            const rows = (await this.admin.xinfo('CONSUMERS', key, GROUP).catch(() => [])) as unknown[][];
            for (const r of rows) if (r[1] === consumer(name)) n += Number(r[3]);
          }
          return n;
        };
        const name = defined(zombie.consumer, 'the consumer name of worker 0');
        // Stop it while it holds entries (a batch in flight): retry until a stop catches one.
        let held = 0;
        for (let i = 0; i < 200 && held === 0; i++) {
          await waitFor('the worker to hold entries', async () => (await pendingOf(name)) > 0, {
            timeoutMs: 30_000,
            intervalMs: 5,
          });
          zombie.signal('SIGSTOP');
          held = await pendingOf(name);
          if (held === 0) zombie.signal('SIGCONT');
        }
        const stoppedAt = Date.now();
        try {
          // Stopped longer than the claim timeout: the live worker claims every entry it held.
          await waitFor(
            'the live worker to claim the stopped worker’s entries',
            async () => Date.now() - stoppedAt > this.opts.claimTimeoutMs && (await pendingOf(name)) === 0,
            {
              timeoutMs: 60_000,
              intervalMs: 50,
            },
          ).catch(async (e: Error) => {
            await this.dumpProcesses();
            throw new Error(`${e.message}; ${name} still holds ${await pendingOf(name)}; ${await this.consumers()}`);
          });
          await this.progress(p, 'zombie stopped');
        } finally {
          zombie.signal('SIGCONT');
        }
        this.log(`worker-sigstop: stopped ${name} holding ${held} entries for ${Date.now() - stoppedAt} ms`);
        return;
      }
      case 'redis-restart': {
        if (!this.redis) throw new Error('redis-restart needs an own redis-server');
        await this.redis.kill();
        await waitFor(
          'ingest notices Redis is down',
          async () => (await http(this.ingest(1).url, { path: '/readyz' })).status === 503,
        );
        await this.redis.restart();
        return;
      }
      case 'redis-disk-full': {
        // Redis cannot write its AOF. With appendfsync always it exits rather than answer a
        // write it could not persist: ingest answers 503 meanwhile. Space returns, Redis is
        // started again (as a supervisor would) and loads the AOF.
        const fs = this.redisFs;
        if (!this.redis || !fs) throw new Error('redis-disk-full needs an own redis-server on a small filesystem');
        const failuresBefore = this.load.failures();
        fs.fill();
        try {
          await waitFor(
            'ingest notices Redis cannot write',
            async () => (await http(this.ingest(1).url, { path: '/readyz' })).status === 503,
            { timeoutMs: 30_000, intervalMs: 20 },
          );
          await waitFor('the client sees refused requests', () => this.load.failures() > failuresBefore, {
            timeoutMs: 30_000,
          });
          let running = true;
          try {
            process.kill(this.redis.pid, 0);
          } catch {
            running = false;
          }
          this.log(
            `redis-disk-full: redis-server ${running ? 'still running' : 'exited'}, ` +
              `${this.load.failures() - failuresBefore} requests refused so far`,
          );
        } finally {
          fs.free();
        }
        await this.redis.kill();
        await this.redis.restart();
        return;
      }
      case 'postgres-disk-full': {
        // PostgreSQL cannot extend a table: the workers' batches fail (53100) and retry without
        // acking; ingest goes on accepting into Redis. Space returns, the backlog drains.
        const fs = this.pgFs;
        if (!fs) throw new Error('postgres-disk-full needs the database on a small filesystem');
        // 53100 disk_full: what PostgreSQL answers when it cannot extend a file.
        const before = await this.applyRetries('53100');
        fs.fill();
        try {
          await waitFor(
            'workers retrying against a full disk',
            async () => (await this.applyRetries('53100')) > before + 5,
            {
              timeoutMs: 60_000,
              intervalMs: 100,
            },
          );
          await this.progress(Math.ceil(p / 2), 'accepting while PostgreSQL is full');
          this.log(
            `postgres-disk-full: ${(await this.applyRetries('53100')) - before} apply retries (53100) while full`,
          );
        } finally {
          fs.free();
        }
        return;
      }
      case 'postgres-restart':
        if (!this.pgServer) throw new Error('postgres-restart needs the private PostgreSQL');
        await this.pgServer.restart('immediate');
        return;
      case 'pg-terminate-backend':
        for (let i = 0; i < 3; i++) {
          await waitFor('worker sessions to terminate', async () => (await this.terminate('surge-worker')) > 0, {
            timeoutMs: 30_000,
            intervalMs: 50,
          });
          await this.terminate('surge-ingest');
          await this.progress(Math.ceil(p / 3), 'after terminating sessions');
        }
        return;
      case 'postgres-read-only': {
        const retries = () => this.applyRetries();
        const before = await retries();
        await this.pool.query(
          `ALTER DATABASE ${pg.escapeIdentifier(this.dbName)} SET default_transaction_read_only = on`,
        );
        await waitFor('worker sessions to terminate', async () => (await this.terminate('surge-worker')) > 0, {
          timeoutMs: 30_000,
          intervalMs: 50,
        });
        // The workers' new sessions are read-only: their batches fail (25006) and retry.
        await waitFor('workers retrying against read-only PostgreSQL', async () => (await retries()) > before + 5, {
          timeoutMs: 60_000,
          intervalMs: 100,
        });
        await this.pool.query(
          `ALTER DATABASE ${pg.escapeIdentifier(this.dbName)} SET default_transaction_read_only = off`,
        );
        await this.terminate('surge-worker');
        return;
      }
      case 'cluster-master-restart': {
        const { cluster, victim } = await this.killShardMaster('cluster-master-restart needs a Redis Cluster');
        await cluster.restart(victim);
        return;
      }
      case 'cluster-failover': {
        // The master stays down until its replica took over its slots, then comes back as the
        // new master's replica. Not waiting for load in between: in durable mode the new master
        // has no replica until then, so its shards answer 503 and the senders retry them.
        const { cluster, key, victim } = await this.killShardMaster(
          'cluster-failover needs a Redis Cluster with replicas',
        );
        await cluster.failedOver(key, victim);
        const promoted = (await cluster.locate(key)).node;
        this.log(`cluster-failover: shard 0 moved from node ${victim} to node ${promoted}`);
        await cluster.restart(victim);
        return;
      }
      case 'mixed':
        await this.injectOne('worker-sigkill');
        await this.progress(Math.ceil(p / 2));
        await this.injectOne('ingest-sigkill');
        await this.progress(Math.ceil(p / 2));
        if (this.redis) await this.injectOne('redis-restart');
        await this.progress(Math.ceil(p / 2));
        await this.injectOne('pg-terminate-backend');
        if (this.pgServer) await this.injectOne('postgres-restart');
        await this.progress(Math.ceil(p / 2));
        await this.injectOne('worker-sigstop');
        return;
    }
  }

  /** One phase: load, fault, settle, drain, check. Appends and returns the table row. */
  async phase(fault: FaultName): Promise<FaultRow> {
    const label = `${fault}#${this.rows.length + 1}`;
    this.workerKilledInPhase = false;
    await this.scrape();
    const rowsBefore = Number((await this.pool.query<{ n: string }>('SELECT count(*) AS n FROM orders')).rows[0]?.n);
    const metricsBefore = this.metricsTotal();
    this.load.setPhase(label);
    this.load.start();
    await this.progress(Math.ceil(this.opts.progress / 2), `${label} warm-up`);
    // Recovery: from the injection until every order accepted before it is in PostgreSQL.
    const acceptedBefore = [...this.load.records.values()].filter((r) => r.acceptedAt !== undefined).map((r) => r.key);
    const t0 = Date.now();
    let recoveredAt: number | undefined;
    let watching = true;
    const watcher = (async () => {
      while (watching && recoveredAt === undefined) {
        try {
          if ((await this.present(acceptedBefore)) >= acceptedBefore.length) recoveredAt = Date.now();
        } catch {
          // PostgreSQL down during the fault
        }
        await sleep(100);
      }
    })();
    this.log(`${label}: injecting`);
    await this.injectOne(fault);
    await this.progress(this.opts.progress, `${label} after the fault`);
    const { unresolved } = await this.load.stopAndSettle();
    if (unresolved.length > 0)
      this.log(
        `${label}: ${unresolved.length} keys never got a 202 ` +
          `(e.g. ${unresolved[0]?.key}: ${unresolved[0]?.answers.join(',')})`,
      );
    // Drain: every accepted key in PostgreSQL and nothing left pending or unread.
    const acceptedKeys = [...this.load.records.values()].filter((r) => r.acceptedAt !== undefined).map((r) => r.key);
    await waitFor(
      `${label}: drain`,
      async () => (await this.present(acceptedKeys)) >= acceptedKeys.length && (await this.backlog()) === 0,
      {
        timeoutMs: 180_000,
        intervalMs: 100,
      },
    ).catch(async (e) => {
      this.log(`${label}: ${(e as Error).message}`);
      await this.dumpProcesses();
    });
    await waitFor(`${label}: recovery`, () => recoveredAt !== undefined, { timeoutMs: 10_000 }).catch(() => {});
    watching = false;
    await watcher;
    await this.scrape();
    const check = await checkInvariants({
      outcomes: await this.outcomes(),
      db: this.pool,
      clientId: this.client.id,
      records: this.load.records,
      initialStock: new Map(STOCKED.map((s) => [s, INITIAL_STOCK])),
      metricsApplied: {
        value: this.metricsTotal().applied - metricsBefore.applied,
        duplicates: this.metricsTotal().duplicates - metricsBefore.duplicates,
        exact: !this.workerKilledInPhase,
        rowsBaseline: rowsBefore,
      },
    });
    const counts = this.load.counts(label);
    const inPhase = new Set([...this.load.records.values()].filter((r) => r.phase === label).map((r) => r.key));
    const phaseRows = await this.pool.query<{ status: string; n: string }>(
      'SELECT status, count(*) AS n FROM orders WHERE client_id = $1 AND idempotency_key = ANY($2::text[]) GROUP BY status',
      [this.client.id, [...inPhase]],
    );
    const byStatus = new Map(phaseRows.rows.map((r) => [r.status, Number(r.n)]));
    const dead = await this.pool.query<{ n: string }>(
      'SELECT count(*) AS n FROM dead_letters WHERE client_id = $1 AND idempotency_key = ANY($2::text[])',
      [this.client.id, [...inPhase]],
    );
    const row: FaultRow = {
      fault,
      sent: counts.sent,
      requests: counts.requests,
      accepted: counts.accepted,
      applied: (byStatus.get('applied') ?? 0) + (byStatus.get('rejected') ?? 0),
      rejected: byStatus.get('rejected') ?? 0,
      deadLettered: Number(dead.rows[0]?.n ?? 0),
      duplicates: check.duplicates.length,
      lost: check.lost.length + counts.unresolved,
      phantoms: check.phantoms.length,
      recoveryMs: recoveredAt === undefined ? -1 : recoveredAt - t0,
      metrics: check.metrics,
      check,
    };
    this.rows.push(row);
    this.log(`${label}: ${formatRow(row)}`);
    return row;
  }

  async stop(): Promise<void> {
    if (this.scrapeTimer) clearInterval(this.scrapeTimer);
    this.load?.close();
    for (const p of [...this.ingests, ...this.workers]) {
      p.signal('SIGCONT');
      await p.kill();
    }
    this.admin?.disconnect();
    await this.pool?.end().catch(() => {});
    await this.pgServer?.stop();
    await this.dropDb?.().catch(() => {});
    await this.redis?.stop();
    await this.redisFs?.unmount();
    await this.pgFs?.unmount();
  }
}

const COLUMNS = [
  'fault',
  'orders sent',
  'HTTP requests',
  'accepted (202)',
  'applied',
  'of which out of stock',
  'dead-lettered',
  'duplicates',
  'lost',
  'phantoms',
  'recovery',
  'metrics vs tables',
];

/** The fault table's header: the fault and the metrics comparison are text, the other columns right-aligned. */
export const TABLE_HEADER = `| ${COLUMNS.join(' | ')} |\n| --- |${' ---: |'.repeat(COLUMNS.length - 2)} --- |`;

/**
 * A phase's exactly-once verdict: every 202 applied once or dead-lettered, nothing lost, doubled,
 * altered or invented, stock consistent. `full` adds the outcome streams and the metrics.
 */
export function assertExactlyOnce(row: FaultRow, full = true): void {
  assert.equal(row.lost, 0, `lost: ${row.check.lost.slice(0, 5).join(', ')}`);
  assert.equal(row.duplicates, 0, `doubled: ${row.check.duplicates.slice(0, 5).join(', ')}`);
  assert.equal(row.phantoms, 0, `orders without a 202: ${row.check.phantoms.slice(0, 5).join(', ')}`);
  assert.deepEqual(row.check.altered, []);
  assert.deepEqual(row.check.stockErrors, []);
  if (!full) return;
  assert.deepEqual(row.check.outcomeErrors.slice(0, 5), [], 'each committed order on the outcome streams once');
  assert.ok(!row.metrics.startsWith('MISMATCH'), row.metrics);
}

export function formatRow(r: FaultRow): string {
  const recovery = r.recoveryMs < 0 ? 'not measured' : `${(r.recoveryMs / 1000).toFixed(2)} s`;
  const cells = [
    r.fault,
    r.sent,
    r.requests,
    r.accepted,
    r.applied,
    r.rejected,
    r.deadLettered,
    r.duplicates,
    r.lost,
    r.phantoms,
    recovery,
    r.metrics,
  ];
  return `| ${cells.join(' | ')} |`;
}
