// Binds the order fields table (common/order.ts ORDER_FIELD_LIST) to everything that must list
// the same fields: the order schema, the canonical JSON, the staging table's SQL (create, COPY,
// insert), the migrated `orders` table and the worker's COPY row. Adding a field to one of them
// and not the others fails here.
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
import { encodeBatch, STAGE_ENTRY_COLUMNS, STAGE_ITEM_COLUMNS } from '../workers/apply.js';
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
const stageColumns = [...STAGE_ENTRY_COLUMNS, ...orderColumns, ...STAGE_ITEM_COLUMNS];

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

  test('the staging table, its COPY and the insert list the table’s columns in order', () => {
    const copy = list(match(sqlFile('apply/copy_stage'), /COPY surge_stage \(([^)]*)\)/, 'copy_stage column list'));
    assert.deepEqual(copy, stageColumns, 'copy_stage.sql = STAGE_ENTRY_COLUMNS + the fields table’s columns + lines');
    const body = match(
      sqlFile('apply/create_stage'),
      /CREATE TEMP TABLE IF NOT EXISTS surge_stage \(([\s\S]*)\) ON COMMIT/,
      'create_stage body',
    );
    const created = body
      .split('\n')
      .map((line) => /^\s*([a-z_]+)\s/.exec(line)?.[1])
      .filter((c) => c !== undefined);
    assert.deepEqual(created, stageColumns, 'create_stage.sql declares the COPY columns in the same order');
    const insert = sqlFile('apply/insert_orders');
    const into = list(match(insert, /INSERT INTO orders \(([^)]*)\)/, 'insert_orders column list'));
    const selected = list(
      match(insert, /SELECT DISTINCT ON \([^)]*\)([\s\S]*?)FROM surge_stage/, 'insert_orders select list'),
    );
    assert.equal(into.length, selected.length, 'as many values as columns');
    for (const column of [...STAGE_ENTRY_COLUMNS, ...orderColumns].filter((c) => c !== 'seq')) {
      const at = into.indexOf(column);
      assert.ok(at >= 0, `insert_orders.sql inserts ${column}`);
      assert.equal(selected[at], column, `insert_orders.sql fills ${column} from the staging column of that name`);
    }
  });

  test('order items: schema fields, canonical writer and order_items COPY agree', () => {
    // itemsJson (common/order.ts), encodeBatch's item arrays and insert_orders.sql's order_items
    // insert write these by hand: a new item field fails here until all three have it.
    const itemSchema = (ORDER_SCHEMA.properties.items as { items: { properties: object } }).items.properties;
    assert.deepEqual(Object.keys(itemSchema).sort(), ['qty', 'sku', 'unit_price_cents']);
    const item = JSON.parse(canonicalOrderJson(FULL_ORDER)).items[0] as object;
    assert.deepEqual(Object.keys(item), Object.keys(itemSchema).sort());
    const insert = sqlFile('apply/insert_orders');
    const columns = list(match(insert, /INSERT INTO order_items \(([^)]*)\)/, 'order_items column list'));
    assert.deepEqual(columns, ['order_pk', 'line', ...Object.keys(itemSchema)]);
    // One staged array per item field, unnested in the same order.
    assert.deepEqual(
      STAGE_ITEM_COLUMNS,
      Object.keys(itemSchema).map((k) => `item_${k}`),
    );
    const unnested = list(match(insert, /unnest\(([^)]*)\)/, 'unnest list'));
    assert.deepEqual(
      unnested,
      STAGE_ITEM_COLUMNS.map((c) => `s.${c}`),
    );
    const named = list(match(insert, /WITH ORDINALITY AS l\(([^)]*)\)/, 'unnest names'));
    assert.deepEqual(named, [...Object.keys(itemSchema), 'line']);
  });

  test('the worker’s COPY row has one value per staging column, every one set for a full order', () => {
    const fields = encodeEntry({ clientId: 'c1', idempotencyKey: 'k1', canonical: canonicalOrderJson(FULL_ORDER) });
    const batch = encodeBatch([{ id: '1714564800000-0', fields, deliveries: 1 }]);
    assert.deepEqual(batch.deadLetters, []);
    const row = Buffer.from(batch.copy).toString('utf8');
    assert.ok(row.endsWith('\n'));
    const values = row.slice(0, -1).split('\t');
    assert.equal(values.length, stageColumns.length);
    assert.ok(!values.includes('\\N'), `no NULL column for a full order: ${row}`);
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
        for (const column of [...STAGE_ENTRY_COLUMNS, ...orderColumns].filter((c) => c !== 'seq'))
          assert.ok(have.has(column), `orders.${column} exists (a migration adds it)`);
      } finally {
        await client.end();
      }
    });
  });
});
