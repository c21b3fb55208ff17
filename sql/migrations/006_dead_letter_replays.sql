-- Dead-letter replays: how often an entry was re-enqueued and where the last copy went.
-- replayed_at (001) is the time of the last replay.
ALTER TABLE dead_letters
  ADD COLUMN replays         integer NOT NULL DEFAULT 0,
  ADD COLUMN replay_stream   text,
  ADD COLUMN replay_entry_id text;
CREATE INDEX dead_letters_reason ON dead_letters (reason, first_seen_at);
