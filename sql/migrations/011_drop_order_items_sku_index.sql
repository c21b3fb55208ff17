-- order_items loses its index on `sku`: no statement of Surge reads lines by SKU (the stock step
-- finds an order's lines by order_pk, the primary key), and keeping it cost every line a B-tree
-- insert on a text key under the database's collation, the dearest index entry a batch writes.
-- An operator who looks lines up by SKU can build it again beside the running system:
-- CREATE INDEX CONCURRENTLY order_items_sku ON order_items (sku).
-- IF EXISTS: on a large live table drop it first without blocking writes
-- (DROP INDEX CONCURRENTLY order_items_sku); this is then a no-op.
DROP INDEX IF EXISTS order_items_sku;
