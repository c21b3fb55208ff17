-- One row per dead-lettered entry: $1 stream, then arrays of client_id, idempotency_key,
-- entry_id, reason, sqlstate, message, payload, deliveries, trace_context (the entry's `t`). A retry (entry redelivered before its
-- ack) updates the existing row instead of adding a second one.
INSERT INTO dead_letters (stream, client_id, idempotency_key, entry_id, reason, sqlstate, message, payload, deliveries, trace_context)
SELECT $1, d.client_id, d.idempotency_key, d.entry_id, d.reason, d.sqlstate, d.message, d.payload, d.deliveries, d.trace_context
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::integer[], $10::text[])
  AS d(client_id, idempotency_key, entry_id, reason, sqlstate, message, payload, deliveries, trace_context)
ON CONFLICT (stream, entry_id) DO UPDATE
SET last_seen_at = now(),
    deliveries = GREATEST(dead_letters.deliveries, EXCLUDED.deliveries),
    reason = EXCLUDED.reason,
    sqlstate = EXCLUDED.sqlstate,
    message = EXCLUDED.message
