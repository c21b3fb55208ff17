-- A DLQ stream entry without its row (the process that dead-lettered it stopped between the
-- XADD and the INSERT): create the row from the stream entry. Existing rows are left alone.
-- $11: the entry's trace context (`t`), or NULL.
INSERT INTO dead_letters (client_id, idempotency_key, stream, entry_id, reason, sqlstate, message, payload, deliveries, first_seen_at, last_seen_at, trace_context)
VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''), $7, $8, $9, $10, $10, $11)
ON CONFLICT (stream, entry_id) DO NOTHING
