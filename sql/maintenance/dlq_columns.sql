id, client_id, idempotency_key, stream, entry_id, reason, sqlstate, message, payload, deliveries,
first_seen_at, last_seen_at, replayed_at, replays, replay_stream, replay_entry_id, trace_context
