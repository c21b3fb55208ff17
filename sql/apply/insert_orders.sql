-- $1 = the shard stream the batch came from.
-- `staged` unpacks each staged order into the `orders` columns: one `<expression> AS <column>` per
-- field of common/order.ts's fields table (test/order-fields.test.ts holds them equal); the total
-- is the sum of the lines. Ingest validated the order; what PostgreSQL refuses here (a type,
-- a NOT NULL, a CHECK) is bisected and dead-lettered by the worker.
-- Dedupe inside the batch (ON CONFLICT cannot touch a row twice): the first entry of a
-- (client, key) in stream order wins. The same sort puts the rows in (client_id, idempotency_key)
-- order, so two batches waiting on each other's unique-key insertions always wait in the same
-- direction (no deadlock). Orders go in as 'applied'; the stock step turns some into 'rejected'.
-- The inserted orders' lines go into order_items in the same statement, in line order, and their
-- units per SKU into surge_need for the stock step (reserve_all.sql) — only the SKUs that have an
-- inventory row, the ones the stock step locks: most SKUs of a batch are usually not
-- stock-checked, and writing and reading them back was a large part of the step's cost. The
-- row's existence is read without a lock; one added to inventory while the batch runs may or may
-- not be checked for it, as it could also be before. Takes no lock but the unique-key
-- insertions' (stock rows are locked later, in sku order, by reserve_all.sql).
-- A batch of first deliveries is tried first without the ON CONFLICT line (the worker leaves that
-- one line out: workers/apply.ts insertWithoutArbiter); a key already taken then fails the
-- statement with 23505 and the batch goes again with it.
-- Returns the inserted rows; their applied_at (as text: the worker only republishes it) goes to
-- the outcome streams (workers/outcomes.ts). `stocked` (the same on every row) says whether any
-- line was of a stock-checked SKU: when none was, the worker skips the stock step.
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
  ON CONFLICT (client_id, idempotency_key) DO NOTHING
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
  RETURNING 1
)
SELECT id, entry_id, applied_at::text AS applied_at, EXISTS (SELECT 1 FROM need) AS stocked FROM inserted
