import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ISO_4217_CODES, ISO_4217_PUBLISHED } from '../common/iso-4217.js';
import { shardFor, streamKey } from '../common/keys.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { decodeEntry, encodeEntry } from '../common/entry.js';
import {
  canonicalJson,
  canonicalOrderJson,
  idempotencyKeyProblem,
  orderFingerprint,
  validateOrder,
} from '../common/order.js';

const good = { customer_id: 'cust-1', currency: 'EUR', items: [{ sku: 'A', qty: 1, unit_price_cents: 100 }] };

describe('order schema', () => {
  test('accepts a valid order', () => {
    assert.deepEqual(validateOrder(good), { ok: true, order: good });
  });

  test('lists every failing field path', () => {
    const r = validateOrder({
      customer_id: 5,
      currency: 'eur',
      items: [{ sku: '', qty: -1, unit_price_cents: 1.5 }],
      extra: 1,
    });
    assert.equal(r.ok, false);
    const paths = r.ok ? [] : r.errors.map((e) => e.path).sort();
    assert.deepEqual(paths, [
      '/currency',
      '/customer_id',
      '/extra',
      '/items/0/qty',
      '/items/0/sku',
      '/items/0/unit_price_cents',
    ]);
  });

  test('rejects 101 items, NUL and lone surrogates, oversized metadata', () => {
    const items = Array.from({ length: 101 }, () => ({ sku: 'A', qty: 1, unit_price_cents: 1 }));
    assert.equal(validateOrder({ ...good, items }).ok, false);
    const nul = validateOrder({ ...good, customer_id: 'a\u0000b' });
    assert.ok(!nul.ok && nul.errors[0]?.path === '/customer_id');
    const lone = validateOrder({ ...good, metadata: { note: 'x\ud800y' } });
    assert.ok(!lone.ok && lone.errors[0]?.path === '/metadata/note');
    assert.equal(validateOrder({ ...good, metadata: { note: 'emoji 🎉 ok' } }).ok, true);
    assert.equal(validateOrder({ ...good, metadata: { big: 'x'.repeat(5000) } }).ok, false);
  });

  test('unstorable strings deep in metadata get their exact JSON pointer; nesting is bounded', () => {
    const r = validateOrder({ ...good, metadata: { 'a/b': [{ 'c~d': 'x\u0000' }], ok: 'fine', 'bad\u0000key': 1 } });
    assert.deepEqual(r.ok ? [] : r.errors, [
      { path: '/metadata/a~1b/0/c~0d', message: 'contains NUL or invalid UTF-16/UTF-8, which cannot be stored' },
      { path: '/metadata/bad\u0000key', message: 'field name contains NUL or invalid UTF-16' },
    ]);
    let deep: unknown = 'leaf';
    for (let i = 0; i < 32; i++) deep = { n: deep };
    // The body is level 0; metadata and its 31 nested objects are levels 1–32.
    assert.equal(
      validateOrder({ ...good, metadata: deep as Record<string, unknown> }).ok,
      true,
      '32 levels are allowed',
    );
    const tooDeep = validateOrder({ ...good, metadata: { n: deep } as Record<string, unknown> });
    assert.ok(
      !tooDeep.ok &&
        tooDeep.errors.some(
          (e) => e.message.startsWith('is nested too deeply') && e.path === `/metadata${'/n'.repeat(32)}`,
        ),
    );
  });

  test('placed_at: what timestamptz stores as sent is accepted; the rest names the field and why', () => {
    const at = (placed_at: string) => {
      const r = validateOrder({ ...good, placed_at });
      return r.ok ? 'ok' : r.errors.map((e) => `${e.path} ${e.message}`).join('; ');
    };
    for (const v of [
      '0001-01-01T00:00:00Z',
      '9999-12-31T23:59:59.999999-15:59',
      '2024-01-01t00:00:00z',
      '2024-01-01 00:00:00+05:30',
      '2024-01-01T00:00:00+0530',
      '2024-01-01T00:00:00.1234560000Z',
    ])
      assert.equal(at(v), 'ok', v);
    assert.match(at('0000-01-01T00:00:00Z'), /^\/placed_at .*years 0001–9999/);
    assert.match(at('2024-01-01T00:00:00+23:59'), /^\/placed_at .*within ±15:59/);
    assert.match(at('2024-01-01T00:00:00-16:00'), /^\/placed_at .*within ±15:59/);
    assert.match(at('2016-12-31T23:59:60Z'), /^\/placed_at .*leap second/);
    assert.match(at('2016-12-31T23:59:60.5Z'), /^\/placed_at .*leap second/);
    assert.match(at('2024-01-01T00:00:00.1234567Z'), /^\/placed_at .*microseconds/);
    assert.match(at('2024-01-01\u00a000:00:00Z'), /^\/placed_at .*separate date and time/);
    assert.match(at('2024-01-01\t00:00:00Z'), /^\/placed_at .*separate date and time/);
    assert.equal(at('2024-01-01T00:00:00'), '/placed_at must match format "date-time"', 'one error per field');
  });

  test('currency: an ISO 4217 code of the committed list, whose publication docs/ingest.md names', () => {
    const currency = (c: string) => {
      const r = validateOrder({ ...good, currency: c });
      return r.ok ? 'ok' : r.errors.map((e) => `${e.path} ${e.message}`).join('; ');
    };
    for (const c of ['EUR', 'USD', 'JPY', 'XCG', 'ZWG', 'XXX']) assert.equal(currency(c), 'ok', c);
    for (const c of ['ZZZ', 'ABC', 'eur', 'EURO', 'HRK', ''])
      assert.equal(
        currency(c),
        `/currency must be an ISO 4217 alphabetic code (List One published ${ISO_4217_PUBLISHED})`,
      );
    assert.ok(ISO_4217_CODES.every((c) => /^[A-Z]{3}$/.test(c)));
    assert.deepEqual([...ISO_4217_CODES].sort(), [...new Set(ISO_4217_CODES)], 'sorted, each once');
    assert.ok(ISO_4217_CODES.length > 170);
    const doc = readFileSync(join(PACKAGE_ROOT, 'docs', 'ingest.md'), 'utf8');
    assert.ok(doc.includes(`published ${ISO_4217_PUBLISHED}`), 'docs/ingest.md names the list’s publication');
  });

  test('idempotency keys: 1–255 printable ASCII', () => {
    assert.equal(idempotencyKeyProblem('abc-123'), undefined);
    assert.match(idempotencyKeyProblem(undefined) ?? '', /required/);
    assert.match(idempotencyKeyProblem('x'.repeat(256)) ?? '', /at most 255/);
    assert.match(idempotencyKeyProblem('clé') ?? '', /printable ASCII/);
  });

  test('fingerprint ignores key order, not content', () => {
    const reordered = { items: [{ unit_price_cents: 100, qty: 1, sku: 'A' }], currency: 'EUR', customer_id: 'cust-1' };
    assert.equal(canonicalJson(reordered), canonicalJson(good));
    assert.equal(orderFingerprint(reordered), orderFingerprint(good));
    assert.notEqual(orderFingerprint({ ...good, currency: 'USD' }), orderFingerprint(good));
  });

  test('entries round-trip and bad entries decode to a reason', () => {
    const d = decodeEntry(encodeEntry({ clientId: 'c_1', idempotencyKey: 'k1', canonical: canonicalOrderJson(good) }));
    assert.deepEqual(d, { ok: true, entry: { clientId: 'c_1', idempotencyKey: 'k1', order: good } });
    assert.equal(decodeEntry(['v', '1', 'c', 'c_1', 'k', 'k1', 'o', '{not json']).ok, false);
    assert.equal(decodeEntry(['v', '9', 'c', 'c_1', 'k', 'k1', 'o', '{}']).ok, false);
    assert.equal(decodeEntry(null).ok, false);
  });
});

describe('keys', () => {
  test('stream keys carry the shard hash tag; shards are stable and spread', () => {
    assert.equal(streamKey('surge', 3), 'surge:{s3}:orders');
    assert.equal(shardFor('c_1', 'key-1', 4), shardFor('c_1', 'key-1', 4));
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 4000; i++) counts[shardFor('c_1', `key-${i}`, 4)]! += 1;
    for (const n of counts) assert.ok(n > 800 && n < 1200, `spread ${counts}`);
  });
});
