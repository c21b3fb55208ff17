-- The W3C traceparent of the request that accepted a dead-lettered order (the entry's optional
-- `t` field), so a replay re-emits it and the replayed order's batch links to the original trace.
ALTER TABLE dead_letters ADD COLUMN trace_context text;
