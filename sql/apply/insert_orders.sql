-- $1 = the shard stream the batch came from.
-- Dedupe inside the batch first (ON CONFLICT cannot touch a row twice): the first entry of a
-- (client, key) in stream order wins. Rows are inserted in (client_id, idempotency_key) order so
-- that two batches waiting on each other's unique-key insertions always wait in the same
-- direction (no deadlock). total_cents is summed here from the staged lines, in bigint. Orders go
-- in as 'applied'; the stock step turns some into 'rejected'. order_items are written only for
-- the orders this statement inserted. Returns the inserted rows.
WITH batch AS (
  SELECT DISTINCT ON (client_id, idempotency_key) *
  FROM surge_stage
  ORDER BY client_id, idempotency_key, seq
), totals AS (
  SELECT entry_id, sum(qty::bigint * unit_price_cents) AS total_cents
  FROM surge_stage_items
  GROUP BY entry_id
), inserted AS (
  INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status,
                      placed_at, metadata, received_at, stream, entry_id)
  SELECT b.client_id, b.idempotency_key, b.order_id, b.customer_id, b.currency, t.total_cents,
         'applied', b.placed_at, b.metadata, b.received_at, $1, b.entry_id
  FROM batch AS b
  JOIN totals AS t ON t.entry_id = b.entry_id
  ORDER BY b.client_id, b.idempotency_key
  ON CONFLICT (client_id, idempotency_key) DO NOTHING
  RETURNING id, entry_id
), items AS (
  INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents)
  SELECT ins.id, s.line, s.sku, s.qty, s.unit_price_cents
  FROM inserted AS ins
  JOIN surge_stage_items AS s ON s.entry_id = ins.entry_id
)
SELECT id, entry_id FROM inserted
