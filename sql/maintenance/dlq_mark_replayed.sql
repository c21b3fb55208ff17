-- The dead letter $1 was re-enqueued as entry $3 of stream $2.
UPDATE dead_letters
SET replayed_at = now(), replays = replays + 1, replay_stream = $2, replay_entry_id = $3
WHERE id = $1
