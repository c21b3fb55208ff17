// What the load generator sends: deterministic orders (same index → same body, so a duplicate
// submission carries the identical payload and fingerprint) and the idempotency-key scheme that
// lets the report find a run's rows in PostgreSQL and group them by phase.
import type { Order } from '../common/order.js';

export interface WorkloadOptions {
  /** SKUs drawn uniformly for ordinary orders. Default 1000. No inventory row → no stock check. */
  skus: number;
  /** Hot SKUs (flash sale): with `hotFraction` an order buys one of these instead. Default []. */
  hotSkus: readonly string[];
  /** Share of orders that buy a hot SKU (0–1). Default 0. */
  hotFraction: number;
  /** Items per order, 1..maxItems uniformly. Default 3. */
  maxItems: number;
  /** Largest quantity per item line. Default 3. */
  maxQty: number;
  /** Prefix of the SKU names, so runs never share SKUs. */
  skuPrefix: string;
}

export const DEFAULT_WORKLOAD: WorkloadOptions = {
  skus: 1000,
  hotSkus: [],
  hotFraction: 0,
  maxItems: 3,
  maxQty: 3,
  skuPrefix: 'bench',
};

/** mulberry32: a tiny seeded PRNG (not cryptographic; only for reproducible workloads). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function seedOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The order sent under idempotency key `key`: a pure function of the key and the workload. */
export function orderFor(key: string, w: WorkloadOptions): Order {
  const rnd = prng(seedOf(key));
  const hotSku =
    w.hotSkus.length > 0 && rnd() < w.hotFraction ? w.hotSkus[Math.floor(rnd() * w.hotSkus.length)] : undefined;
  if (hotSku !== undefined) {
    // A flash-sale order: one line of one hot SKU, quantity 1–2 (shoppers buy one or two).
    return {
      customer_id: `cust-${Math.floor(rnd() * 1e6)}`,
      currency: 'EUR',
      items: [{ sku: hotSku, qty: 1 + Math.floor(rnd() * 2), unit_price_cents: 4999 }],
    };
  }
  const n = 1 + Math.floor(rnd() * w.maxItems);
  const items = Array.from({ length: n }, (_, line) => ({
    sku: `${w.skuPrefix}-sku-${(Math.floor(rnd() * w.skus) + line) % w.skus}`,
    qty: 1 + Math.floor(rnd() * w.maxQty),
    unit_price_cents: 100 + Math.floor(rnd() * 10_000),
  }));
  // Distinct SKUs per order (a line per SKU), as shops send them.
  const unique = items.filter((item, i) => items.findIndex((x) => x.sku === item.sku) === i);
  return { customer_id: `cust-${Math.floor(rnd() * 1e6)}`, currency: 'EUR', items: unique };
}

/** Idempotency key `<run>-p<phase>-g<generator>-<seq>`; the run prefix finds a run's rows. */
export function orderKey(runKey: string, phase: number, generator: number, seq: number): string {
  return `${runKey}-p${phase}-g${generator}-${seq}`;
}

/** The phase number inside a key made by orderKey, or -1. */
export function phaseOfKey(key: string): number {
  const m = /-p(\d+)-g\d+-\d+$/.exec(key);
  return m ? Number(m[1]) : -1;
}
