// Every Surge metric, defined once. Each process builds the sets it needs on its own Registry
// (never the global one, so tests can run several components in one process). Names and labels
// follow ../docs/metrics.md; label values are bounded (route, code, stream, group, consumer,
// result) — never an order, customer or key.
import {
  type CounterConfiguration,
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  type HistogramConfiguration,
  type LabelValues,
  type Metric,
  type OpenMetricsContentType,
  Registry,
} from 'prom-client';

/**
 * Why ingest sheds a write (the `reason` of `surge_ingest_shed_total`): at the door, before auth
 * and the body (ingest/door.ts), then backpressure after auth (ingest/backpressure.ts). The one
 * list of them; the dashboard and docs/metrics.md name each (a test holds them to it).
 */
export const SHED_REASONS = ['in_flight', 'event_loop_delay', 'turn', 'backlog', 'memory', 'redis_down'] as const;
export type ShedReason = (typeof SHED_REASONS)[number];

/** Latency buckets from 1 ms to 5 min (accept latency is ms, end-to-end can be minutes). */
export const LATENCY_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
];
export const BATCH_SIZE_BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

const defaultLabels = new WeakMap<Registry, Record<string, string>>();

/**
 * The OpenMetrics exposition of a registry's metrics (with exemplars), for a scraper that asks
 * for it (Accept: application/openmetrics-text). Built per scrape over the same metric objects:
 * the registry itself keeps the Prometheus text format that every other reader parses.
 */
export async function openMetricsText(registry: Registry): Promise<string> {
  const om = new Registry<OpenMetricsContentType>();
  om.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  const labels = defaultLabels.get(registry);
  if (labels) om.setDefaultLabels(labels);
  // prom-client appends `_total` to a counter's samples in OpenMetrics, and Surge's counters
  // already end with it: their family is renamed to the name without it, so the samples keep
  // the names every query uses.
  const counters: string[] = [];
  for (const { name } of registry.getMetricsAsArray()) {
    const metric = registry.getSingleMetric(name);
    if (!metric) continue;
    om.registerMetric(metric);
    if (metric instanceof Counter && name.endsWith('_total')) counters.push(name);
  }
  let text = await om.metrics();
  for (const name of counters) {
    const family = name.slice(0, -'_total'.length);
    text = text
      .replaceAll(`\n${name}_total`, `\n${name}`)
      .replace(`# HELP ${name} `, `# HELP ${family} `)
      .replace(`# TYPE ${name} counter`, `# TYPE ${family} counter`);
  }
  return text;
}

export const OPENMETRICS_CONTENT_TYPE = Registry.OPENMETRICS_CONTENT_TYPE;

/** A registry for one process. Default process metrics go on main threads only (SEMANTICS 4.2). */
export function createRegistry(options: { defaultMetrics: boolean; role: string }): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ role: options.role });
  defaultLabels.set(registry, { role: options.role });
  if (options.defaultMetrics) {
    collectDefaultMetrics({ register: registry, prefix: 'surge_process_' });
    // prom-client names these gauges `…_total`, which `promtool check metrics` rejects (a `_total`
    // suffix means a counter). They are the sums of `surge_process_nodejs_active_{handles,requests,
    // resources}{type}`, which stay, so nothing is lost.
    for (const name of [
      'nodejs_active_handles_total',
      'nodejs_active_requests_total',
      'nodejs_active_resources_total',
    ]) {
      registry.removeSingleMetric(`surge_process_${name}`);
    }
  }
  return registry;
}

/**
 * A counter for a hot path: `inc` adds to a plain number per label set, and the prom-client
 * Counter receives the sums when it is collected (on every scrape). prom-client's own `inc`
 * checks and hashes the label set on each call (bench/results/HISTORY.md); here each label
 * value is one Map lookup (values are mostly constant strings, whose hash V8 keeps). The label
 * sets are the same small, bounded ones.
 */
export class TalliedCounter<T extends string> {
  readonly counter: Counter<T>;
  private readonly tallies: LabelTallies<T, { labels: LabelValues<T>; n: number }>;

  constructor(config: CounterConfiguration<T>) {
    this.tallies = new LabelTallies(config.labelNames ?? [], (labels) => ({ labels, n: 0 }));
    this.counter = new Counter({ ...config, collect: () => this.flush() });
  }

  inc(labels: LabelValues<T>, n = 1): void {
    this.tallies.of(labels).n += n;
  }

  /** Moves the counts so far into the prom-client Counter. */
  flush(): void {
    for (const tally of this.tallies.all) {
      if (tally.n === 0) continue;
      this.counter.inc(tally.labels, tally.n);
      tally.n = 0;
    }
  }
}

/**
 * One tally per label set, found by one Map lookup per label value (values are mostly constant
 * strings, whose hash V8 keeps) instead of checking and hashing the set: one level per label
 * name, in order; a leaf holds its set's tally.
 */
class LabelTallies<T extends string, V> {
  private readonly root: TallyNode<V> = { next: new Map() };
  /** Every tally, in the order its label set first appeared. */
  all: V[] = [];

  constructor(
    private readonly names: readonly T[],
    private readonly create: (labels: LabelValues<T>) => V,
  ) {}

  of(labels: LabelValues<T>): V {
    let node = this.root;
    for (const name of this.names) {
      const value = labels[name];
      let child = node.next.get(value);
      if (child === undefined) {
        child = { next: new Map() };
        node.next.set(value, child);
      }
      node = child;
    }
    if (node.tally === undefined) {
      node.tally = this.create(labels);
      this.all.push(node.tally);
    }
    return node.tally;
  }

  clear(): void {
    this.root.next.clear();
    this.root.tally = undefined;
    this.all = [];
  }
}

interface TallyNode<V> {
  next: Map<string | number | undefined, TallyNode<V>>;
  tally?: V;
}

const NO_LABELS: LabelValues<string> = {};

/** One label set's observations in a TalliedHistogram: per bucket (not cumulative), sum, count. */
interface HistogramTally<T extends string> {
  labels: LabelValues<T>;
  counts: number[];
  sum: number;
  count: number;
}

/** A sample as prom-client's registry formats it (`sharedLabels` after the default labels, as prom-client's Histogram writes them). */
interface HistogramSample<T extends string> {
  labels: { le?: number | string };
  sharedLabels: LabelValues<T>;
  value: number;
  metricName: string;
  /** Always none; present as prom-client's samples have it (null on buckets). */
  exemplar: null | undefined;
}

/**
 * A histogram for a hot path: `observe` adds to plain numbers per label set (one Map lookup per
 * label value, a scan of the buckets), where prom-client's Histogram checks, copies and hashes the
 * label set on every call (bench/results/HISTORY.md). It is the registered metric itself and
 * writes the samples prom-client's Histogram would write for the same observations (a test holds
 * the two texts equal). No exemplars.
 */
export class TalliedHistogram<T extends string> {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly bounds: readonly number[];
  private readonly tallies: LabelTallies<T, HistogramTally<T>>;

  constructor(config: Pick<HistogramConfiguration<T>, 'name' | 'help' | 'labelNames' | 'buckets' | 'registers'>) {
    this.name = config.name;
    this.help = config.help;
    const bounds = [...(config.buckets ?? LATENCY_BUCKETS)].sort((a, b) => a - b);
    this.bounds = bounds;
    this.tallies = new LabelTallies(config.labelNames ?? [], (labels) => ({
      labels: { ...labels },
      counts: new Array<number>(bounds.length).fill(0),
      sum: 0,
      count: 0,
    }));
    for (const registry of config.registers ?? []) registry.registerMetric(this as unknown as Metric<T>);
  }

  /** As prom-client's: `observe(value)` for a histogram without labels, `observe(labels, value)`. */
  observe(value: number): void;
  observe(labels: LabelValues<T>, value: number): void;
  observe(labelsOrValue: LabelValues<T> | number, maybeValue?: number): void {
    const labels = typeof labelsOrValue === 'number' ? (NO_LABELS as LabelValues<T>) : labelsOrValue;
    const value = typeof labelsOrValue === 'number' ? labelsOrValue : (maybeValue as number);
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    const tally = this.tallies.of(labels);
    const { bounds } = this;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    if (i < bounds.length) tally.counts[i]!++;
    tally.sum += value;
    tally.count++;
  }

  /** The samples in prom-client's Histogram form (what its registry formats). */
  async getForPromString(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: Array<HistogramSample<T>>;
  }> {
    const values: Array<HistogramSample<T>> = [];
    const bucket = `${this.name}_bucket`;
    for (const t of this.tallies.all) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += t.counts[i]!;
        values.push({
          labels: { le: this.bounds[i]! },
          sharedLabels: t.labels,
          value: cumulative,
          metricName: bucket,
          exemplar: null,
        });
      }
      values.push({
        labels: { le: '+Inf' },
        sharedLabels: t.labels,
        value: t.count,
        metricName: bucket,
        exemplar: null,
      });
      values.push({
        labels: {},
        sharedLabels: t.labels,
        value: t.sum,
        metricName: `${this.name}_sum`,
        exemplar: undefined,
      });
      values.push({
        labels: {},
        sharedLabels: t.labels,
        value: t.count,
        metricName: `${this.name}_count`,
        exemplar: undefined,
      });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** The samples with each label set spread into `labels` (prom-client's `get` form). */
  async get() {
    const data = await this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ labels, sharedLabels, ...rest }) => ({
        ...rest,
        labels: { ...labels, ...sharedLabels },
      })),
    };
  }

  reset(): void {
    this.tallies.clear();
  }
}

/** `longPolls`: how many `?wait` requests are held now (read at each scrape). */
export function ingestMetrics(registry: Registry, sources: { longPolls?: () => number } = {}) {
  const { longPolls } = sources;
  return {
    requests: new TalliedCounter({
      name: 'surge_ingest_requests_total',
      help: 'HTTP requests answered by ingest, by route and status code.',
      labelNames: ['route', 'code'] as const,
      registers: [registry],
    }),
    duration: new TalliedHistogram({
      name: 'surge_ingest_request_duration_seconds',
      help: 'Time from request received to response sent, by route.',
      labelNames: ['route'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    orders: new TalliedCounter({
      name: 'surge_ingest_orders_total',
      help: 'Orders seen by ingest, by outcome (accepted, replayed, invalid, conflict, mismatch, unavailable).',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    acceptCallOrders: new TalliedHistogram({
      name: 'surge_ingest_accept_call_orders',
      help: 'Orders per Redis accept call (orders of one shard ready in the same event-loop turn share a call).',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200],
      registers: [registry],
    }),
    batchesPrepared: new Counter({
      name: 'surge_ingest_batches_prepared_total',
      help: 'POST /v1/orders:batch bodies parsed and prepared, by where: thread (SURGE_INGEST_BATCH_THREADS) or main.',
      labelNames: ['on'] as const,
      registers: [registry],
    }),
    shed: new TalliedCounter({
      name: 'surge_ingest_shed_total',
      help: `Writes ingest refused with 503 + Retry-After to shed load, by reason (${SHED_REASONS.join(', ')}).`,
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    overloaded: new Gauge({
      name: 'surge_ingest_overloaded',
      help: '1 while ingest sheds load (answers 503), by reason.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    longPolls: new Gauge({
      name: 'surge_ingest_long_polls',
      help: 'GET /v1/orders/:key?wait= requests held now, waiting for their order to become final.',
      registers: [registry],
      collect() {
        if (longPolls) this.set(longPolls());
      },
    }),
  };
}
export type IngestMetrics = ReturnType<typeof ingestMetrics>;

/**
 * `exemplars` (tracing on): the end-to-end histogram keeps, per bucket, the trace id of an order
 * that fell in it (OpenMetrics exposition). Its observe then takes `{ value, exemplarLabels }`.
 */
export function workerMetrics(registry: Registry, options: { exemplars?: boolean } = {}) {
  const exemplars = options.exemplars === true;
  const endToEnd = new Histogram({
    name: 'surge_order_end_to_end_seconds',
    help: 'Time from the order entering Redis (entry ID) to the COMMIT that applied it.',
    buckets: LATENCY_BUCKETS,
    // prom-client refuses exemplars on a metric it registers in a Prometheus-format registry;
    // the registry keeps that format (openMetricsText renders the other), so it is added below.
    registers: exemplars ? [] : [registry],
    enableExemplars: exemplars,
  });
  if (exemplars) registry.registerMetric(endToEnd);
  return {
    batchSize: new Histogram({
      name: 'surge_apply_batch_size',
      help: 'Entries per apply batch.',
      buckets: BATCH_SIZE_BUCKETS,
      registers: [registry],
    }),
    batchDuration: new Histogram({
      name: 'surge_apply_batch_duration_seconds',
      help: 'Time to apply one batch (BEGIN to COMMIT, retries included).',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    applied: new Counter({
      name: 'surge_orders_applied_total',
      help: 'Stream entries processed by workers, by result.',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    endToEnd,
    retries: new Counter({
      name: 'surge_apply_retries_total',
      help:
        'Batch attempts retried after a transient PostgreSQL error, by SQLSTATE ' +
        '(`connection` when the error had none).',
      labelNames: ['sqlstate'] as const,
      registers: [registry],
    }),
    claimed: new Counter({
      name: 'surge_entries_claimed_total',
      help: 'Entries taken over from idle consumers with XAUTOCLAIM.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    lost: new Counter({
      name: 'surge_entries_lost_total',
      help: 'Pending entries whose payload was gone (deleted or trimmed) when read; acked and counted.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    inFlight: new Gauge({
      name: 'surge_apply_batches_in_flight',
      help: 'Batches handed to the thread pool and not yet acked.',
      registers: [registry],
    }),
  };
}

export function lagMetrics(registry: Registry) {
  const sg = ['stream', 'group'] as const;
  return {
    streamLength: new Gauge({
      name: 'surge_stream_length',
      help: 'XLEN of each shard stream.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    lag: new Gauge({
      name: 'surge_consumer_group_lag',
      help: 'Entries not yet delivered to the group (Redis XINFO GROUPS lag). Absent when Redis reports NULL.',
      labelNames: sg,
      registers: [registry],
    }),
    lagSeconds: new Gauge({
      name: 'surge_consumer_group_lag_seconds',
      help: 'Age of the oldest entry not yet delivered to the group (0 when none).',
      labelNames: sg,
      registers: [registry],
    }),
    pending: new Gauge({
      name: 'surge_consumer_group_pending',
      help: 'Entries delivered and not yet acknowledged.',
      labelNames: sg,
      registers: [registry],
    }),
    backlog: new Gauge({
      name: 'surge_consumer_group_backlog',
      help: 'Entries not yet applied: undelivered + pending. Counted from the stream when Redis lag is NULL.',
      labelNames: sg,
      registers: [registry],
    }),
    oldestPendingAge: new Gauge({
      name: 'surge_oldest_pending_age_seconds',
      help: 'Age of the oldest delivered-but-unacknowledged entry (0 when none).',
      labelNames: sg,
      registers: [registry],
    }),
    consumers: new Gauge({
      name: 'surge_consumer_group_consumers',
      help: 'Consumers registered in the group.',
      labelNames: sg,
      registers: [registry],
    }),
    consumerPending: new Gauge({
      name: 'surge_consumer_pending',
      help: 'Pending entries per consumer.',
      labelNames: ['stream', 'group', 'consumer'] as const,
      registers: [registry],
    }),
    consumerIdle: new Gauge({
      name: 'surge_consumer_idle_seconds',
      help: 'Seconds since the consumer last tried to read or claim (XINFO CONSUMERS idle).',
      labelNames: ['stream', 'group', 'consumer'] as const,
      registers: [registry],
    }),
    dlqDepth: new Gauge({
      name: 'surge_dlq_depth',
      help: 'Entries in each dead-letter stream.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    lagNull: new Gauge({
      name: 'surge_consumer_group_lag_null',
      help: '1 while Redis reports the group lag as NULL (the backlog is then counted from the stream), else 0.',
      labelNames: sg,
      registers: [registry],
    }),
    redisUsedMemory: new Gauge({
      name: 'surge_redis_used_memory_bytes',
      help: 'Redis INFO used_memory, per node (per master on Cluster).',
      labelNames: ['node'] as const,
      registers: [registry],
    }),
    redisMaxMemory: new Gauge({
      name: 'surge_redis_maxmemory_bytes',
      help: 'Redis maxmemory per node (0 = no limit).',
      labelNames: ['node'] as const,
      registers: [registry],
    }),
    scrapeErrors: new Counter({
      name: 'surge_lag_exporter_errors_total',
      help: 'Failed readings of Redis by the lag exporter.',
      registers: [registry],
    }),
    up: new Gauge({
      name: 'surge_lag_exporter_redis_up',
      help: '1 if the last reading of Redis succeeded.',
      registers: [registry],
    }),
    readDuration: new Gauge({
      name: 'surge_lag_exporter_read_duration_seconds',
      help: 'How long the last reading of Redis took (all shards; NULL-lag counting included).',
      registers: [registry],
    }),
  };
}
export type LagMetrics = ReturnType<typeof lagMetrics>;

export const MAINTENANCE_JOBS = ['trim-streams', 'consumers', 'expire-orders', 'dead-letters'] as const;
export type MaintenanceJobName = (typeof MAINTENANCE_JOBS)[number];

/** `surge maintenance` (scheduled jobs) and dead-letter replays. */
export function maintenanceMetrics(registry: Registry) {
  return {
    runs: new Counter({
      name: 'surge_maintenance_runs_total',
      help: 'Scheduled maintenance jobs run by this process, by job and result (ok, failed).',
      labelNames: ['job', 'result'] as const,
      registers: [registry],
    }),
    failures: new Counter({
      name: 'surge_maintenance_failures_total',
      help: 'Failed attempts of BullMQ jobs (maintenance and dlq-replay), by job.',
      labelNames: ['job'] as const,
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'surge_maintenance_job_duration_seconds',
      help: 'Run time of one scheduled maintenance job.',
      labelNames: ['job'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    trimmed: new Counter({
      name: 'surge_maintenance_trimmed_entries_total',
      help: 'Shard stream entries removed by the safe trim (acknowledged by every group).',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    expired: new Counter({
      name: 'surge_maintenance_expired_rows_total',
      help: 'Rows deleted by retention: orders (with their idempotency keys) and dead_letters.',
      labelNames: ['table'] as const,
      registers: [registry],
    }),
    dlqEntriesExpired: new Counter({
      name: 'surge_maintenance_dlq_entries_expired_total',
      help: 'DLQ stream entries removed by dead-letter retention.',
      registers: [registry],
    }),
    deadLettersBackfilled: new Counter({
      name: 'surge_maintenance_dead_letters_backfilled_total',
      help: 'dead_letters rows created from DLQ stream entries that had none.',
      registers: [registry],
    }),
    consumersRemoved: new Counter({
      name: 'surge_maintenance_consumers_removed_total',
      help: 'Idle consumers with no pending entries removed from the group.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    entriesReassigned: new Counter({
      name: 'surge_maintenance_entries_reassigned_total',
      help: 'Pending entries of idle consumers moved to a live consumer before removal.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    idleWithPending: new Gauge({
      name: 'surge_maintenance_idle_consumers_with_pending',
      help: 'Idle consumers kept because they hold pending entries and no live consumer could take them.',
      labelNames: ['stream'] as const,
      registers: [registry],
    }),
    deadLettersUnresolved: new Gauge({
      name: 'surge_dead_letters_unresolved',
      help: 'dead_letters rows never replayed (replayed_at is null), as last counted by this process.',
      registers: [registry],
    }),
    replays: new Counter({
      name: 'surge_dlq_replays_total',
      help: 'Dead-letter replay attempts by outcome (replayed, already_replayed, not_replayable, missing).',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
  };
}
export type MaintenanceMetrics = ReturnType<typeof maintenanceMetrics>;
