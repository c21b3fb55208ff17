-- $1 = ids of orders this transaction inserted, $2 = the SKUs reserve_all.sql locked (and could
-- not take whole). What each order needs of each of those SKUs, read under those locks, for the
-- worker to serve the orders in stream order (reserve_stock.sql, reject_orders.sql). Takes no lock.
SELECT it.order_pk AS id, it.sku, sum(it.qty) AS qty
FROM order_items AS it
WHERE it.order_pk = ANY($1::bigint[]) AND it.sku = ANY($2::text[])
GROUP BY it.order_pk, it.sku
