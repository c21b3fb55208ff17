// The one invariant checker of the fault suite and the Redis Cluster test (DESIGN § Apply
// semantics). Given what the client was told (LoadClient records) and the PostgreSQL tables:
//   - every key answered 202 is in `orders` exactly once, or in `dead_letters` with a reason (lost = 0);
//   - no order exists whose key never got a 202 (phantoms = 0; the client retries every key
//     until it gets one, so an order written by an ambiguous first attempt is covered);
//   - every stored order is the order that was sent (customer, total, items) — nothing doubled
//     (one row per key, one set of order_items), nothing altered;
//   - stock never negative, and initial − available = units of the applied orders (no double
//     decrement, no decrement for rejected orders);
//   - every committed order is on the outcome streams exactly once, with its status; every dead
//     letter at least once; nothing else;
//   - the workers' surge_orders_applied_total{inserted+rejected} grew by the rows added, when
//     every worker's counters survived (no worker SIGKILLed in the phase); a COMMIT whose reply
//     was lost is counted `duplicate` on its retry, so then rows ≤ inserted+rejected+duplicate.
import type pg from 'pg';
import { canonicalJson } from '../../common/order.js';
import type { KeyRecord } from './load.js';
import { defined } from '../support/defined.js';

export interface CheckInput {
  db: Pick<pg.Pool, 'query'>;
  clientId: string;
  records: ReadonlyMap<string, KeyRecord>;
  /** Stock each stocked SKU started with. */
  initialStock: ReadonlyMap<string, number>;
  /**
   * Growth of inserted+rejected over the workers' counters since `rowsBaseline` rows were in
   * `orders`, and whether it can be exact (false when a worker was SIGKILLed meanwhile: its
   * counts since the last scrape died with it).
   */
  metricsApplied?: { value: number; duplicates: number; exact: boolean; rowsBaseline: number };
  /** This client's entries of the outcome streams (key and status of each), when checked. */
  outcomes?: ReadonlyArray<{ key: string; status: string }>;
}

export interface CheckResult {
  /** Keys answered 202. */
  accepted: number;
  /** Rows in orders for this client. */
  applied: number;
  rejectedOutOfStock: number;
  deadLettered: number;
  /** 202 keys in neither table. */
  lost: string[];
  /** Keys with more than one row, or items that do not match the order sent, or stock taken twice. */
  duplicates: string[];
  /** Orders whose key never got a 202. */
  phantoms: string[];
  /** Orders whose stored content differs from what was sent. */
  altered: string[];
  /** SKUs whose stock went negative or does not match the applied orders. */
  stockErrors: string[];
  /**
   * Outcome streams vs tables: committed orders without exactly one outcome of their status,
   * dead letters without one, outcomes of keys that are in neither table.
   */
  outcomeErrors: string[];
  /** Metrics vs tables: 'equal', 'n/a (…)', or a mismatch description. */
  metrics: string;
  ok: boolean;
}

function total(order: KeyRecord['order']): number {
  return order.items.reduce((a, i) => a + i.qty * i.unit_price_cents, 0);
}

export async function checkInvariants(input: CheckInput): Promise<CheckResult> {
  const { db, clientId, records } = input;
  const orders = await db.query<{
    idempotency_key: string;
    n: string;
    customer_id: string;
    total_cents: string;
    status: string;
    reason: string | null;
    items: string;
    order_id: string | null;
    metadata: unknown;
  }>(
    `SELECT o.idempotency_key, count(*) OVER (PARTITION BY o.idempotency_key) AS n, o.customer_id, o.total_cents, o.status, o.reason,
            o.order_id, o.metadata,
            (SELECT coalesce(json_agg(json_build_array(i.sku, i.qty, i.unit_price_cents) ORDER BY i.line), '[]') FROM order_items i WHERE i.order_pk = o.id)::text AS items
       FROM orders o WHERE o.client_id = $1`,
    [clientId],
  );
  const dead = await db.query<{ idempotency_key: string | null; reason: string }>(
    'SELECT idempotency_key, reason FROM dead_letters WHERE client_id = $1',
    [clientId],
  );
  const deadKeys = new Map<string, string>();
  for (const d of dead.rows) if (d.idempotency_key) deadKeys.set(d.idempotency_key, d.reason);

  const lost: string[] = [];
  const duplicates: string[] = [];
  const phantoms: string[] = [];
  const altered: string[] = [];
  const seen = new Set<string>();
  let rejected = 0;
  const taken = new Map<string, number>();
  for (const row of orders.rows) {
    const rec = records.get(row.idempotency_key);
    if (Number(row.n) > 1 || seen.has(row.idempotency_key)) duplicates.push(row.idempotency_key);
    seen.add(row.idempotency_key);
    if (!rec || rec.acceptedAt === undefined) {
      phantoms.push(row.idempotency_key);
      continue;
    }
    const items = JSON.parse(row.items) as Array<[string, number, string | number]>;
    const sent = rec.order.items.map((i) => [i.sku, i.qty, i.unit_price_cents]);
    if (items.length !== sent.length)
      duplicates.push(`${row.idempotency_key} (${items.length} item rows for ${sent.length} items)`);
    else if (
      JSON.stringify(items.map(([s, q, p]) => [s, q, Number(p)])) !== JSON.stringify(sent) ||
      row.customer_id !== rec.order.customer_id ||
      Number(row.total_cents) !== total(rec.order) ||
      row.order_id !== (rec.order.order_id ?? null) ||
      canonicalJson(row.metadata) !== canonicalJson(rec.order.metadata ?? null)
    ) {
      altered.push(row.idempotency_key);
    }
    if (row.status === 'rejected') rejected++;
    else
      for (const i of rec.order.items)
        if (input.initialStock.has(i.sku)) taken.set(i.sku, (taken.get(i.sku) ?? 0) + i.qty);
  }
  let accepted = 0;
  for (const rec of records.values()) {
    if (rec.acceptedAt === undefined) continue;
    accepted++;
    if (!seen.has(rec.key) && !deadKeys.has(rec.key)) lost.push(rec.key);
  }
  const stockErrors: string[] = [];
  if (input.initialStock.size > 0) {
    const stock = await db.query<{ sku: string; available: string }>(
      'SELECT sku, available FROM inventory WHERE sku = ANY($1::text[])',
      [[...input.initialStock.keys()]],
    );
    for (const s of stock.rows) {
      const available = Number(s.available);
      const expected = defined(input.initialStock.get(s.sku), `initial stock of ${s.sku}`) - (taken.get(s.sku) ?? 0);
      if (available < 0 || available !== expected)
        stockErrors.push(`${s.sku}: available ${available}, expected ${expected}`);
    }
  }
  const outcomeErrors: string[] = [];
  if (input.outcomes) {
    const byKey = new Map<string, string[]>();
    for (const o of input.outcomes) byKey.set(o.key, [...(byKey.get(o.key) ?? []), o.status]);
    for (const row of orders.rows) {
      const got = byKey.get(row.idempotency_key) ?? [];
      if (got.length !== 1 || got[0] !== row.status)
        outcomeErrors.push(`${row.idempotency_key}: ${row.status}, outcomes [${got.join(',')}]`);
    }
    for (const key of deadKeys.keys())
      if (!seen.has(key) && !(byKey.get(key) ?? []).includes('dead_lettered'))
        outcomeErrors.push(`${key}: dead-lettered, outcomes [${(byKey.get(key) ?? []).join(',')}]`);
    for (const key of byKey.keys())
      if (!seen.has(key) && !deadKeys.has(key)) outcomeErrors.push(`${key}: an outcome of no order`);
  }
  let metrics = 'n/a (not scraped)';
  if (input.metricsApplied) {
    const m = input.metricsApplied;
    const rows = (await db.query<{ n: string }>('SELECT count(*) AS n FROM orders')).rows[0]?.n;
    const grown = Number(rows) - m.rowsBaseline;
    if (m.value === grown) metrics = `equal (${m.value})`;
    else if (m.exact && m.value < grown && grown <= m.value + m.duplicates) {
      // A COMMIT whose reply was lost (connection cut, server crash) is retried and then counted
      // as a duplicate: the row exists once, its worker could not know it had inserted it.
      metrics =
        `agree (+${m.value} inserted/rejected, +${grown} rows: ` +
        `${grown - m.value} COMMITs with a lost reply counted as duplicates)`;
    } else if (!m.exact && m.value <= grown)
      metrics = `≤ rows (+${m.value} ≤ +${grown}; a killed worker's last counts are gone)`;
    else metrics = `MISMATCH: metrics +${m.value} (duplicates +${m.duplicates}), rows +${grown}`;
  }
  return {
    accepted,
    applied: orders.rows.length,
    rejectedOutOfStock: rejected,
    deadLettered: deadKeys.size,
    lost,
    duplicates,
    phantoms,
    altered,
    stockErrors,
    outcomeErrors,
    metrics,
    ok:
      lost.length === 0 &&
      duplicates.length === 0 &&
      phantoms.length === 0 &&
      altered.length === 0 &&
      stockErrors.length === 0 &&
      outcomeErrors.length === 0 &&
      !metrics.startsWith('MISMATCH'),
  };
}
