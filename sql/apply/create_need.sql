-- Once per session (outside a transaction), beside surge_stage: what the batch's inserted orders
-- need in all of each SKU that has an inventory row (the stock-checked ones), written by
-- insert_orders.sql from the lines it inserts and read by reserve_all.sql in the same
-- transaction, so the lines are neither read back nor sent to the worker. ON COMMIT DELETE ROWS
-- empties it at the end of every batch transaction; `sku` is stored PLAIN so that the table has no
-- TOAST table to empty too (create_stage.sql says why): only SKUs with an inventory row go in,
-- the operator's, far below the 8 KB a PLAIN row holds.
CREATE TEMP TABLE surge_need_shape (
  sku text NOT NULL,
  qty bigint NOT NULL
);
ALTER TABLE surge_need_shape ALTER sku SET STORAGE PLAIN;
CREATE TEMP TABLE surge_need (LIKE surge_need_shape INCLUDING ALL) ON COMMIT DELETE ROWS;
DROP TABLE surge_need_shape
