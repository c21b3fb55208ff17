// Baseline (a) of `surge bench compare`: the classic synchronous design — one PostgreSQL INSERT
// inside every HTTP request, answered 201 after COMMIT. Env: DATABASE_URL, BENCH_PORT (0 = any),
// BENCH_PG_POOL (connections, default 16).
import { createPool } from '../../common/db.js';
import { insertOrder, sendJson, serveOrders } from './common.js';

const pool = createPool(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/surge', {
  max: Number(process.env.BENCH_PG_POOL ?? 16),
  applicationName: 'surge-bench-sync',
});
serveOrders(
  pool,
  async (r, res) => {
    await insertOrder(pool, r, 'sync', '0-0');
    sendJson(res, 201, { idempotency_key: r.key, status: 'applied' });
  },
  () => pool.end(),
);
