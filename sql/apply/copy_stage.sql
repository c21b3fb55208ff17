-- Opens the batch's transaction and COPYs its orders in one simple-protocol message, so BEGIN
-- costs no round trip of its own. The orders are one Buffer in PostgreSQL's text format
-- (workers/copy.ts escapes them). An error rolls the transaction back like any later step's.
BEGIN;
COPY surge_stage (seq, entry_id, received_at, client_id, idempotency_key, order_id, customer_id, currency, total_cents, placed_at, metadata) FROM STDIN
