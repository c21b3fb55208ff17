// Property (fast-check) through the real path: HTTP → ingest → Redis → worker → PostgreSQL. Bodies
// written as a client may write them — odd number literals, date-times across and past what
// timestamptz holds, currencies of the right shape, unstorable strings, metadata of any JSON —
// are answered 202 or 400 and nothing else, and every body answered 202 is stored equal to what
// was sent: compared in PostgreSQL, as jsonb (numbers by value) and placed_at as the instant.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { ISO_4217_CODES } from '../common/iso-4217.js';
import { startIngest } from '../ingest/server.js';
import { startWorker, type WorkerHandle } from '../workers/worker.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { defined } from './support/defined.js';
import { http } from './support/http.js';
import { integerLiteral, numberLiteral, rfc3339Micros, rfc3339Stamp } from './support/order-text.js';

const RUNS = Math.max(1, Math.round(Number(process.env.SURGE_PROPERTY_RUNS ?? 40) / 2));

/** Mostly `usual`, sometimes `odd`: a body has several fields, so each stays usual most of the time. */
const mostly = <T>(usual: fc.Arbitrary<T>, odd: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 16, arbitrary: usual }, { weight: 1, arbitrary: odd });

/** A JSON string literal: any graphemes, sometimes NUL, a lone surrogate, empty or too long. */
const stringText = (max: number) =>
  mostly(
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: Math.min(max, 12) }),
    fc.oneof(
      fc.constantFrom('', 'a\u0000b', 'x\ud800', '\udfffy', '\u2028\t\\N'),
      fc.string({ unit: 'grapheme', minLength: max + 1, maxLength: max + 3 }),
    ),
  ).map((s) => JSON.stringify(s));

const jsonValue: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    stringText(20),
    mostly(
      fc.oneof(fc.integer().map(String), fc.double({ noNaN: true, noDefaultInfinity: true }).map(String)),
      numberLiteral,
    ),
    fc.constantFrom('true', 'false', 'null', '1.0', '-0', '1E2'),
    fc.array(tie('value'), { maxLength: 3 }).map((vs) => `[${vs.join(',')}]`),
    fc
      .array(fc.tuple(stringText(10), tie('value')), { maxLength: 3 })
      .map((kv) => `{${kv.map(([k, v]) => `${k}:${v}`).join(',')}}`),
  ),
})).value;

const itemText = fc
  .record({
    sku: stringText(64),
    qty: mostly(integerLiteral(1, 10_000), numberLiteral),
    price: mostly(integerLiteral(0, 100_000_000_000), numberLiteral),
  })
  .map((i) => `{"sku":${i.sku},"qty":${i.qty},"unit_price_cents":${i.price}}`);

/** An order body as text: its fields in any order, some optional, sometimes an unknown one. */
const bodyText = fc
  .record(
    {
      customer_id: stringText(64),
      currency: mostly(fc.constantFrom(...ISO_4217_CODES), fc.stringMatching(/^[A-Z]{3}$/)).map((c) =>
        JSON.stringify(c),
      ),
      items: fc.array(itemText, { minLength: 1, maxLength: 3 }).map((is) => `[${is.join(',')}]`),
      order_id: stringText(64),
      placed_at: fc
        .oneof(
          fc
            .date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true })
            .map((d) => d.toISOString()),
          rfc3339Stamp,
        )
        .map((s) => JSON.stringify(s)),
      metadata: fc
        .array(fc.tuple(stringText(20), jsonValue), { maxLength: 4 })
        .map((kv) => `{${kv.map(([k, v]) => `${k}:${v}`).join(',')}}`),
      extra: fc.oneof({ weight: 12, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant('1') }),
    },
    { requiredKeys: ['customer_id', 'currency', 'items', 'extra'] },
  )
  .map((b) => Object.fromEntries(Object.entries(b).filter(([, v]) => v !== undefined)) as Record<string, string>)
  .chain((b) => fc.shuffledSubarray(Object.entries(b), { minLength: Object.keys(b).length }))
  .map((fields) => `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`);

describe('property: through HTTP, Redis and the worker, a 202 is stored as sent', () => {
  let t: TestEnv;
  let db: pg.Pool;
  let ingest: Awaited<ReturnType<typeof startIngest>>;
  let worker: WorkerHandle;
  let client: { id: string; apiKey: string };
  let seq = 0;

  before(async () => {
    t = await createTestEnv({ SURGE_WORKER_THREADS: '1', SURGE_PG_POOL_SIZE: '2' });
    db = new pg.Pool({ connectionString: t.db.url, max: 2 });
    client = await createClient(db, 'property-shop');
    ingest = await startIngest(t.config);
    worker = await startWorker(t.config);
  });
  after(async () => {
    await ingest?.stop();
    await worker?.stop();
    await db?.end();
    await t?.cleanup();
  });

  test('every body is answered 202 or 400; every 202 is stored equal to the body sent', async () => {
    let accepted = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(bodyText, { minLength: 1, maxLength: 12 }), async (bodies) => {
        const sent = await Promise.all(
          bodies.map(async (body) => {
            const key = `ap-${++seq}`;
            const res = await http(ingest.url, {
              method: 'POST',
              path: '/v1/orders',
              headers: {
                authorization: `Bearer ${client.apiKey}`,
                'idempotency-key': key,
                'content-type': 'application/json',
              },
              body,
            });
            assert.ok(res.status === 202 || res.status === 400, `${res.status} for ${body}: ${res.text}`);
            return { key, body, status: res.status };
          }),
        );
        const ok = sent.filter((s) => s.status === 202);
        refused += sent.length - ok.length;
        accepted += ok.length;
        if (ok.length === 0) return;
        const keys = ok.map((s) => s.key);
        // Each accepted order ends as a row or as a dead letter; a dead letter fails at once.
        await waitFor('the accepted orders applied or dead-lettered', async () => {
          const r = await db.query<{ n: number }>(
            `SELECT (SELECT count(*) FROM orders WHERE client_id = $1 AND idempotency_key = ANY($2::text[]))::int
                  + (SELECT count(*) FROM dead_letters WHERE client_id = $1 AND idempotency_key = ANY($2::text[]))::int AS n`,
            [client.id, keys],
          );
          return r.rows[0]?.n === keys.length;
        });
        const dead = await db.query<{ idempotency_key: string; reason: string; message: string }>(
          'SELECT idempotency_key, reason, message FROM dead_letters WHERE client_id = $1 AND idempotency_key = ANY($2::text[])',
          [client.id, keys],
        );
        assert.deepEqual(
          dead.rows.map((d) => ({ ...d, body: ok.find((s) => s.key === d.idempotency_key)?.body })),
          [],
          'no accepted order is dead-lettered',
        );
        const rows = await db.query<{ key: string; same: boolean; total_same: boolean; placed_us: string | null }>(
          `SELECT s.key,
                  jsonb_build_object(
                    'customer_id', o.customer_id, 'currency', o.currency,
                    'items', (SELECT jsonb_agg(jsonb_build_object('sku', i.sku, 'qty', i.qty, 'unit_price_cents', i.unit_price_cents) ORDER BY i.line)
                                FROM order_items i WHERE i.order_pk = o.id))
                  || CASE WHEN o.order_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('order_id', o.order_id) END
                  || CASE WHEN o.metadata IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('metadata', o.metadata) END
                  = (s.body::jsonb - 'placed_at') AS same,
                  o.total_cents = (SELECT sum((e->>'qty')::numeric * (e->>'unit_price_cents')::numeric)
                                     FROM jsonb_array_elements(s.body::jsonb -> 'items') e) AS total_same,
                  (extract(epoch FROM o.placed_at) * 1000000)::numeric(30,0)::text AS placed_us
             FROM unnest($2::text[], $3::text[]) AS s(key, body)
             JOIN orders o ON o.client_id = $1 AND o.idempotency_key = s.key`,
          [client.id, keys, ok.map((s) => s.body)],
        );
        assert.equal(rows.rows.length, ok.length);
        for (const row of rows.rows) {
          const body = defined(
            ok.find((s) => s.key === row.key),
            row.key,
          ).body;
          assert.ok(row.same, `stored as sent (jsonb by value): ${body}`);
          assert.ok(row.total_same, `total_cents is the sum sent: ${body}`);
          const placedAt = (JSON.parse(body) as { placed_at?: string }).placed_at;
          assert.equal(
            row.placed_us === null ? null : BigInt(row.placed_us),
            placedAt === undefined ? null : rfc3339Micros(placedAt),
            `placed_at stored as the instant sent: ${body}`,
          );
        }
      }),
      { numRuns: RUNS },
    );
    assert.ok(accepted > 10 && refused > 10, `both answers exercised (${accepted} accepted, ${refused} refused)`);
  });
});
