-- Once per session (outside a transaction): the staging table the COPY fills, one row per stream
-- entry; `seq` is the entry's position in the batch (stream order); `body` is the entry's order as
-- ingest wrote it (its canonical JSON), unpacked by insert_orders.sql. ON COMMIT DELETE ROWS
-- empties it at the end of every batch transaction (a rollback discards its rows anyway).
-- Its columns are stored PLAIN, so it has no TOAST table: PostgreSQL empties every ON COMMIT
-- DELETE ROWS table of the session at each commit, and a TOAST table and its index are most of
-- that cost. A row PLAIN cannot hold (over 8160 bytes: a large order) fails the COPY with 54000;
-- that batch goes to surge_stage_wide instead (create_stage_wide.sql). PostgreSQL 15 takes no
-- STORAGE in CREATE TABLE, hence the shape table copied with its storage.
CREATE TEMP TABLE surge_stage_shape (
  seq             integer NOT NULL,
  entry_id        text NOT NULL,
  received_at     timestamptz NOT NULL,
  client_id       text NOT NULL,
  idempotency_key text NOT NULL,
  body            jsonb NOT NULL
);
ALTER TABLE surge_stage_shape
  ALTER entry_id SET STORAGE PLAIN,
  ALTER client_id SET STORAGE PLAIN,
  ALTER idempotency_key SET STORAGE PLAIN,
  ALTER body SET STORAGE PLAIN;
CREATE TEMP TABLE surge_stage (LIKE surge_stage_shape INCLUDING ALL) ON COMMIT DELETE ROWS;
DROP TABLE surge_stage_shape
