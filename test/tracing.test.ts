// Tracing: the OTEL_* settings, the stream entry's trace field, the W3C traceparent, dead
// letters, and one order traced from POST to COMMIT through real `surge ingest` and `surge work`
// processes exporting to an OTLP/HTTP receiver.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { decodeEntry, ENTRY_FIELD, encodeEntry, entryField } from '../common/entry.js';
import { dlqKey, shardFor, streamKey } from '../common/keys.js';
import { canonicalOrderJson } from '../common/order.js';
import { ensureGroups } from '../common/streams.js';
import { formatTraceParent, parseTraceParent } from '../common/traceparent.js';
import { TracingConfigError, tracingSettings } from '../common/tracing.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { startIngest } from '../ingest/server.js';
import { replayDeadLetter } from '../maintenance/dlq.js';
import { startWorker } from '../workers/worker.js';
import { http } from './support/http.js';

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
      const dlq = await redis.xrange(dlqKey(t.prefix, shard), '-', '+');
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
