-- $1 = the shard stream the batch came from.
-- Dedupe inside the batch first (ON CONFLICT cannot touch a row twice): the first entry of a
-- (client, key) in stream order wins. Rows are inserted in (client_id, idempotency_key) order so
-- that two batches waiting on each other's unique-key insertions always wait in the same
-- direction (no deadlock). Orders go in as 'applied'; the stock step turns some into 'rejected'.
-- order_items are written only for the orders this statement inserted. Returns the inserted rows.
WITH batch AS (
  SELECT DISTINCT ON (client_id, idempotency_key) *
  FROM surge_stage
  ORDER BY client_id, idempotency_key, seq
), inserted AS (
  INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status,
                      placed_at, metadata, received_at, stream, entry_id)
  SELECT b.client_id, b.idempotency_key, b.order_id, b.customer_id, b.currency,
         (SELECT sum((i ->> 'qty')::bigint * (i ->> 'unit_price_cents')::bigint) FROM jsonb_array_elements(b.items) AS i),
         'applied', b.placed_at, b.metadata, b.received_at, $1, b.entry_id
  FROM batch AS b
  ORDER BY b.client_id, b.idempotency_key
  ON CONFLICT (client_id, idempotency_key) DO NOTHING
  RETURNING id, entry_id
), items AS (
  INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents)
  SELECT ins.id, e.line::smallint, e.item ->> 'sku', (e.item ->> 'qty')::integer, (e.item ->> 'unit_price_cents')::bigint
  FROM inserted AS ins
  JOIN surge_stage AS s ON s.entry_id = ins.entry_id
  CROSS JOIN LATERAL jsonb_array_elements(s.items) WITH ORDINALITY AS e(item, line)
)
SELECT id, entry_id FROM inserted
