-- $1 = every SKU of the batch's inserted orders, $2 = the units those orders need of each in all
-- (same order as $1). Locks: the inventory rows that exist, FOR UPDATE, in sku order (the
-- `locked` CTE is read whole before `taken` runs, and `taken` touches only rows it locked), so
-- concurrent batches queue on hot SKUs instead of deadlocking.
-- When every locked SKU has stock for the whole batch, every order fits whatever the order it is
-- served in: the stock is taken here, `reserved` is true. Otherwise nothing changes, `reserved` is
-- false, and the worker serves the orders in stream order from the returned quantities under
-- these same locks (reserve_stock.sql, reject_orders.sql). No row: no SKU is stock-checked.
WITH need AS (
  SELECT d.sku, d.qty FROM unnest($1::text[], $2::bigint[]) AS d(sku, qty)
), locked AS MATERIALIZED (
  SELECT i.sku, i.available
  FROM inventory AS i
  WHERE i.sku = ANY($1::text[])
  ORDER BY i.sku
  FOR UPDATE
), fits AS MATERIALIZED (
  SELECT coalesce(bool_and(l.available >= n.qty), true) AS ok FROM locked AS l JOIN need AS n ON n.sku = l.sku
), taken AS (
  UPDATE inventory AS i
  SET available = i.available - n.qty, updated_at = now()
  FROM need AS n
  WHERE i.sku = n.sku AND (SELECT ok FROM fits)
)
SELECT l.sku, l.available, f.ok AS reserved FROM locked AS l CROSS JOIN fits AS f
