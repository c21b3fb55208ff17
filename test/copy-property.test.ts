// Property tests (fast-check) for the order schema and the COPY encoding, through the real code:
// arbitrary orders with arbitrary Unicode (tabs, newlines, CR, backslashes, the text `\N`,
// emoji, U+2028, astral planes…) are either rejected by validation (what ingest answers 400
// with) or, encoded as ingest encodes them and applied by the worker's apply step (COPY into the
// staging table, INSERT … ON CONFLICT), stored in PostgreSQL exactly. Validation and entry
// decoding never throw, whatever the input.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { createPool, type Pool } from '../common/db.js';
import { streamKey } from '../common/keys.js';
import { decodeEntry, encodeEntry } from '../common/entry.js';
import { ISO_4217_CODES } from '../common/iso-4217.js';
import {
  canonicalJson,
  canonicalOrderJson,
  inexactNumbers,
  type Order,
  surelyValidOrder,
  validateOrder,
} from '../common/order.js';
import { parseJson } from '../ingest/requests.js';
import { applyBatch, encodeBatch, type TaskEntry } from '../workers/apply.js';
import { copyRow, copyValue } from '../workers/copy.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { defined } from './support/defined.js';
import { numberLiteral, rfc3339Micros, rfc3339Stamp } from './support/order-text.js';

const RUNS = Number(process.env.SURGE_PROPERTY_RUNS ?? 40);
const NASTY = [
  '\t',
  '\n',
  '\r',
  '\\',
  '\\N',
  '\\\\N',
  'N',
  '\r\n',
  '🛒',
  '👩‍👩‍👧',
  '\u2028',
  '\u00e9',
  '\u{10FFFF}',
  '"',
  "'",
  ',',
  '|',
  ' ',
  '\u0001',
  '\u007f',
];
/** What PostgreSQL text/jsonb cannot hold: one of these makes an order invalid (ingest answers 400). */
const UNSTORABLE_CHARS = ['\u0000', '\ud800', '\udfff', '\udbff'];

/** Valid Unicode strings (any grapheme, astral planes included) mixed with COPY's special characters. */
const nastyString = (maxLength: number) =>
  fc
    .array(fc.oneof(fc.string({ unit: 'grapheme', maxLength: 4 }), fc.constantFrom(...NASTY)), { maxLength: 8 })
    .map((parts) => parts.join('').slice(0, maxLength))
    .filter((s) => s.length > 0 && !/[\ud800-\udfff]$/.test(s));

const validOrderArb: fc.Arbitrary<Order> = fc.record(
  {
    customer_id: nastyString(64),
    currency: fc.constantFrom(...ISO_4217_CODES),
    items: fc.array(
      fc.record({
        sku: nastyString(64),
        qty: fc.integer({ min: 1, max: 10000 }),
        unit_price_cents: fc.integer({ min: 0, max: 100_000_000_000 }),
      }),
      { minLength: 1, maxLength: 4 },
    ),
    order_id: nastyString(64),
    placed_at: fc
      .date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2200-01-01T00:00:00Z'), noInvalidDate: true })
      .map((d) => d.toISOString()),
    metadata: fc.dictionary(
      nastyString(20),
      fc.oneof(
        nastyString(40),
        fc.integer(),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.boolean(),
        fc.constant(null),
      ),
      { maxKeys: 4 },
    ),
  },
  { requiredKeys: ['customer_id', 'currency', 'items'] },
);

/** One order in five gets an unstorable character (NUL or a lone surrogate) in one of its strings. */
const orderArb: fc.Arbitrary<Order> = fc
  .tuple(
    validOrderArb,
    fc.oneof(
      { weight: 4, arbitrary: fc.constant(null) },
      {
        weight: 1,
        arbitrary: fc.tuple(fc.constantFrom(...UNSTORABLE_CHARS), fc.constantFrom('customer', 'sku', 'metadata')),
      },
    ),
  )
  .map(([o, bad]) => {
    if (!bad) return o;
    const [ch, where] = bad;
    if (where === 'customer') return { ...o, customer_id: `${ch}${o.customer_id}`.slice(0, 64) };
    if (where === 'sku')
      return { ...o, items: o.items.map((i, j) => (j === 0 ? { ...i, sku: `${i.sku.slice(0, 62)}${ch}` } : i)) };
    return { ...o, metadata: { ...o.metadata, [`k${ch}`]: 'v' } };
  });

/** What makes validation reject one of these orders: NUL or a lone surrogate somewhere. */
function unstorable(o: Order): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is exactly what we look for
  return /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(
    JSON.stringify(o).replace(/\\u[0-9a-f]{4}/gi, (m) => String.fromCharCode(Number.parseInt(m.slice(2), 16))),
  );
}

describe('property: schema and COPY round-trip into PostgreSQL', () => {
  let env: TestEnv;
  let pool: Pool;
  let seq = 0;
  before(async () => {
    env = await createTestEnv();
    pool = createPool(env.db.url, { max: 2, applicationName: 'surge-property' });
  });
  after(async () => {
    await pool?.end();
    await env?.cleanup();
  });

  test('canonicalOrderJson (the ingest fast path) writes the same text as canonicalJson for every valid order', () => {
    fc.assert(
      fc.property(validOrderArb, fc.boolean(), (o, shuffle) => {
        // The same order as a client may send it: keys in any order (JSON.parse keeps the sender's order).
        const sent = shuffle
          ? (JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(o).reverse()))) as Order)
          : o;
        assert.equal(canonicalOrderJson(sent), canonicalJson(sent));
      }),
      { numRuns: RUNS * 25 },
    );
  });

  test('validateOrder skips its string check only when it cannot matter: parsed as ingest parses, the verdict is the same', () => {
    fc.assert(
      fc.property(orderArb, fc.boolean(), fc.boolean(), (o, escapeAll, asBatch) => {
        // The body as a client may send it: JSON.stringify escapes NUL and lone surrogates as
        // \u…; a client may also escape any other character.
        let text = JSON.stringify(o);
        if (escapeAll)
          text = text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
        if (asBatch) text = `[${text}]`;
        const parsed = parseJson(new TextEncoder().encode(text));
        assert.ok(parsed.ok);
        const value = asBatch ? (parsed.value as unknown[])[0] : parsed.value;
        assert.deepEqual(validateOrder(value, parsed.escapeFree), validateOrder(value));
        assert.equal(validateOrder(value).ok, !unstorable(o));
      }),
      { numRuns: RUNS * 25 },
    );
  });

  test('surelyValidOrder never accepts what validateOrder refuses, and accepts the usual order', () => {
    const dateLike = fc.oneof(
      fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
      fc.constantFrom(
        '2024-02-29T12:00:00Z',
        '2023-02-29T12:00:00Z',
        '2024-04-31T00:00:00Z',
        '2024-13-01T00:00:00Z',
        '2024-01-01T24:00:00Z',
        '2024-01-01T23:60:00Z',
        '2024-06-30T23:59:60Z',
        '2024-01-01T00:00:00+02:00',
        '2024-01-01t00:00:00z',
        '2024-01-01',
        '+012024-01-01T00:00:00.000Z',
        '0000-01-01T00:00:00Z',
        '0001-01-01T00:00:00Z',
        '2024-01-01T00:00:00.123456Z',
        '2024-01-01T00:00:00.1234567Z',
        '2024-01-01T00:00:00.1234560Z',
        '2024-01-01T00:00:00+15:59',
        '2024-01-01T00:00:00+16:00',
        '2024-01-01\u00a000:00:00Z',
      ),
      fc.string(),
    );
    const mutation = fc.oneof(
      fc.tuple(
        fc.constantFrom('customer_id', 'currency', 'items', 'order_id', 'placed_at', 'metadata', 'extra'),
        fc.anything(),
      ),
      fc.tuple(fc.constant('placed_at'), dateLike),
      fc.tuple(fc.constantFrom('customer_id', 'order_id'), fc.string({ unit: 'binary', maxLength: 80 })),
      fc.tuple(fc.constant('currency'), fc.oneof(fc.string({ maxLength: 4 }), fc.stringMatching(/^[A-Z]{3}$/))),
      fc.tuple(
        fc.constantFrom('sku', 'qty', 'unit_price_cents', 'line-extra'),
        fc.oneof(fc.anything(), fc.double(), fc.integer()),
      ),
      fc.tuple(
        fc.constantFrom('drop-customer_id', 'drop-currency', 'drop-items', 'drop-sku', 'no-items'),
        fc.constant(null),
      ),
    );
    fc.assert(
      fc.property(orderArb, fc.array(mutation, { maxLength: 3 }), (o, mutations) => {
        const body = JSON.parse(JSON.stringify(o)) as Record<string, unknown>;
        const items = body.items as Array<Record<string, unknown>>;
        for (const [what, value] of mutations) {
          if (what === 'sku' || what === 'qty' || what === 'unit_price_cents')
            defined(items[0], 'the first line')[what] = value;
          else if (what === 'line-extra') defined(items[0], 'the first line').extra = value;
          else if (what === 'drop-sku') delete defined(items[0], 'the first line').sku;
          else if (what === 'no-items') body.items = [];
          else if (what.startsWith('drop-')) delete body[what.slice(5)];
          else body[what] = value;
        }
        const text = JSON.stringify(body);
        if (text === undefined) return;
        const parsed: unknown = JSON.parse(text);
        if (surelyValidOrder(parsed, !text.includes('\\u'))) assert.ok(validateOrder(parsed).ok, text);
      }),
      { numRuns: RUNS * 50 },
    );
    fc.assert(
      fc.property(validOrderArb, (o) => {
        const { metadata: _, ...usual } = o;
        const short = [usual.customer_id, usual.order_id ?? 'x', ...usual.items.map((i) => i.sku)].every(
          (s) => s.length <= 64,
        );
        const text = JSON.stringify(usual);
        const escapeFree = !text.includes('\\u');
        assert.equal(surelyValidOrder(JSON.parse(text), escapeFree), short && escapeFree);
      }),
      { numRuns: RUNS * 25 },
    );
  });

  test('decodeEntry gives the verdict of validateOrder and inexactNumbers on the entry’s text, escaped or not', () => {
    const qty = fc.constantFrom(undefined, '1.0', '1e0', '1.00000000000000001', '2.0000000000000000001e0', '1e400');
    fc.assert(
      fc.property(orderArb, fc.boolean(), qty, (o, escapeAll, firstQty) => {
        // An entry written by anything, not only ingest: NUL and lone surrogates arrive as \u…,
        // numbers as any literal (the quick check sees only the double JSON.parse made of it).
        let text = JSON.stringify(o);
        if (escapeAll)
          text = text.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
        if (firstQty !== undefined) text = text.replace(/"qty":\d+/, `"qty":${firstQty}`);
        const decoded = decodeEntry(['v', '1', 'c', 'client', 'k', 'key-1', 'o', text]);
        assert.equal(decoded.ok, validateOrder(JSON.parse(text)).ok && inexactNumbers(text).length === 0, text);
      }),
      { numRuns: RUNS * 25 },
    );
  });

  test('placed_at: accepted exactly when PostgreSQL timestamptz stores the instant sent', async () => {
    let accepted = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(rfc3339Stamp, async (v) => {
        const valid = validateOrder({
          customer_id: 'c',
          currency: 'EUR',
          items: [{ sku: 'a', qty: 1, unit_price_cents: 1 }],
          placed_at: v,
        }).ok;
        let stored: bigint | undefined;
        try {
          const r = await pool.query<{ us: string }>(
            'SELECT (extract(epoch FROM $1::timestamptz) * 1000000)::numeric(30,0)::text AS us',
            [v],
          );
          stored = BigInt(defined(r.rows[0], 'a row').us);
        } catch {
          stored = undefined;
        }
        if (valid) {
          accepted++;
          assert.equal(stored, rfc3339Micros(v), `${JSON.stringify(v)} is accepted, so stored as sent`);
        } else refused++;
      }),
      { numRuns: RUNS * 25 },
    );
    assert.ok(accepted > 0 && refused > 0, `both branches exercised (${accepted} accepted, ${refused} refused)`);
  });

  test('numbers: refused exactly when what is stored (jsonb, from the canonical text) differs from what was sent', async () => {
    let exact = 0;
    let inexact = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(numberLiteral, { minLength: 1, maxLength: 3 }), async (literals) => {
        const text = `{"m":{${literals.map((l, i) => `"n${i}":[${l}]`).join(',')}}}`;
        const refused = inexactNumbers(text).map((e) => e.path);
        const parsed = JSON.parse(text) as { m: Record<string, [number]> };
        for (const [i, l] of literals.entries()) {
          const x = defined(parsed.m[`n${i}`], 'the number')[0];
          // What the stage writes (JSON.stringify; a non-finite double becomes null), against the literal, both as jsonb.
          const same = Number.isFinite(x)
            ? defined(
                (
                  await pool.query<{ same: boolean }>('SELECT $1::jsonb = $2::jsonb AS same', [
                    `[${l}]`,
                    JSON.stringify([x]),
                  ])
                ).rows[0],
                'a row',
              ).same
            : false;
          assert.equal(refused.includes(`/m/n${i}/0`), !same, `${l} is stored as ${JSON.stringify(x)}`);
          if (same) exact++;
          else inexact++;
        }
      }),
      { numRuns: RUNS * 10 },
    );
    assert.ok(exact > 0 && inexact > 0, `both branches exercised (${exact} exact, ${inexact} not)`);
  });

  test('COPY text encoding: specials escaped, \\N only for NULL, one line per row', () => {
    fc.assert(
      fc.property(
        fc.array(fc.option(fc.string({ unit: 'binary' }), { nil: null }), { minLength: 1, maxLength: 6 }),
        (values) => {
          const row = copyRow(values);
          assert.ok(row.endsWith('\n'));
          assert.equal(row.slice(0, -1).includes('\n'), false, 'no raw newline inside a row');
          assert.equal(row.split('\t').length, values.length, 'no raw tab inside a value');
          values.forEach((v) => {
            if (v === null) assert.equal(copyValue(v), '\\N');
            else assert.notEqual(copyValue(v), '\\N');
          });
        },
      ),
      { numRuns: 500 },
    );
  });

  test('validation and entry decoding never throw, on any JSON value or any field list', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 8 }), (v) => {
        validateOrder(v);
        decodeEntry(['v', '1', 'c', 'c1', 'k', 'k1', 'o', JSON.stringify(v) ?? 'null']);
      }),
      { numRuns: 1000 },
    );
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary' }), { maxLength: 12 }), (fields) => {
        const r = decodeEntry(fields);
        assert.equal(typeof r.ok, 'boolean');
      }),
      { numRuns: 1000 },
    );
    // Metadata nested thousands deep (it fits in 64 KiB): a 400, not a stack overflow.
    let deep: unknown = 1;
    for (let i = 0; i < 20_000; i++) deep = { a: deep };
    const r = validateOrder({
      customer_id: 'c',
      currency: 'EUR',
      items: [{ sku: 'a', qty: 1, unit_price_cents: 1 }],
      metadata: deep,
    });
    assert.equal(r.ok, false);
  });

  test('arbitrary orders: rejected by validation (ingest 400) exactly when unstorable; otherwise stored exactly by the real apply path', async () => {
    let stored = 0;
    let rejected = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(orderArb, { minLength: 1, maxLength: 15 }), async (orders) => {
        const entries: TaskEntry[] = [];
        const expected = new Map<string, Order>();
        const base = Date.now();
        for (const o of orders) {
          const valid = validateOrder(JSON.parse(JSON.stringify(o)));
          assert.equal(valid.ok, !unstorable(o), `validation of ${JSON.stringify(o)}`);
          if (!valid.ok) {
            rejected++;
            continue;
          }
          const key = `p-${++seq}`;
          expected.set(key, valid.order);
          entries.push({
            id: `${base}-${seq}`,
            fields: encodeEntry({
              clientId: 'c_prop',
              idempotencyKey: key,
              canonical: canonicalOrderJson(valid.order),
            }),
            deliveries: 1,
          });
        }
        if (entries.length === 0) return;
        const task = { stream: streamKey(env.prefix, 0), entries };
        const outcome = await applyBatch(pool, task, encodeBatch(entries), { retryBudgetMs: 5000 });
        assert.deepEqual(outcome.deadLetters, [], 'no valid order is dead-lettered');
        assert.equal(outcome.stats.inserted, entries.length);
        const rows = await pool.query<{
          idempotency_key: string;
          customer_id: string;
          currency: string;
          order_id: string | null;
          placed_at: Date | null;
          metadata: unknown;
          total_cents: string;
          items: Array<{ sku: string; qty: number; unit_price_cents: string }>;
        }>(
          `SELECT o.idempotency_key, o.customer_id, o.currency, o.order_id, o.placed_at, o.metadata, o.total_cents,
                  (SELECT json_agg(json_build_object('sku', i.sku, 'qty', i.qty, 'unit_price_cents', i.unit_price_cents) ORDER BY i.line) FROM order_items i WHERE i.order_pk = o.id) AS items
             FROM orders o WHERE o.client_id = 'c_prop' AND o.idempotency_key = ANY($1::text[])`,
          [[...expected.keys()]],
        );
        assert.equal(rows.rows.length, expected.size);
        for (const row of rows.rows) {
          const o = defined(expected.get(row.idempotency_key), `the order sent as ${row.idempotency_key}`);
          assert.equal(row.customer_id, o.customer_id);
          assert.equal(row.currency, o.currency);
          assert.equal(row.order_id, o.order_id ?? null);
          assert.equal(row.placed_at?.toISOString() ?? null, o.placed_at ?? null);
          assert.equal(canonicalJson(row.metadata), canonicalJson(o.metadata ?? null));
          assert.deepEqual(
            row.items.map((i) => [i.sku, i.qty, Number(i.unit_price_cents)]),
            o.items.map((i) => [i.sku, i.qty, i.unit_price_cents]),
          );
          assert.equal(
            Number(row.total_cents),
            o.items.reduce((a, i) => a + i.qty * i.unit_price_cents, 0),
          );
          stored++;
        }
      }),
      { numRuns: RUNS },
    );
    assert.ok(stored > 50 && rejected > 0, `both branches exercised (${stored} stored, ${rejected} rejected)`);
  });
});
