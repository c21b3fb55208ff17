-- The lines of the orders insert_orders.sql inserted (and only those), straight into order_items:
-- the worker prefixes each pre-encoded line with its order's id from the RETURNING rows.
COPY order_items (order_pk, line, sku, qty, unit_price_cents) FROM STDIN
