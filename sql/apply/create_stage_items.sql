-- Once per session: the staging table of the order lines (second COPY), keyed by entry ID.
CREATE TEMP TABLE IF NOT EXISTS surge_stage_items (
  entry_id         text NOT NULL,
  line             smallint NOT NULL,
  sku              text NOT NULL,
  qty              integer NOT NULL,
  unit_price_cents bigint NOT NULL
) ON COMMIT DELETE ROWS
