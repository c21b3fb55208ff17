-- Once per session (outside a transaction): the staging table the COPY fills, one row per stream
-- entry; `seq` is the entry's position in the batch (stream order); `body` is the entry's order as
-- ingest wrote it (its canonical JSON), unpacked by insert_orders.sql. ON COMMIT DELETE ROWS
-- empties it at the end of every batch transaction (a rollback discards its rows anyway).
CREATE TEMP TABLE IF NOT EXISTS surge_stage (
  seq             integer NOT NULL,
  entry_id        text NOT NULL,
  received_at     timestamptz NOT NULL,
  client_id       text NOT NULL,
  idempotency_key text NOT NULL,
  body            jsonb NOT NULL
) ON COMMIT DELETE ROWS
