-- One batch of dead-letter retention: at most $2 rows first seen before $1 (index
-- dead_letters_first_seen), replayed or not. Same shape as expire_orders.sql.
DELETE FROM dead_letters
WHERE id IN (
  SELECT id FROM dead_letters
  WHERE first_seen_at < $1
  ORDER BY first_seen_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
