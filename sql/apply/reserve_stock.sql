-- $1 = SKUs, $2 = units to take from each (computed by the worker under the row locks of
-- reserve_all.sql). The CHECK (available >= 0) is the last line of defence.
UPDATE inventory AS i
SET available = i.available - d.qty, updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS d(sku, qty)
WHERE i.sku = d.sku
