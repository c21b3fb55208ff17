// `surge dlq …`, `surge maintenance` and `surge dashboard`: argument parsing and printing; the
// work is in maintenance/ (dlq.ts, service.ts, dashboard.ts).
import { createInterface } from 'node:readline/promises';
import { Command, InvalidArgumentError } from 'commander';
import type { Config } from '../common/config.js';
import { createPool } from '../common/db.js';
import { stopOnSignals } from '../common/lifecycle.js';
import { createLogger } from '../common/log.js';
import { createRedis } from '../common/redis.js';
import {
  type BatchStatus,
  batchStatus,
  countDeadLetters,
  createReplayQueue,
  type DeadLetterRecord,
  type DeadLetterFilter,
  type DlqDeps,
  enqueueReplays,
  getDeadLetter,
  listDeadLetters,
  MAX_REPLAY_CHUNK,
  matchingIds,
  purgeDeadLetters,
  replayDeadLetter,
  startReplayWorker,
} from '../maintenance/dlq.js';
import { bullConnection } from '../maintenance/queues.js';
import { startMaintenance } from '../maintenance/service.js';
import { action, configOrExit, serve } from './common.js';

/** `2024-05-01T00:00:00Z`, or an age: `30m`, `12h`, `7d` (that long ago). */
function parseTime(raw: string, now: number = Date.now()): Date {
  const m = /^(\d+)(s|m|h|d)$/.exec(raw.trim());
  if (m) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now - Number(m[1]) * unit);
  }
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw new InvalidArgumentError('expected an RFC 3339 time or an age like 30m, 12h, 7d');
  return new Date(t);
}

function parseId(raw: string): number {
  if (!/^\d+$/.test(raw)) throw new InvalidArgumentError(`"${raw}" is not a dead-letter id (a positive integer)`);
  return Number(raw);
}

function positive(raw: string): number {
  if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new InvalidArgumentError('expected a positive integer');
  return Number(raw);
}

function chunkSize(raw: string): number {
  const n = positive(raw);
  if (n > MAX_REPLAY_CHUNK) throw new InvalidArgumentError(`at most ${MAX_REPLAY_CHUNK}`);
  return n;
}

interface FilterOpts {
  reason?: string;
  client?: string;
  since?: Date;
  until?: Date;
  replayed?: boolean;
}

function withFilters(cmd: Command): Command {
  return cmd
    .option('--reason <reason>', 'only this reason: undecodable | permanent_error | max_deliveries')
    .option('--client <id>', 'only this API client id')
    .option('--since <time>', 'first seen at or after (RFC 3339, or an age: 30m, 12h, 7d)', (v) => parseTime(v))
    .option('--until <time>', 'first seen before (RFC 3339, or an age)', (v) => parseTime(v))
    .option('--replayed', 'only dead letters replayed before')
    .option('--no-replayed', 'only dead letters never replayed');
}

function toFilter(opts: FilterOpts, ids: number[] = []): DeadLetterFilter {
  const f: DeadLetterFilter = {};
  if (ids.length > 0) f.ids = ids;
  if (opts.reason) f.reason = opts.reason;
  if (opts.client) f.client = opts.client;
  if (opts.since) f.since = opts.since;
  if (opts.until) f.until = opts.until;
  if (opts.replayed !== undefined) f.replayed = opts.replayed;
  return f;
}

function hasFilter(f: DeadLetterFilter): boolean {
  return Object.keys(f).length > 0;
}

async function withDeps<T>(config: Config, fn: (deps: DlqDeps) => Promise<T>): Promise<T> {
  const pool = createPool(config.databaseUrl, { max: 2, applicationName: 'surge-dlq' });
  const redis = createRedis(config, { connectionName: 'surge-dlq' });
  try {
    return await fn({ pool, redis, prefix: config.redisPrefix, shards: config.shards });
  } finally {
    redis.disconnect();
    await pool.end();
  }
}

function short(d: DeadLetterRecord): string {
  const msg = (d.message ?? '').replace(/\s+/g, ' ');
  return [
    d.id,
    d.firstSeenAt.toISOString(),
    d.reason,
    d.sqlstate ?? '-',
    d.clientId ?? '-',
    d.idempotencyKey ?? '-',
    d.deliveries,
    d.replayedAt ? `replayed×${d.replays}` : '-',
    msg.length > 80 ? `${msg.slice(0, 79)}…` : msg,
  ].join('\t');
}

function printStatus(s: BatchStatus, batch: string): void {
  let line = `replay ${batch}: ${s.done}/${s.total} done (replayed ${s.replayed}, skipped ${s.skipped})`;
  if (s.retrying) line += `, ${s.retrying} job(s) retrying`;
  if (s.failedJobs.length) line += `, ${s.failedJobs.length} job(s) failed`;
  if (process.stderr.isTTY) process.stderr.write(`\r${line}`);
  else process.stderr.write(`${line}\n`);
}

export function dlqCommand(): Command {
  const dlq = new Command('dlq').description(
    'inspect, replay and purge dead letters (orders that could not be applied)',
  );

  withFilters(dlq.command('list').description('list dead letters, oldest first'))
    .option('--limit <n>', 'at most this many (default 100)', positive, 100)
    .option('--after <id>', 'start after this id (paging)', parseId, 0)
    .option('--json', 'print a JSON array')
    .action(
      action(async (opts: FilterOpts & { limit: number; after: number; json?: boolean }) => {
        const config = configOrExit();
        await withDeps(config, async ({ pool }) => {
          const filter = toFilter(opts);
          const rows = await listDeadLetters(pool, filter, { limit: opts.limit, afterId: opts.after });
          if (opts.json) {
            console.log(JSON.stringify(rows));
            return;
          }
          const total = await countDeadLetters(pool, filter);
          console.log(
            ['id', 'first_seen', 'reason', 'sqlstate', 'client', 'key', 'deliveries', 'replayed', 'message'].join('\t'),
          );
          for (const r of rows) console.log(short(r));
          console.log(
            total > rows.length
              ? `${rows.length} of ${total} shown (next page: --after ${rows.at(-1)?.id ?? 0})`
              : `${rows.length} of ${total} shown`,
          );
        });
      }),
    );

  dlq
    .command('show')
    .description('show one dead letter with its payload')
    .argument('<id>', 'dead-letter id (from `surge dlq list`)', parseId)
    .option('--json', 'print JSON')
    .action(
      action(async (id: number, opts: { json?: boolean }) => {
        const config = configOrExit();
        await withDeps(config, async ({ pool }) => {
          const d = await getDeadLetter(pool, id);
          if (!d) throw new Error(`no dead letter ${id}`);
          if (opts.json) {
            console.log(JSON.stringify(d));
            return;
          }
          const { payload, ...rest } = d;
          for (const [k, v] of Object.entries(rest))
            console.log(`${k}: ${v instanceof Date ? v.toISOString() : (v ?? '-')}`);
          let pretty = payload ?? '-';
          try {
            if (payload) pretty = JSON.stringify(JSON.parse(payload), null, 2);
          } catch {
            // not JSON: print as stored
          }
          console.log(`payload: ${pretty}`);
        });
      }),
    );

  withFilters(
    dlq
      .command('replay')
      .description(
        're-enqueue dead letters to their shard stream (idempotency holds: an applied order stays applied once)',
      )
      .argument('[ids...]', 'dead-letter ids', (v: string, prev: number[] = []) => [...prev, parseId(v)]),
  )
    .option('--all', 'every dead letter not replayed yet')
    .option('--force', 'replay even those replayed before')
    .option('--detach', 'enqueue the BullMQ jobs and return (a running `surge maintenance` replays them)')
    .option(
      '--chunk-size <n>',
      `dead letters per BullMQ job (default 100, at most ${MAX_REPLAY_CHUNK})`,
      chunkSize,
      100,
    )
    .option('--json', 'print the result as JSON')
    .action(
      action(
        async (
          ids: number[] | undefined,
          opts: FilterOpts & { all?: boolean; force?: boolean; detach?: boolean; chunkSize: number; json?: boolean },
        ) => {
          const config = configOrExit();
          const filter = toFilter(opts, ids ?? []);
          if (!hasFilter(filter) && !opts.all)
            throw new Error('name dead-letter ids, a filter (--reason, --client, --since, --until) or --all');
          await withDeps(config, async (deps) => {
            const [onlyId, ...moreIds] = filter.ids ?? [];
            if (onlyId !== undefined && moreIds.length === 0 && Object.keys(filter).length === 1) {
              const r = await replayDeadLetter(deps, onlyId, { force: opts.force });
              if (opts.json) console.log(JSON.stringify(r));
              else if (r.outcome === 'replayed')
                console.log(`dead letter ${r.id} re-enqueued to ${r.stream} as ${r.entryId}`);
              else console.log(`dead letter ${r.id} not replayed: ${r.outcome} (${r.detail})`);
              if (r.outcome === 'missing' || r.outcome === 'not_replayable') process.exitCode = 1;
              return;
            }
            if (filter.replayed === undefined && !opts.force) filter.replayed = false;
            const targets = await matchingIds(deps.pool, filter);
            if (targets.length === 0) {
              console.log(opts.json ? JSON.stringify({ total: 0 }) : 'no matching dead letters');
              return;
            }
            const connection = bullConnection(config, 'surge-dlq-cli');
            const queue = createReplayQueue(config, connection);
            const local = opts.detach ? undefined : startReplayWorker(config, deps);
            try {
              const batch = await enqueueReplays(queue, targets, { force: opts.force, chunkSize: opts.chunkSize });
              if (opts.detach) {
                console.log(
                  opts.json
                    ? JSON.stringify(batch)
                    : `enqueued ${batch.total} dead letters as ${batch.jobIds.length} job(s) of batch ${batch.batch}`,
                );
                return;
              }
              let status = await batchStatus(queue, batch);
              while (!status.finished) {
                printStatus(status, batch.batch);
                await new Promise((r) => setTimeout(r, 500));
                status = await batchStatus(queue, batch);
              }
              printStatus(status, batch.batch);
              if (process.stderr.isTTY) process.stderr.write('\n');
              if (opts.json) console.log(JSON.stringify({ batch: batch.batch, ...status }));
              else
                console.log(
                  `replayed ${status.replayed}, skipped ${status.skipped} ` +
                    `(already replayed or not replayable) of ${status.total}`,
                );
              for (const f of status.failedJobs) console.error(`job ${f.jobId} failed after its retries: ${f.reason}`);
              if (status.failedJobs.length > 0) process.exitCode = 1;
            } finally {
              await local?.close();
              await queue.close();
              connection.disconnect();
            }
          });
        },
      ),
    );

  withFilters(
    dlq
      .command('purge')
      .description('delete dead letters (rows and DLQ stream entries); asks first unless --yes')
      .argument('[ids...]', 'dead-letter ids', (v: string, prev: number[] = []) => [...prev, parseId(v)]),
  )
    .option('--all', 'every dead letter')
    .option('--yes', 'do not ask for confirmation')
    .action(
      action(async (ids: number[] | undefined, opts: FilterOpts & { all?: boolean; yes?: boolean }) => {
        const config = configOrExit();
        const filter = toFilter(opts, ids ?? []);
        if (!hasFilter(filter) && !opts.all) throw new Error('name dead-letter ids, a filter or --all');
        await withDeps(config, async (deps) => {
          const targets = await matchingIds(deps.pool, filter);
          if (targets.length === 0) {
            console.log('no matching dead letters');
            return;
          }
          if (!opts.yes) {
            if (!process.stdin.isTTY)
              throw new Error(
                `would delete ${targets.length} dead letter(s); not a terminal, so pass --yes to confirm`,
              );
            const rl = createInterface({ input: process.stdin, output: process.stderr });
            const answer = await rl.question(`Delete ${targets.length} dead letter(s) for good? [y/N] `);
            rl.close();
            if (!/^y(es)?$/i.test(answer.trim())) {
              console.log('nothing deleted');
              return;
            }
          }
          const r = await purgeDeadLetters(deps, targets);
          console.log(`deleted ${r.rows} dead letter(s) and ${r.streamEntries} DLQ stream entries`);
        });
      }),
    );
  return dlq;
}

export function maintenanceCommand(): Command {
  return new Command('maintenance')
    .description(
      'run the scheduled maintenance (safe trim, idle consumers, retention) and the dead-letter replay queue',
    )
    .action(
      serve('maintenance', 'maintenance', (config, logger) => startMaintenance(config, { logger }), { database: true }),
    );
}

function port(raw: string): number {
  if (!/^\d+$/.test(raw) || Number(raw) > 65535)
    throw new InvalidArgumentError('expected a port, 0–65535 (0 picks a free one)');
  return Number(raw);
}

export function dashboardCommand(): Command {
  return new Command('dashboard')
    .description(
      'serve Bull Board for the maintenance and dlq-replay queues (jobs, schedulers, failures) on a local port',
    )
    .option('--host <address>', 'address to bind (default SURGE_DASHBOARD_HOST, 127.0.0.1; the board has no login)')
    .option('--port <n>', 'port (default SURGE_DASHBOARD_PORT, 9467; 0 picks a free one)', port)
    .option('--read-only', 'hide and refuse every action (retry, promote, clean, pause, delete, schedulers)')
    .addHelpText(
      'after',
      "\nBull Board lists each queue's jobs by state with their data, progress, result and errors; the\n" +
        'maintenance queue also shows its job schedulers. Without --read-only it can retry, promote and\n' +
        'delete jobs and run or change schedulers: keep it on loopback (or behind your own authenticating\n' +
        'proxy). SIGTERM/SIGINT stop it.',
    )
    .action(
      action(async (opts: { host?: string; port?: number; readOnly?: boolean }) => {
        const overrides: Partial<Config> = {};
        if (opts.host !== undefined) overrides.dashboardHost = opts.host;
        if (opts.port !== undefined) overrides.dashboardPort = opts.port;
        const config = configOrExit(overrides);
        const logger = createLogger(config.logLevel, 'dashboard');
        const { startDashboard } = await import('../maintenance/dashboard.js');
        const handle = await startDashboard(config, {
          host: config.dashboardHost,
          port: config.dashboardPort,
          readOnly: opts.readOnly ?? false,
          logger,
        });
        stopOnSignals('dashboard', handle, { timeoutMs: config.shutdownTimeoutMs, logger });
      }),
    );
}
