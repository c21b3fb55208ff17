-- One batch of order retention: at most $2 orders received before $1, oldest first (index
-- orders_received_at), with their items (trigger orders_delete_items, migration 007). Rows
-- another transaction holds are skipped, so the job never waits on a lock; each batch is its own
-- short transaction.
DELETE FROM orders
WHERE id IN (
  SELECT id FROM orders
  WHERE received_at < $1
  ORDER BY received_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
