// Test helpers for the dead-letter tests: dead-letter an entry the way a worker does (XADD to the
// DLQ stream + XACK in one MULTI, plus the dead_letters row), and a minimal synchronous applier
// (one INSERT … ON CONFLICT DO NOTHING per entry, XACK after COMMIT) so the replay tests can apply
// exactly what is in the streams at one moment and count inserted/duplicate. Neither is product
// code: the soak (`surge work`) and the end-to-end test (`startWorker`) use the real workers.
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { dlqKey, GROUP, shardFor, shardOfStream, streamKey } from '../../common/keys.js';
import { decodeEntry, ENTRY_FIELD, encodeEntry, entryField } from '../../common/entry.js';
import { canonicalOrderJson, type Order } from '../../common/order.js';
import { dlqEntryFields, ensureGroups } from '../../common/streams.js';

export interface DeadLetterSpec {
  stream: string;
  entryId: string;
  fields: string[];
  reason: 'undecodable' | 'permanent_error' | 'max_deliveries';
  message: string;
  sqlstate?: string;
  deliveries?: number;
}

/** Dead-letters a delivered (pending) entry: MULTI XADD dlq + XACK, then the row. Returns the row id. */
export async function deadLetterEntry(
  redis: Redis,
  pool: pg.Pool,
  prefix: string,
  spec: DeadLetterSpec,
): Promise<number> {
  const shard = shardOfStream(prefix, spec.stream);
  if (shard === undefined) throw new Error(`not a shard stream: ${spec.stream}`);
  const info = {
    stream: spec.stream,
    entryId: spec.entryId,
    reason: spec.reason,
    message: spec.message,
    sqlstate: spec.sqlstate,
    deliveries: spec.deliveries ?? 1,
  };
  await redis
    .multi()
    .xadd(dlqKey(prefix, shard), '*', ...dlqEntryFields(spec.fields, info))
    .xack(spec.stream, GROUP, spec.entryId)
    .exec();
  const r = await pool.query<{ id: string }>(
    `INSERT INTO dead_letters (client_id, idempotency_key, stream, entry_id, reason, sqlstate, message, payload, deliveries)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (stream, entry_id) DO UPDATE SET deliveries = EXCLUDED.deliveries, last_seen_at = now()
     RETURNING id`,
    [
      entryField(spec.fields, ENTRY_FIELD.client) ?? null,
      entryField(spec.fields, ENTRY_FIELD.key) ?? null,
      spec.stream,
      spec.entryId,
      spec.reason,
      spec.sqlstate ?? null,
      spec.message,
      entryField(spec.fields, ENTRY_FIELD.order) ?? null,
      spec.deliveries ?? 1,
    ],
  );
  return Number(r.rows[0]?.id);
}

export function sampleOrder(customer = 'cust-1'): Order {
  return { customer_id: customer, currency: 'EUR', items: [{ sku: 'SKU-1', qty: 2, unit_price_cents: 1250 }] };
}

/**
 * Enqueues an order to its shard, delivers it to a helper consumer and dead-letters it. The
 * shard's earlier entries must all have been delivered already (the helper reads `>`).
 */
export async function createDeadLetter(
  redis: Redis,
  pool: pg.Pool,
  prefix: string,
  shards: number,
  o: {
    client: string;
    key: string;
    order?: Order;
    fields?: string[];
    reason?: DeadLetterSpec['reason'];
    sqlstate?: string;
    message?: string;
    deliveries?: number;
  },
): Promise<{ id: number; stream: string; entryId: string }> {
  await ensureGroups(redis, prefix, shards);
  const stream = streamKey(prefix, shardFor(o.client, o.key, shards));
  const fields =
    o.fields ??
    encodeEntry({ clientId: o.client, idempotencyKey: o.key, canonical: canonicalOrderJson(o.order ?? sampleOrder()) });
  const entryId = (await redis.xadd(stream, '*', ...fields)) as string;
  const read = (await redis.xreadgroup('GROUP', GROUP, 'test-helper', 'COUNT', 1, 'STREAMS', stream, '>')) as Array<
    [string, Array<[string, string[]]>]
  >;
  const got = read?.[0]?.[1]?.[0]?.[0];
  if (got !== entryId) throw new Error(`helper read ${got}, expected ${entryId}: earlier entries were not delivered`);
  const id = await deadLetterEntry(redis, pool, prefix, {
    stream,
    entryId,
    fields,
    reason: o.reason ?? 'permanent_error',
    message: o.message ?? 'new row for relation "orders" violates check constraint',
    sqlstate: o.sqlstate ?? '23514',
    deliveries: o.deliveries ?? 1,
  });
  return { id, stream, entryId };
}

export interface ApplyTally {
  inserted: number;
  duplicate: number;
  deadLettered: number;
}

/**
 * Minimal applier: reads every shard (`>`, no block) as consumer `test-applier`, inserts each
 * decodable entry with ON CONFLICT (client_id, idempotency_key) DO NOTHING, dead-letters
 * constraint violations (SQLSTATE class 23) and undecodable entries, and acks after the insert.
 */
export async function applyAvailable(redis: Redis, pool: pg.Pool, prefix: string, shards: number): Promise<ApplyTally> {
  const tally: ApplyTally = { inserted: 0, duplicate: 0, deadLettered: 0 };
  for (let shard = 0; shard < shards; shard++) {
    const stream = streamKey(prefix, shard);
    for (;;) {
      const read = (await redis.xreadgroup(
        'GROUP',
        GROUP,
        'test-applier',
        'COUNT',
        100,
        'STREAMS',
        stream,
        '>',
      )) as Array<[string, Array<[string, string[]]>]> | null;
      const entries = read?.[0]?.[1] ?? [];
      if (entries.length === 0) break;
      for (const [entryId, fields] of entries) {
        const d = decodeEntry(fields);
        if (!d.ok) {
          await deadLetterEntry(redis, pool, prefix, {
            stream,
            entryId,
            fields,
            reason: 'undecodable',
            message: d.reason,
          });
          tally.deadLettered++;
          continue;
        }
        const { clientId, idempotencyKey, order } = d.entry;
        const total = order.items.reduce((n, i) => n + i.qty * i.unit_price_cents, 0);
        try {
          const r = await pool.query(
            `INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status, received_at, stream, entry_id)
             VALUES ($1, $2, $3, $4, $5, $6, 'applied', to_timestamp($7::double precision / 1000), $8, $9)
             ON CONFLICT (client_id, idempotency_key) DO NOTHING`,
            [
              clientId,
              idempotencyKey,
              order.order_id ?? null,
              order.customer_id,
              order.currency,
              total,
              Number(entryId.split('-')[0]),
              stream,
              entryId,
            ],
          );
          if (r.rowCount === 1) tally.inserted++;
          else tally.duplicate++;
          await redis.xack(stream, GROUP, entryId);
        } catch (e) {
          const code = (e as { code?: string }).code ?? '';
          if (!code.startsWith('23')) throw e;
          await deadLetterEntry(redis, pool, prefix, {
            stream,
            entryId,
            fields,
            reason: 'permanent_error',
            message: (e as Error).message,
            sqlstate: code,
          });
          tally.deadLettered++;
        }
      }
    }
  }
  return tally;
}
