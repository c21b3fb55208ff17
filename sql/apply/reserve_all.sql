-- No parameter: surge_need holds what the orders this transaction inserted need of each SKU
-- that had an inventory row (insert_orders.sql wrote it from their lines).
-- Locks: the inventory rows of those SKUs that exist, FOR UPDATE, in sku order (the `locked` CTE
-- is read whole before `taken` runs, and `taken` touches only rows it locked), so concurrent
-- batches queue on hot SKUs instead of deadlocking.
-- When every locked SKU has stock for the whole batch, every order fits whatever the order it is
-- served in: the stock is taken here, `reserved` is true. Otherwise nothing changes, `reserved` is
-- false, and the worker serves the orders in stream order under these same locks
-- (order_needs.sql, reserve_stock.sql, reject_orders.sql). No row: no SKU is stock-checked.
WITH need AS MATERIALIZED (
  SELECT n.sku, n.qty FROM surge_need AS n
), locked AS MATERIALIZED (
  SELECT i.sku, i.available
  FROM inventory AS i
  WHERE i.sku IN (SELECT n.sku FROM need AS n)
  ORDER BY i.sku
  FOR UPDATE OF i
), fits AS MATERIALIZED (
  SELECT coalesce(bool_and(l.available >= n.qty), true) AS ok FROM locked AS l JOIN need AS n ON n.sku = l.sku
), taken AS (
  UPDATE inventory AS i
  SET available = i.available - n.qty, updated_at = now()
  FROM need AS n
  WHERE i.sku = n.sku AND (SELECT ok FROM fits)
)
SELECT l.sku, l.available, f.ok AS reserved FROM locked AS l CROSS JOIN fits AS f
