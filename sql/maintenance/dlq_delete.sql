-- Purge: delete the given dead letters; the caller removes their DLQ stream entries.
DELETE FROM dead_letters WHERE id = ANY($1::bigint[]) RETURNING stream, entry_id
