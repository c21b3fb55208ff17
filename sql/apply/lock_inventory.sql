-- $1 = every SKU of the batch's inserted orders. Locks the rows that exist, always in sku order,
-- so concurrent batches (threads, processes) queue on hot SKUs instead of deadlocking.
SELECT sku, available
FROM inventory
WHERE sku = ANY($1::text[])
ORDER BY sku
FOR UPDATE
