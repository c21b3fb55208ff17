-- Opens the batch's transaction and COPYs its entries in one simple-protocol message, so BEGIN
-- costs no round trip of its own. The rows are one Buffer in PostgreSQL's text format
-- (workers/copy.ts escapes them); an order that is not JSON fails here (22P02) and is bisected
-- like any later step's error, which also rolls the transaction back.
-- This is the transaction's only COPY, and it takes no lock another batch waits on: a backend
-- waiting for COPY data is bound neither by statement_timeout nor by
-- idle_in_transaction_session_timeout, so a worker frozen mid-COPY must hold nothing.
BEGIN;
COPY surge_stage (seq, entry_id, received_at, client_id, idempotency_key, body) FROM STDIN
