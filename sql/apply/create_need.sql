-- Once per session (outside a transaction), beside surge_stage: what the batch's inserted orders
-- need in all of each SKU that has an inventory row (the stock-checked ones), written by insert_orders.sql from the lines it inserts and read by
-- reserve_all.sql in the same transaction, so the lines are neither read back nor sent to the
-- worker. ON COMMIT DELETE ROWS empties it at the end of every batch transaction.
CREATE TEMP TABLE IF NOT EXISTS surge_need (
  sku text NOT NULL,
  qty bigint NOT NULL
) ON COMMIT DELETE ROWS
