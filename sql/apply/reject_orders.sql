-- $1 = ids of orders inserted by this batch that could not be filled whole; $2 = the reason.
UPDATE orders SET status = 'rejected', reason = $2
WHERE id = ANY($1::bigint[])
