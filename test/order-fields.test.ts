// Binds the order fields table (common/order.ts ORDER_FIELD_LIST) to everything that must list
// the same fields: the order schema, the canonical JSON, the SQL that unpacks the staged order
// (insert_orders.sql), the migrated `orders` table, and the staging table's SQL to the worker's
// COPY row. Adding a field to one of them and not the others fails here.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { encodeEntry } from '../common/entry.js';
import {
  canonicalJson,
  canonicalOrderJson,
  ORDER_FIELD_LIST,
  ORDER_SCHEMA,
  type Order,
  validateOrder,
} from '../common/order.js';
import { sqlFile } from '../common/sql.js';
import { encodeBatch, STAGE_COLUMNS } from '../workers/apply.js';
import { createTestDatabase, type TestDatabase } from '../devkit/scratch.js';

/** Every field set (Required: a field added to Order does not compile here until it has a value). */
const FULL_ORDER: Required<Order> = {
  customer_id: 'cust-1',
  currency: 'EUR',
  items: [{ sku: 'A', qty: 2, unit_price_cents: 150 }],
  order_id: 'ord-1',
  placed_at: '2024-05-01T12:00:00Z',
  metadata: { channel: 'web' },
};

const names = ORDER_FIELD_LIST.map((f) => f.name);
const orderColumns = ORDER_FIELD_LIST.map((f) => f.column);
/** The staging columns insert_orders.sql copies to `orders` as they are. */
const entryColumns = ['entry_id', 'received_at', 'client_id', 'idempotency_key'];

/** The identifiers of a comma-separated SQL list, whitespace and newlines dropped. */
function list(text: string): string[] {
  return text.split(',').map((s) => s.trim());
}

function match(text: string, re: RegExp, what: string): string {
  const m = re.exec(text);
  assert.ok(m?.[1] !== undefined, `${what} not found`);
  return m[1];
}

describe('order fields table', () => {
  test('the order schema lists exactly the table’s fields, its required ones required', () => {
    assert.deepEqual(Object.keys(ORDER_SCHEMA.properties), names);
    assert.deepEqual(
      ORDER_SCHEMA.required,
      ORDER_FIELD_LIST.filter((f) => f.required).map((f) => f.name),
    );
    assert.equal(ORDER_SCHEMA.additionalProperties, false);
    assert.deepEqual(Object.keys(FULL_ORDER).sort(), [...names].sort());
    assert.deepEqual(validateOrder(FULL_ORDER), { ok: true, order: FULL_ORDER });
  });

  test('canonicalOrderJson writes every field, as canonicalJson does', () => {
    const text = canonicalOrderJson(FULL_ORDER);
    assert.equal(text, canonicalJson(FULL_ORDER));
    assert.deepEqual(Object.keys(JSON.parse(text) as object), [...names].sort());
    const required = { customer_id: 'c', currency: 'USD', items: FULL_ORDER.items };
    assert.equal(canonicalOrderJson(required), canonicalJson(required));
  });

  test('the staging table and its COPY list the worker’s row columns in order', () => {
    const copy = list(match(sqlFile('apply/copy_stage'), /COPY surge_stage \(([^)]*)\)/, 'copy_stage column list'));
    assert.deepEqual(copy, STAGE_COLUMNS, 'copy_stage.sql = STAGE_COLUMNS');
    const body = match(
      sqlFile('apply/create_stage'),
      /CREATE TEMP TABLE surge_stage_shape \(([\s\S]*?)\);/,
      'create_stage body',
    );
    const created = body
      .split('\n')
      .map((line) => /^\s*([a-z_]+)\s/.exec(line)?.[1])
      .filter((c) => c !== undefined);
    assert.deepEqual(created, STAGE_COLUMNS, 'create_stage.sql declares the COPY columns in the same order');
  });

  test('the insert unpacks every field of the table from the staged order into its column', () => {
    const insert = sqlFile('apply/insert_orders');
    const staged = match(insert, /WITH staged AS \(([\s\S]*?)\n\), inserted AS/, 'the staged CTE');
    for (const field of ORDER_FIELD_LIST)
      assert.ok(
        staged.includes(`${field.sql} AS ${field.column}`),
        `insert_orders.sql reads ${field.name} as \`${field.sql} AS ${field.column}\``,
      );
    const into = list(match(insert, /INSERT INTO orders \(([^)]*)\)/, 'insert_orders column list'));
    const selected = list(
      match(insert, /SELECT DISTINCT ON \([^)]*\)([\s\S]*?)FROM staged/, 'insert_orders select list'),
    );
    assert.equal(into.length, selected.length, 'as many values as columns');
    for (const column of [...entryColumns, ...orderColumns]) {
      const at = into.indexOf(column);
      assert.ok(at >= 0, `insert_orders.sql inserts ${column}`);
      assert.equal(selected[at], column, `insert_orders.sql fills ${column} from the staged column of that name`);
    }
  });

  test('order items: schema fields, canonical writer and the order_items insert agree', () => {
    // itemsJson (common/order.ts) and insert_orders.sql's order_items insert write these by hand:
    // a new item field fails here until both have it.
    const itemSchema = (ORDER_SCHEMA.properties.items as { items: { properties: object } }).items.properties;
    assert.deepEqual(Object.keys(itemSchema).sort(), ['qty', 'sku', 'unit_price_cents']);
    const item = JSON.parse(canonicalOrderJson(FULL_ORDER)).items[0] as object;
    assert.deepEqual(Object.keys(item), Object.keys(itemSchema).sort());
    const insert = sqlFile('apply/insert_orders');
    const columns = list(match(insert, /INSERT INTO order_items \(([^)]*)\)/, 'order_items column list'));
    assert.deepEqual(columns, ['order_pk', 'line', ...Object.keys(itemSchema)]);
    // jsonb_to_recordset reads one column per item field, named as in the JSON.
    const read = list(
      match(insert, /jsonb_to_recordset\(s\.body->'items'\) AS \(([^)]*)\)/, 'the lines’ record definition'),
    ).map((c) => c.split(/\s+/)[0]);
    assert.deepEqual(read, Object.keys(itemSchema));
    const named = list(match(insert, /WITH ORDINALITY AS l\(([^)]*)\)/, 'the lines’ names'));
    assert.deepEqual(named, [...Object.keys(itemSchema), 'line']);
  });

  test('the worker’s COPY row has one value per staging column, the order’s JSON as the entry holds it', () => {
    const canonical = canonicalOrderJson(FULL_ORDER);
    const fields = encodeEntry({ clientId: 'c1', idempotencyKey: 'k1', canonical });
    const batch = encodeBatch([{ id: '1714564800000-0', fields, deliveries: 1 }]);
    assert.deepEqual(batch.deadLetters, []);
    const row = Buffer.from(batch.copy).toString('utf8');
    assert.ok(row.endsWith('\n'));
    const values = row.slice(0, -1).split('\t');
    assert.equal(values.length, STAGE_COLUMNS.length);
    assert.ok(!values.includes('\\N'), `no NULL column: ${row}`);
    assert.equal(values[STAGE_COLUMNS.indexOf('body')], canonical);
  });

  describe('against the migrated database', () => {
    let db: TestDatabase;
    before(async () => {
      db = await createTestDatabase({ migrate: true });
    });
    after(async () => {
      await db?.drop();
    });

    test('the migrations give `orders` every column the insert fills', async () => {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        const r = await client.query<{ column_name: string }>(
          `SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'orders'`,
        );
        const have = new Set(r.rows.map((row) => row.column_name));
        for (const column of [...entryColumns, ...orderColumns])
          assert.ok(have.has(column), `orders.${column} exists (a migration adds it)`);
      } finally {
        await client.end();
      }
    });
  });
});
