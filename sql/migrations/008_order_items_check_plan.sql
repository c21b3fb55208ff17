-- The order_items → orders check of 007, planned once per session instead of once per statement.
--
-- 007 ran its query with EXECUTE, so each COPY into order_items paid a fresh plan: on a small
-- batch that planning was the largest part of the check. The plan is now cached again, and the
-- function's own settings leave the planner one shape to cache whatever the size of `orders`
-- when it is made: a nested-loop anti join probing orders' primary key once per new line. The
-- settings hold only while the function runs. A cached hash join over a sequential scan of
-- `orders` (what 007's comment describes) cannot be chosen.
CREATE OR REPLACE FUNCTION surge_order_items_order_exists() RETURNS trigger LANGUAGE plpgsql
  SET search_path FROM CURRENT
  SET enable_seqscan = off
  SET enable_hashjoin = off
  SET enable_mergejoin = off
  SET enable_nestloop = on
  SET enable_indexscan = on
  SET enable_indexonlyscan = on
AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM surge_new_items AS n WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.id = n.order_pk)) THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'order_items.order_pk must reference an existing order',
      TABLE = 'order_items', COLUMN = 'order_pk';
  END IF;
  RETURN NULL;
END $$;
