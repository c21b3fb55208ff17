-- Once per session (outside a transaction): the staging table the COPY fills, one row per stream
-- entry; `seq` is the entry's position in the batch (stream order); total_cents is summed by the
-- worker from the validated lines; the item_* arrays are the order's lines, one array per
-- order_items column, in line order. ON COMMIT DELETE ROWS empties it at the end of every batch
-- transaction (a rollback discards its rows anyway).
CREATE TEMP TABLE IF NOT EXISTS surge_stage (
  seq                   integer NOT NULL,
  entry_id              text NOT NULL,
  received_at           timestamptz NOT NULL,
  client_id             text NOT NULL,
  idempotency_key       text NOT NULL,
  order_id              text,
  customer_id           text NOT NULL,
  currency              text NOT NULL,
  total_cents           bigint NOT NULL,
  placed_at             timestamptz,
  metadata              jsonb,
  item_sku              text[] NOT NULL,
  item_qty              integer[] NOT NULL,
  item_unit_price_cents bigint[] NOT NULL
) ON COMMIT DELETE ROWS
