-- order_items → orders integrity, checked per statement instead of per row.
--
-- The row-level foreign key ran one RI query per order line, each taking a KEY SHARE lock on the
-- parent row: a large share of PostgreSQL's time per batch on the apply path. The same rule is
-- kept with statement-level triggers over transition tables — one set-based check per
-- INSERT/UPDATE/COPY — and ON DELETE CASCADE becomes a statement-level delete of the removed
-- orders' lines.
--
-- What the foreign key did and these triggers do not: lock the parent row. A line inserted for an
-- order that another transaction deletes concurrently could be left behind. Surge itself never
-- does that: it inserts an order's lines in the transaction that inserted the order, which no
-- other transaction can see, let alone delete, before it commits.
ALTER TABLE order_items DROP CONSTRAINT order_items_order_pk_fkey;

-- The checks run their query with EXECUTE, planned afresh on each call. PL/pgSQL would otherwise
-- cache the plan made at a session's first call: made while `orders` was small, that plan (a hash
-- anti join over a sequential scan of orders) then scanned the whole table on every batch once it
-- had grown. (008 replaces this with a cached plan that cannot take that shape.)
CREATE FUNCTION surge_order_items_order_exists() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
  orphans boolean;
BEGIN
  EXECUTE 'SELECT EXISTS (SELECT 1 FROM surge_new_items AS n WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.id = n.order_pk))'
    INTO orphans;
  IF orphans THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'order_items.order_pk must reference an existing order',
      TABLE = 'order_items', COLUMN = 'order_pk';
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER order_items_order_exists_insert AFTER INSERT ON order_items
  REFERENCING NEW TABLE AS surge_new_items
  FOR EACH STATEMENT EXECUTE FUNCTION surge_order_items_order_exists();
CREATE TRIGGER order_items_order_exists_update AFTER UPDATE ON order_items
  REFERENCING NEW TABLE AS surge_new_items
  FOR EACH STATEMENT EXECUTE FUNCTION surge_order_items_order_exists();

CREATE FUNCTION surge_orders_delete_items() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  EXECUTE 'DELETE FROM order_items WHERE order_pk IN (SELECT id FROM surge_gone_orders)';
  RETURN NULL;
END $$;

CREATE TRIGGER orders_delete_items AFTER DELETE ON orders
  REFERENCING OLD TABLE AS surge_gone_orders
  FOR EACH STATEMENT EXECUTE FUNCTION surge_orders_delete_items();

CREATE FUNCTION surge_orders_truncate_items() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
  TRUNCATE order_items;
  RETURN NULL;
END $$;

CREATE TRIGGER orders_truncate_items AFTER TRUNCATE ON orders
  FOR EACH STATEMENT EXECUTE FUNCTION surge_orders_truncate_items();
