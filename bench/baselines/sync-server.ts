// Baseline (a) of `surge bench compare`: the classic synchronous design — one PostgreSQL INSERT
// inside every HTTP request, answered 201 after COMMIT. Env: DATABASE_URL, BENCH_PORT (0 = any),
// BENCH_PG_POOL (connections, default 16).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPool } from '../../common/db.js';
import { announce, insertOrder, readOrderRequest, sendJson } from './common.js';

const pool = createPool(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/surge', {
  max: Number(process.env.BENCH_PG_POOL ?? 16),
  applicationName: 'surge-bench-sync',
});
const authCache = new Map<string, string | null>();

const server = createServer((req, res) => {
  if (req.url === '/healthz' || req.url === '/readyz') return sendJson(res, 200, { ok: true });
  void (async () => {
    const r = await readOrderRequest(pool, authCache, req, res);
    if (!r) return;
    await insertOrder(pool, r, 'sync', '0-0');
    sendJson(res, 201, { idempotency_key: r.key, status: 'applied' });
  })().catch((e: unknown) => {
    if (!res.headersSent) sendJson(res, 503, { title: (e as Error).message, status: 503 });
  });
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.BENCH_PORT ?? 0), '127.0.0.1', () => announce((server.address() as AddressInfo).port));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void pool.end().then(() => process.exit(0));
});
