-- insert_orders.sql without its ON CONFLICT clause, line for line otherwise
-- (test/order-fields.test.ts holds the two equal): the apply step's first try of a batch whose
-- entries are all first deliveries. Their keys are almost always new, and the arbiter's check
-- and speculative insertion of each order cost PostgreSQL more than the rare failure: a key
-- already in `orders` (committed before, or by a concurrent batch this one waited for) fails the
-- statement with 23505 on orders_client_key, and the worker applies the batch again with
-- insert_orders.sql, which skips it. The unique key stays the final word either way.
WITH staged AS (
  SELECT seq, entry_id, received_at, client_id, idempotency_key,
         body->>'order_id' AS order_id,
         body->>'customer_id' AS customer_id,
         body->>'currency' AS currency,
         (SELECT sum(l.qty * l.unit_price_cents) FROM jsonb_to_recordset(body->'items') AS l(qty bigint, unit_price_cents bigint)) AS total_cents,
         (body->>'placed_at')::timestamptz AS placed_at,
         body->'metadata' AS metadata
  FROM surge_stage
), inserted AS (
  INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status,
                      placed_at, metadata, received_at, stream, entry_id)
  SELECT DISTINCT ON (client_id, idempotency_key)
         client_id, idempotency_key, order_id, customer_id, currency, total_cents,
         'applied', placed_at, metadata, received_at, $1, entry_id
  FROM staged
  ORDER BY client_id, idempotency_key, seq
  RETURNING id, entry_id, applied_at
), lines AS (
  INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents)
  SELECT i.id, l.line, l.sku, l.qty, l.unit_price_cents
  FROM inserted AS i
  JOIN surge_stage AS s ON s.entry_id = i.entry_id
  CROSS JOIN LATERAL ROWS FROM (
    jsonb_to_recordset(s.body->'items') AS (sku text, qty integer, unit_price_cents bigint)
  ) WITH ORDINALITY AS l(sku, qty, unit_price_cents, line)
  RETURNING sku, qty
), need AS (
  INSERT INTO surge_need (sku, qty)
  SELECT g.sku, g.qty
  FROM (SELECT l.sku, sum(l.qty) AS qty FROM lines AS l GROUP BY l.sku) AS g
  WHERE EXISTS (SELECT 1 FROM inventory AS i WHERE i.sku = g.sku)
)
SELECT id, entry_id, applied_at::text AS applied_at FROM inserted
