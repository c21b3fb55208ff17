-- The order_items → orders check of 008, one probe of orders' primary key per distinct order
-- instead of one per new line.
--
-- A batch inserts one to a few lines per order, all of them referencing orders the same
-- statement inserted; probing each distinct order_pk once proves the same rule (every new line
-- references an existing order) with about half the probes. The function's settings are 008's:
-- they leave the planner one shape for the probe, an index scan of orders' primary key, whatever
-- the size of `orders` when the plan is cached.
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
  IF EXISTS (
    SELECT 1
    FROM (SELECT DISTINCT n.order_pk FROM surge_new_items AS n) AS n
    WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.id = n.order_pk)
  ) THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'order_items.order_pk must reference an existing order',
      TABLE = 'order_items', COLUMN = 'order_pk';
  END IF;
  RETURN NULL;
END $$;
