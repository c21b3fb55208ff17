-- Opens the batch's transaction and COPYs its orders, lines included, in one simple-protocol
-- message, so BEGIN costs no round trip of its own. The orders are one Buffer in PostgreSQL's text
-- format (workers/copy.ts escapes them). An error rolls the transaction back like any later step's.
-- This is the transaction's only COPY, and it takes no lock another batch waits on: a backend
-- waiting for COPY data is bound neither by statement_timeout nor by
-- idle_in_transaction_session_timeout, so a worker frozen mid-COPY must hold nothing.
BEGIN;
COPY surge_stage (seq, entry_id, received_at, client_id, idempotency_key, order_id, customer_id, currency, total_cents, placed_at, metadata, item_sku, item_qty, item_unit_price_cents) FROM STDIN
