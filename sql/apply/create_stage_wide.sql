-- Once per session, only when a batch has a row surge_stage cannot hold (create_stage.sql): the
-- same columns with their types' own storage (large values compressed or moved out of line), so
-- a TOAST table. From then on the session's commits empty it too.
CREATE TEMP TABLE surge_stage_wide (LIKE surge_stage INCLUDING DEFAULTS INCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS
