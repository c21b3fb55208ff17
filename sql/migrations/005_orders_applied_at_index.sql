-- `surge status` reports the apply rate over the last minute: count(*) of orders WHERE
-- applied_at > now() - 60 s. Without this index that is a sequential scan of every order ever
-- applied on each refresh; with it, a range scan of the last minute's rows. applied_at is
-- clock_timestamp() at insert, so the index is append-mostly (cheap to maintain).
-- IF NOT EXISTS: on a large live table, create it first without blocking writes
-- (CREATE INDEX CONCURRENTLY orders_applied_at ON orders (applied_at)); this is then a no-op.
CREATE INDEX IF NOT EXISTS orders_applied_at ON orders (applied_at);
