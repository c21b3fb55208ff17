-- The final state of the orders a batch acknowledges, by (client, key): $1 = client ids, $2 = keys (parallel arrays).
SELECT o.client_id, o.idempotency_key, o.status, o.reason, o.applied_at::text AS applied_at, o.entry_id
FROM unnest($1::text[], $2::text[]) AS k(client_id, idempotency_key)
JOIN orders o ON o.client_id = k.client_id AND o.idempotency_key = k.idempotency_key
