-- The batch's orders, one Buffer in PostgreSQL's text format (workers/copy.ts escapes them).
COPY surge_stage (seq, entry_id, received_at, client_id, idempotency_key, order_id, customer_id, currency, total_cents, placed_at, metadata) FROM STDIN
