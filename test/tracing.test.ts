// Tracing: the OTEL_* settings, the stream entry's trace field, the W3C traceparent, dead
// letters, and one order traced from POST to COMMIT through real `surge ingest` and `surge work`
// processes exporting to an OTLP/HTTP receiver.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import type { IncomingMessage } from 'node:http';
import {
  createContextKey,
  createTraceState,
  ROOT_CONTEXT,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
} from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  InMemorySpanExporter,
  type ReadableSpan,
  SamplingDecision,
  SimpleSpanProcessor,
  type SpanProcessor,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { decodeEntry, ENTRY_FIELD, encodeEntry, entryField } from '../common/entry.js';
import { dlqKey, shardFor, streamKey } from '../common/keys.js';
import { canonicalOrderJson } from '../common/order.js';
import { ensureGroups } from '../common/streams.js';
import { fromRecord, toRecord } from '../common/span-record.js';
import { formatTraceParent, parseTraceParent } from '../common/traceparent.js';
import { TracedWorkContextManager } from '../common/trace-context.js';
import {
  rootTraceId,
  sampledBy,
  type Tracing,
  TraceIds,
  TracingConfigError,
  tracingSettings,
} from '../common/tracing.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { requestTrace } from '../ingest/request-trace.js';
import { startIngest } from '../ingest/server.js';
import { replayDeadLetter } from '../maintenance/dlq.js';
import { startWorker } from '../workers/worker.js';
import { http } from './support/http.js';
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from './support/otlp.js';
import { type SurgeProcess, startSurge } from './support/procs.js';

const ORDER = { customer_id: 'c1', currency: 'EUR', items: [{ sku: 'trace-sku', qty: 1, unit_price_cents: 250 }] };
const hex = (bytes: number) => randomBytes(bytes).toString('hex');

describe('tracing settings (OTEL_* variables)', () => {
  test('off unless configured; on with an OTLP endpoint or exporter; none and SDK_DISABLED turn it off', () => {
    assert.equal(tracingSettings({}, 'svc'), undefined);
    assert.equal(tracingSettings({ OTEL_SERVICE_NAME: 'x' }, 'svc'), undefined);
    const on = tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }, 'surge-ingest');
    assert.equal(on?.exporter, 'otlp');
    assert.equal(on?.serviceName, 'surge-ingest');
    assert.equal(
      tracingSettings({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_SERVICE_NAME: 'shop' }, 's')?.serviceName,
      'shop',
    );
    assert.equal(tracingSettings({ OTEL_TRACES_EXPORTER: 'console' }, 's')?.exporter, 'console');
    assert.equal(
      tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_TRACES_EXPORTER: 'none' }, 's'),
      undefined,
    );
    assert.equal(
      tracingSettings({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c', OTEL_SDK_DISABLED: 'true' }, 's'),
      undefined,
    );
  });

  test('samplers by their specification names; bad values are configuration errors', () => {
    const sampler = (name: string, arg?: string) =>
      tracingSettings(
        { OTEL_TRACES_EXPORTER: 'otlp', OTEL_TRACES_SAMPLER: name, ...(arg ? { OTEL_TRACES_SAMPLER_ARG: arg } : {}) },
        's',
      )?.sampler.toString();
    assert.match(String(sampler('parentbased_traceidratio', '0.01')), /ParentBased.*TraceIdRatioBased\{0\.01\}/);
    assert.match(String(sampler('always_off')), /AlwaysOff/);
    assert.throws(() => sampler('sometimes'), TracingConfigError);
    assert.throws(() => sampler('traceidratio', '2'), TracingConfigError);
    assert.throws(() => tracingSettings({ OTEL_TRACES_EXPORTER: 'jaeger' }, 's'), TracingConfigError);
    assert.throws(
      () => tracingSettings({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, 's'),
      TracingConfigError,
    );
  });

  test('the batch processor takes the OTEL_BSP_* variables, with the specification defaults', () => {
    const batch = (env: Record<string, string>) =>
      tracingSettings({ OTEL_TRACES_EXPORTER: 'otlp', ...env }, 's')?.batch;
    assert.deepEqual(batch({}), {
      scheduledDelayMillis: 5000,
      maxExportBatchSize: 512,
      maxQueueSize: 2048,
      exportTimeoutMillis: 30000,
    });
    assert.deepEqual(
      batch({
        OTEL_BSP_SCHEDULE_DELAY: '0',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '1000',
        OTEL_BSP_MAX_QUEUE_SIZE: '4000',
        OTEL_BSP_EXPORT_TIMEOUT: '5000',
      }),
      { scheduledDelayMillis: 0, maxExportBatchSize: 1000, maxQueueSize: 4000, exportTimeoutMillis: 5000 },
    );
    for (const bad of <Record<string, string>[]>[
      { OTEL_BSP_SCHEDULE_DELAY: '-1' },
      { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '0' },
      { OTEL_BSP_MAX_QUEUE_SIZE: 'many' },
      { OTEL_BSP_EXPORT_TIMEOUT: '1.5' },
      { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '3000' },
    ])
      assert.throws(() => batch(bad), TracingConfigError, JSON.stringify(bad));
  });
});

describe('stream entry trace field', () => {
  const values = { clientId: 'c_1', idempotencyKey: 'k1', canonical: canonicalOrderJson(ORDER) };

  test('entries written before the field decode, and so do entries with it', () => {
    // The layout written before the trace field existed, byte for byte.
    const old = ['v', '1', 'c', 'c_1', 'k', 'k1', 'o', values.canonical];
    assert.deepEqual(encodeEntry(values), old);
    const a = decodeEntry(old);
    assert.ok(a.ok);
    const tp = `00-${hex(16)}-${hex(8)}-01`;
    const traced = encodeEntry({ ...values, traceparent: tp });
    assert.deepEqual(traced, [...old, ENTRY_FIELD.trace, tp]);
    const b = decodeEntry(traced);
    assert.ok(b.ok);
    assert.deepEqual(b.entry, a.entry);
    assert.equal(entryField(traced, ENTRY_FIELD.trace), tp);
  });
});

describe('traceparent', () => {
  test('parses a valid header and formats it back; refuses invalid ones', () => {
    const tp = `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`;
    const p = parseTraceParent(tp);
    assert.deepEqual(p, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), flags: 1 });
    assert.equal(p && formatTraceParent(p), tp);
    // A later version may carry more fields after the flags.
    assert.equal(parseTraceParent(`01-${'a'.repeat(32)}-${'b'.repeat(16)}-00-extra`)?.flags, 0);
    for (const bad of [
      undefined,
      '',
      `00-${'0'.repeat(32)}-${'b'.repeat(16)}-01`,
      `00-${'a'.repeat(32)}-${'0'.repeat(16)}-01`,
      `ff-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
      `00-${'A'.repeat(32)}-${'b'.repeat(16)}-01`,
      `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01-extra`,
      `00-${'a'.repeat(31)}-${'b'.repeat(17)}-01`,
    ])
      assert.equal(parseTraceParent(bad), undefined, String(bad));
  });
});

// Every sampler the variables name, with the ratios at and between the bounds.
const SAMPLERS: [string, string | undefined][] = [
  ['always_on', undefined],
  ['always_off', undefined],
  ['parentbased_always_on', undefined],
  ['parentbased_always_off', undefined],
  ...['0', '0.01', '0.5', '0.999', '1'].flatMap((r): [string, string][] => [
    ['traceidratio', r],
    ['parentbased_traceidratio', r],
  ]),
];
const settingsFor = (name: string, arg: string | undefined) => {
  const s = tracingSettings(
    { OTEL_TRACES_EXPORTER: 'otlp', OTEL_TRACES_SAMPLER: name, ...(arg ? { OTEL_TRACES_SAMPLER_ARG: arg } : {}) },
    's',
  );
  assert.ok(s);
  return s;
};
// No parent, or a remote parent with a random flags byte (bit 0 is the sampled flag).
/**
 * For a traced `surge ingest` + `surge work` pair: an API client, the stocked SKU of ORDER, and
 * the processes' environment, exporting to `receiver` every `scheduleDelayMs`.
 */
async function tracedStackEnv(t: TestEnv, receiver: OtlpReceiver, clientName: string, scheduleDelayMs: number) {
  const db = new pg.Pool({ connectionString: t.db.url, max: 1 });
  try {
    const { apiKey, id: clientId } = await createClient(db, clientName);
    await db.query("INSERT INTO inventory (sku, available) VALUES ('trace-sku', 10)");
    const env = {
      ...t.env,
      SURGE_LOG_LEVEL: 'debug',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_BSP_SCHEDULE_DELAY: String(scheduleDelayMs),
    };
    return { apiKey, clientId, env };
  } finally {
    await db.end();
  }
}

const parentFlags = (i: number): number | undefined => (i % 3 === 0 ? undefined : randomBytes(1)[0]);

describe('the ingest fast path decides sampling as the SDK sampler does', () => {
  test('sampledBy equals the configured sampler over generated trace ids and parents', () => {
    const ids = new TraceIds();
    for (const [name, arg] of SAMPLERS) {
      const { sampler, rule } = settingsFor(name, arg);
      let kept = 0;
      for (let i = 0; i < 6000; i++) {
        const traceId = ids.generateTraceId();
        const flags = parentFlags(i);
        const ctx =
          flags === undefined
            ? ROOT_CONTEXT
            : trace.setSpanContext(ROOT_CONTEXT, {
                traceId,
                spanId: ids.generateSpanId(),
                traceFlags: flags & TraceFlags.SAMPLED,
                isRemote: true,
              });
        const sdk =
          sampler.shouldSample(ctx, traceId, 'POST /v1/orders', SpanKind.SERVER, {}, []).decision ===
          SamplingDecision.RECORD_AND_SAMPLED;
        assert.equal(sampledBy(rule, traceId, flags), sdk, `${name} ${arg ?? ''} ${traceId} parent ${flags}`);
        if (sdk) kept++;
      }
      // The ratios are exercised, not only the bounds: some kept and some dropped.
      if (arg === '0.5') assert.ok(kept > 1000 && kept < 5000, `${name} 0.5 kept ${kept}`);
    }
  });

  test('a new trace is decided before its id is made, with the SDK sampler agreeing on that id', () => {
    for (const [name, arg] of SAMPLERS) {
      const { sampler, rule } = settingsFor(name, arg);
      const draws = 20_000;
      let kept = 0;
      for (let i = 0; i < draws; i++) {
        const traceId = rootTraceId(rule);
        if (traceId === undefined) continue;
        kept++;
        assert.match(traceId, /^[0-9a-f]{32}$/);
        assert.ok(parseTraceParent(`00-${traceId}-${'1'.repeat(16)}-01`), 'a valid trace id');
        const sdk = sampler.shouldSample(ROOT_CONTEXT, traceId, 'POST /v1/orders', SpanKind.SERVER, {}, []);
        assert.equal(sdk.decision, SamplingDecision.RECORD_AND_SAMPLED, `${name} ${arg ?? ''} ${traceId}`);
      }
      // Kept at the configured ratio (the bounds exactly; between them within a wide margin).
      const r = name.endsWith('always_on') ? 1 : name.endsWith('always_off') ? 0 : Number(arg);
      if (r === 0 || r === 1) assert.equal(kept, r * draws, `${name} ${arg ?? ''}`);
      else assert.ok(Math.abs(kept / draws - r) < 0.2 * r + 0.005, `${name} ${arg} kept ${kept} of ${draws}`);
    }
  });

  test('a request is traced exactly when the SDK records its span, which carries the decided trace', () => {
    const logger = pino({ level: 'silent' });
    for (const [name, arg] of SAMPLERS) {
      const settings = settingsFor(name, arg);
      const ended: ReadableSpan[] = [];
      const collect: SpanProcessor = {
        onStart() {},
        onEnd(span) {
          if (span.name !== 'admission' && span.name !== 'accept') ended.push(span);
        },
        forceFlush: async () => {},
        shutdown: async () => {},
      };
      const ids = new TraceIds();
      const provider = new TracerProvider({ sampler: settings.sampler, idGenerator: ids, spanProcessors: [collect] });
      const tracing: Tracing = {
        tracer: provider.getTracer('test'),
        settings,
        ids,
        hold: () => () => {},
        logMixin: () => ({}),
        shutdown: async () => {},
      };
      let sampled = 0;
      for (let i = 0; i < 1500; i++) {
        const flags = parentFlags(i);
        const parent = flags === undefined ? undefined : { traceId: hex(16), spanId: hex(8), flags };
        const req = {
          method: 'POST',
          headers: parent ? { traceparent: formatTraceParent(parent) } : {},
        } as unknown as IncomingMessage;
        const before = ended.length;
        const rt = requestTrace(tracing, req, 'POST /v1/orders', '/v1/orders');
        const what = `${name} ${arg ?? ''} request ${i}`;
        if (parent) {
          const ctx = trace.setSpanContext(ROOT_CONTEXT, { ...parent, traceFlags: flags ?? 0, isRemote: true });
          const sdk = settings.sampler.shouldSample(ctx, parent.traceId, 'POST /v1/orders', SpanKind.SERVER, {}, []);
          assert.equal(rt !== undefined, sdk.decision === SamplingDecision.RECORD_AND_SAMPLED, what);
        }
        if (!rt) {
          assert.equal(ended.length, before, what);
          continue;
        }
        sampled++;
        const answer = parseTraceParent(rt.answered(202, logger, `r${i}`));
        assert.ok(answer);
        assert.equal(answer.flags, 1, what);
        if (parent) assert.equal(answer.traceId, parent.traceId, what);
        assert.equal(ended.length - before, 1, what);
        const sc = ended[ended.length - 1]?.spanContext();
        assert.equal(sc?.traceId, answer.traceId, what);
        assert.equal(sc?.spanId, answer.spanId, what);
      }
      if (arg === '0.5') assert.ok(sampled > 200 && sampled < 1300, `${name} 0.5 sampled ${sampled}`);
    }
  });
});

describe('span records (the hop to the export thread)', () => {
  // Every field of a ReadableSpan the OTLP encoding reads (otlp-transformer's sdkSpanToOtlpSpan).
  const ctxOf = (sc: SpanContext | undefined) =>
    sc && { ...sc, traceState: sc.traceState?.serialize(), isRemote: Boolean(sc.isRemote) };
  const encoded = (s: ReadableSpan) => ({
    ctx: ctxOf(s.spanContext()),
    parent: ctxOf(s.parentSpanContext),
    name: s.name,
    kind: s.kind,
    start: s.startTime,
    end: s.endTime,
    attributes: s.attributes,
    dropped: [s.droppedAttributesCount, s.droppedEventsCount, s.droppedLinksCount],
    events: s.events.map((e) => ({ ...e, droppedAttributesCount: e.droppedAttributesCount || 0 })),
    status: s.status,
    links: s.links.map((l) => ({
      ctx: ctxOf(l.context),
      attributes: l.attributes ?? {},
      droppedAttributesCount: l.droppedAttributesCount || 0,
    })),
    resource: s.resource.attributes,
    scope: [s.instrumentationScope.name, s.instrumentationScope.version, s.instrumentationScope.schemaUrl],
  });

  test('a span rebuilt from its cloned record encodes as the span did', () => {
    const resource = resourceFromAttributes({ 'service.name': 'records', 'host.arch': 'amd64' });
    const memory = new InMemorySpanExporter();
    const provider = new TracerProvider({
      resource,
      spanProcessors: [new SimpleSpanProcessor({ exporter: memory })],
      spanLimits: { attributeCountLimit: 4 },
    });
    const tracer = provider.getTracer('surge', '1.2.3');
    const remote = trace.setSpanContext(ROOT_CONTEXT, {
      traceId: hex(16),
      spanId: hex(8),
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
      traceState: createTraceState('vendor=a,other=b'),
    });
    const server = tracer.startSpan('POST /v1/orders', { kind: SpanKind.SERVER, attributes: { a: 1 } }, remote);
    const child = tracer.startSpan(
      'apply batch',
      {
        kind: SpanKind.CONSUMER,
        links: [
          {
            context: { traceId: hex(16), spanId: hex(8), traceFlags: 1, isRemote: true },
            attributes: { 'messaging.message.id': '1-0' },
          },
          { context: { traceId: hex(16), spanId: hex(8), traceFlags: 0, traceState: createTraceState('k=v') } },
        ],
        attributes: { b: 'x', c: true, d: [1, 2], e: 2.5, f: 'over the limit' },
      },
      trace.setSpan(ROOT_CONTEXT, server),
    );
    child.addEvent('split', { 'surge.orders': 3 });
    child.addEvent('retry');
    child.setStatus({ code: SpanStatusCode.ERROR, message: 'deadlock' });
    child.end();
    server.end();
    const spans = memory.getFinishedSpans();
    assert.equal(spans.length, 2);
    const rebuiltResource = resourceFromAttributes({ ...resource.attributes });
    const scopes = new Map();
    for (const span of spans) {
      const rebuilt = fromRecord(structuredClone(toRecord(span)), rebuiltResource, scopes);
      assert.deepEqual(encoded(rebuilt), encoded(span), span.name);
    }
    const [a, b] = spans.map((span) => fromRecord(toRecord(span), rebuiltResource, scopes));
    assert.equal(a?.instrumentationScope, b?.instrumentationScope, 'one scope object per scope');
    assert.equal((spans[0] as ReadableSpan).droppedAttributesCount, 1, 'the limit dropped one attribute');
  });
});

describe('the context manager', () => {
  const KEY = createContextKey('test');
  const ctx = ROOT_CONTEXT.setValue(KEY, 'traced');
  const later = (m: TracedWorkContextManager) =>
    m.with(ctx, async () => {
      await new Promise<void>((resolve) => setImmediate(resolve));
      return m.active().getValue(KEY);
    });

  test('contexts follow continuations while traced work holds the manager; with hooks, only then', async () => {
    const m = new TracedWorkContextManager();
    assert.equal(
      m.with(ctx, () => m.active().getValue(KEY)),
      'traced',
      'inside the call',
    );
    assert.equal(m.active(), ROOT_CONTEXT, 'and not after it');
    // Nothing holds it: hook-based storage is not entered (no hooks on), so the continuation
    // runs in the root context; AsyncContextFrame (no hooks) keeps the context.
    assert.equal(await later(m), m.hooked ? undefined : 'traced');
    const release = m.hold();
    assert.equal(await later(m), 'traced', 'held: the continuation runs in the context');
    assert.equal(
      m.with(ctx, () => m.with(ROOT_CONTEXT, () => m.active().getValue(KEY))),
      undefined,
      'a nested with wins',
    );
    release();
    release();
    assert.equal(await later(m), m.hooked ? undefined : 'traced', 'released: back to the synchronous call');
    const again = m.hold();
    assert.equal(await later(m), 'traced', 'held again');
    again();
  });
});

describe('tracing off', () => {
  let t: TestEnv;
  let ingest: Awaited<ReturnType<typeof startIngest>>;
  let apiKey: string;
  let offClient: string;
  before(async () => {
    t = await createTestEnv();
    const db = new pg.Pool({ connectionString: t.db.url, max: 1 });
    const created = await createClient(db, 'trace-off');
    apiKey = created.apiKey;
    offClient = created.id;
    await db.end();
    ingest = await startIngest(t.config);
  });
  after(async () => {
    await ingest?.stop();
    await t?.cleanup();
  });

  test('no traceparent answered and no trace field in the entry, even when the caller sends one', async () => {
    const res = await http(`http://127.0.0.1:${ingest.port}`, {
      method: 'POST',
      path: '/v1/orders',
      headers: {
        authorization: `Bearer ${apiKey}`,
        'idempotency-key': 'off-1',
        'content-type': 'application/json',
        traceparent: `00-${hex(16)}-${hex(8)}-01`,
      },
      body: JSON.stringify(ORDER),
    });
    assert.equal(res.status, 202, res.text);
    assert.equal(res.headers.traceparent, undefined);
    const redis = new Redis(t.redisUrl);
    try {
      const entries = await redis.xrange(streamKey(t.prefix, shardFor(offClient, 'off-1', t.config.shards)), '-', '+');
      assert.equal(entries.length, 1);
      assert.deepEqual(
        entries[0]?.[1].filter((_, i) => i % 2 === 0),
        ['v', 'c', 'k', 'o'],
      );
    } finally {
      redis.disconnect();
    }
  });
});

describe('dead letters keep the trace context', () => {
  let t: TestEnv;
  before(async () => {
    t = await createTestEnv({ SURGE_WORKER_THREADS: '1', SURGE_PG_POOL_SIZE: '1' });
  });
  after(async () => {
    await t?.cleanup();
  });

  test('the dead letter row and DLQ entry carry `t`, and a replay re-emits it', async () => {
    const redis = new Redis(t.redisUrl);
    const pool = new pg.Pool({ connectionString: t.db.url, max: 2 });
    const worker = await startWorker(t.config);
    try {
      await ensureGroups(redis, t.prefix, t.config.shards);
      const tp = `00-${hex(16)}-${hex(8)}-01`;
      const shard = shardFor('dl-client', 'dl-1', t.config.shards);
      const stream = streamKey(t.prefix, shard);
      // An entry the worker cannot decode (its order is not JSON): dead-lettered at once.
      await redis.xadd(stream, '*', 'v', '1', 'c', 'dl-client', 'k', 'dl-1', 'o', '{not json', 't', tp);
      const row = await waitFor('the dead letter row', async () => {
        const r = await pool.query<{ id: string; trace_context: string | null }>(
          "SELECT id, trace_context FROM dead_letters WHERE idempotency_key = 'dl-1'",
        );
        return r.rows[0];
      });
      assert.equal(row.trace_context, tp);
      // The row commits before the entry moves to the DLQ stream: wait for that too.
      const dlq = await waitFor('the DLQ entry', async () => {
        const entries = await redis.xrange(dlqKey(t.prefix, shard), '-', '+');
        return entries.length > 0 ? entries : undefined;
      });
      assert.equal(entryField(dlq[0]?.[1], ENTRY_FIELD.trace), tp);
      // The operator fixes the payload, then replays it.
      await pool.query('UPDATE dead_letters SET payload = $1 WHERE id = $2', [canonicalOrderJson(ORDER), row.id]);
      const replayed = await replayDeadLetter(
        { pool, redis, prefix: t.prefix, shards: t.config.shards },
        Number(row.id),
      );
      assert.equal(replayed.outcome, 'replayed');
      const entry = (await redis.xrange(stream, '-', '+')).find(([id]) => id === replayed.entryId);
      assert.equal(entryField(entry?.[1], ENTRY_FIELD.trace), tp);
    } finally {
      await worker.stop();
      redis.disconnect();
      await pool.end();
    }
  });
});

describe('tracing on: one order from POST to COMMIT, real processes, OTLP/HTTP receiver', () => {
  let t: TestEnv;
  let receiver: OtlpReceiver;
  let ingest: SurgeProcess | undefined;
  let worker: SurgeProcess | undefined;
  let apiKey: string;
  let clientId: string;

  before(async () => {
    receiver = await startOtlpReceiver();
    t = await createTestEnv({ SURGE_WORKER_THREADS: '1', SURGE_PG_POOL_SIZE: '2' });
    const traced = await tracedStackEnv(t, receiver, 'trace-shop', 100);
    ({ apiKey, clientId } = traced);
    const { env } = traced;
    ingest = await startSurge('ingest', env, 'ingest-traced');
    worker = await startSurge('work', env, 'work-traced');
  });
  after(async () => {
    await ingest?.kill();
    await worker?.kill();
    await receiver?.close();
    await t?.cleanup();
  });

  const post = (key: string, traceparent?: string) =>
    http(ingest?.url ?? '', {
      method: 'POST',
      path: '/v1/orders',
      headers: {
        authorization: `Bearer ${apiKey}`,
        'idempotency-key': key,
        'content-type': 'application/json',
        ...(traceparent ? { traceparent } : {}),
      },
      body: JSON.stringify(ORDER),
    });

  const spansOf = (traceId: string) => receiver.spans.filter((s) => s.traceId === traceId);
  const one = (spans: ReceivedSpan[], name: string): ReceivedSpan => {
    const found = spans.filter((s) => s.name === name);
    const [span] = found;
    assert.ok(span && found.length === 1, `one ${name} span: ${JSON.stringify(spans.map((s) => s.name))}`);
    return span;
  };

  test("the POST continues the caller's trace, and the batch span links to the order's accept span", async () => {
    const traceId = hex(16);
    const callerSpan = hex(8);
    const res = await post('traced-1', `00-${traceId}-${callerSpan}-01`);
    assert.equal(res.status, 202, res.text);
    const answered = parseTraceParent(String(res.headers.traceparent));
    assert.equal(answered?.traceId, traceId, 'the answer continues the trace');

    // The ingest side: server span (child of the caller), admission and accept under it.
    await waitFor('the request spans', () => spansOf(traceId).length >= 3, { timeoutMs: 15_000 });
    const ingestSpans = spansOf(traceId);
    const server = one(ingestSpans, 'POST /v1/orders');
    assert.equal(server.service, 'surge-ingest');
    assert.equal(server.parentSpanId, callerSpan);
    assert.equal(server.spanId, answered?.spanId);
    assert.equal(server.attributes['http.response.status_code'], 202);
    const admission = one(ingestSpans, 'admission');
    assert.equal(admission.parentSpanId, server.spanId);
    const accept = one(ingestSpans, 'accept');
    assert.equal(accept.parentSpanId, server.spanId);
    assert.equal(accept.attributes['surge.outcome'], 'accepted');
    assert.equal(accept.attributes['surge.shard'], shardFor(clientId, 'traced-1', t.config.shards));

    // The worker side: a batch span in its own trace, linked to the accept span.
    const linksHere = (s: ReceivedSpan) => s.links.some((l) => l.traceId === traceId && l.spanId === accept.spanId);
    await waitFor('the batch span', () => receiver.spans.some((s) => s.name === 'apply batch' && linksHere(s)), {
      timeoutMs: 20_000,
    });
    const batch = receiver.spans.find((s) => s.name === 'apply batch' && linksHere(s)) as ReceivedSpan;
    assert.equal(batch.service, 'surge-worker');
    assert.equal(batch.parentSpanId, '');
    assert.equal(batch.attributes['surge.inserted'], 1);
    assert.ok(batch.startMs >= server.startMs, 'the batch starts after the request');
    await waitFor(
      'the batch children',
      () => receiver.spans.filter((s) => s.parentSpanId === batch.spanId).length >= 5,
    );
    const children = receiver.spans.filter((s) => s.parentSpanId === batch.spanId);
    for (const name of ['stage', 'insert', 'reserve', 'commit', 'ack']) {
      const c = one(children, name);
      assert.equal(c.traceId, batch.traceId);
      assert.ok(c.startMs >= batch.startMs - 1 && c.endMs <= batch.endMs + 1, `${name} inside the batch span`);
    }

    // Logs: the order's trace id in the ingest process's lines and in the worker's.
    const logged = (p: SurgeProcess | undefined) =>
      (p?.logLines() ?? []).filter((l) => l.includes(traceId)).map((l) => JSON.parse(l) as Record<string, unknown>);
    await waitFor('the worker log line', () => logged(worker).length > 0);
    const ingestLine = logged(ingest).find((l) => l.msg === 'request answered');
    assert.equal(ingestLine?.trace_id, traceId);
    assert.equal(ingestLine?.span_id, server.spanId);
    const workerLine = logged(worker).find((l) => l.msg === 'traced batch applied');
    assert.equal(workerLine?.trace_id, batch.traceId, 'the worker line carries its batch span ids');
    assert.deepEqual(workerLine?.linked_trace_ids, [traceId]);
    assert.deepEqual(receiver.errors, []);

    // SURGE_TEST_TRACE_OUT: where to write this order's spans (the example in docs/operations.md).
    const out = process.env.SURGE_TEST_TRACE_OUT;
    if (out) {
      const mine = receiver.spans.filter((s) => s.traceId === traceId || s.traceId === batch.traceId);
      writeFileSync(out, `${JSON.stringify(mine, null, 2)}\n`);
    }

    // Exemplars: the end-to-end histogram names the order's trace in OpenMetrics, and only there.
    const om = await http(worker?.url ?? '', {
      path: '/metrics',
      headers: { accept: 'application/openmetrics-text; version=1.0.0, text/plain;q=0.5' },
    });
    assert.match(String(om.headers['content-type']), /^application\/openmetrics-text/);
    const exemplar = om.text
      .split('\n')
      .find((l) => l.startsWith('surge_order_end_to_end_seconds_bucket') && l.includes(`trace_id="${traceId}"`));
    assert.ok(exemplar, 'an end-to-end bucket carries the order trace id as its exemplar');
    assert.match(om.text, /# EOF\s*$/);
    // Counters keep the sample names queries use (prom-client would append a second `_total`).
    assert.match(om.text, /^# TYPE surge_orders_applied counter$/m);
    assert.match(om.text, /^surge_orders_applied_total\{[^}]*result="inserted"[^}]*\} 1$/m);
    assert.ok(!om.text.includes('_total_total'));
    const plain = await http(worker?.url ?? '', { path: '/metrics' });
    assert.match(String(plain.headers['content-type']), /^text\/plain/);
    assert.ok(!plain.text.includes('trace_id='), 'the Prometheus text format has no exemplars');
    assert.match(plain.text, /surge_order_end_to_end_seconds_count\{[^}]*\} 1/);
  });

  test('a request without traceparent starts a trace; an unsampled caller gets no trace field in the entry', async () => {
    const fresh = await post('traced-2');
    assert.equal(fresh.status, 202);
    const started = parseTraceParent(String(fresh.headers.traceparent));
    assert.ok(started, 'a new trace is answered');
    await waitFor('the new trace exported', () => spansOf(started.traceId).some((s) => s.name === 'POST /v1/orders'));

    const unsampled = await post('traced-3', `00-${hex(16)}-${hex(8)}-00`);
    assert.equal(unsampled.status, 202);
    assert.equal(unsampled.headers.traceparent, undefined, 'an untraced request answers no traceparent');
    const redis = new Redis(t.redisUrl);
    try {
      const key = streamKey(t.prefix, shardFor(clientId, 'traced-3', t.config.shards));
      const fields = (await redis.xrange(key, '-', '+'))
        .map(([, f]) => f)
        .find((f) => entryField(f, 'k') === 'traced-3');
      assert.ok(fields);
      assert.equal(entryField(fields, ENTRY_FIELD.trace), undefined);
      const sampledKey = streamKey(t.prefix, shardFor(clientId, 'traced-2', t.config.shards));
      const sampled = (await redis.xrange(sampledKey, '-', '+'))
        .map(([, f]) => f)
        .find((f) => entryField(f, 'k') === 'traced-2');
      assert.equal(parseTraceParent(entryField(sampled, ENTRY_FIELD.trace))?.traceId, started.traceId);
    } finally {
      redis.disconnect();
    }
  });
});

describe('a graceful stop sends the spans still buffered', () => {
  let t: TestEnv;
  let receiver: OtlpReceiver;
  let ingest: SurgeProcess | undefined;
  let worker: SurgeProcess | undefined;

  before(async () => {
    receiver = await startOtlpReceiver();
    t = await createTestEnv({ SURGE_WORKER_THREADS: '1', SURGE_PG_POOL_SIZE: '2' });
  });
  after(async () => {
    await ingest?.kill();
    await worker?.kill();
    await receiver?.close();
    await t?.cleanup();
  });

  test('ingest and the worker export on SIGTERM what their schedule had not sent yet', async () => {
    // Nothing is sent on schedule during the test: only the stop can send these spans.
    const { apiKey, env } = await tracedStackEnv(t, receiver, 'trace-stop', 600_000);
    const db = new pg.Pool({ connectionString: t.db.url, max: 1 });
    ingest = await startSurge('ingest', env, 'ingest-stop');
    worker = await startSurge('work', env, 'work-stop');
    try {
      const traceId = hex(16);
      const res = await http(ingest.url, {
        method: 'POST',
        path: '/v1/orders',
        headers: {
          authorization: `Bearer ${apiKey}`,
          'idempotency-key': 'stop-1',
          'content-type': 'application/json',
          traceparent: `00-${traceId}-${hex(8)}-01`,
        },
        body: JSON.stringify(ORDER),
      });
      assert.equal(res.status, 202, res.text);
      await waitFor('the order applied', async () => {
        const r = await db.query("SELECT 1 FROM orders WHERE idempotency_key = 'stop-1'");
        return r.rowCount === 1;
      });
      const w = worker;
      await waitFor('the traced batch', () => w.logLines().some((l) => l.includes('traced batch applied')));
      assert.equal(receiver.spans.length, 0, 'nothing sent before the stop');
      ingest.signal('SIGTERM');
      worker.signal('SIGTERM');
      assert.equal(await ingest.exited, 0, ingest.tail());
      assert.equal(await worker.exited, 0, worker.tail());
      const names = receiver.spans.filter((s) => s.traceId === traceId).map((s) => s.name);
      assert.deepEqual(names.sort(), ['POST /v1/orders', 'accept', 'admission']);
      const batch = receiver.spans.find((s) => s.name === 'apply batch');
      assert.ok(
        batch?.links.some((l) => l.traceId === traceId),
        'the batch span, linked to the order',
      );
      assert.equal(batch?.service, 'surge-worker');
      assert.deepEqual(receiver.errors, []);
    } finally {
      await db.end();
    }
  });
});
