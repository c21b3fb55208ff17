-- $1 = the shard stream the batch came from.
-- Dedupe inside the batch (ON CONFLICT cannot touch a row twice): the first entry of a
-- (client, key) in stream order wins. The same sort puts the rows in (client_id, idempotency_key)
-- order, so two batches waiting on each other's unique-key insertions always wait in the same
-- direction (no deadlock). Orders go in as 'applied'; the stock step turns some into 'rejected'.
-- The inserted orders' lines go into order_items in the same statement, from the staged arrays.
-- Returns the inserted rows; their applied_at goes to the outcome streams (workers/outcomes.ts).
WITH inserted AS (
  INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status,
                      placed_at, metadata, received_at, stream, entry_id)
  SELECT DISTINCT ON (client_id, idempotency_key)
         client_id, idempotency_key, order_id, customer_id, currency, total_cents,
         'applied', placed_at, metadata, received_at, $1, entry_id
  FROM surge_stage
  ORDER BY client_id, idempotency_key, seq
  ON CONFLICT (client_id, idempotency_key) DO NOTHING
  RETURNING id, entry_id, applied_at
), lines AS (
  INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents)
  SELECT i.id, l.line, l.sku, l.qty, l.unit_price_cents
  FROM inserted AS i
  JOIN surge_stage AS s ON s.entry_id = i.entry_id
  CROSS JOIN LATERAL unnest(s.item_sku, s.item_qty, s.item_unit_price_cents)
    WITH ORDINALITY AS l(sku, qty, unit_price_cents, line)
)
SELECT id, entry_id, applied_at FROM inserted
