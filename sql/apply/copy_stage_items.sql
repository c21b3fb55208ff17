-- The batch's order lines, one Buffer in PostgreSQL's text format.
COPY surge_stage_items (entry_id, line, sku, qty, unit_price_cents) FROM STDIN
