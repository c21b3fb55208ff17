// Baseline (b) of `surge bench compare`: a BullMQ job per order. `front` is an HTTP server that
// validates and enqueues (jobId = client + key, answered 202 once BullMQ has the job); `worker`
// runs a BullMQ Worker doing one INSERT per job. Env: DATABASE_URL, REDIS_URL, BENCH_BULL_PREFIX,
// BENCH_PORT (front, 0 = any), BENCH_BULL_CONCURRENCY (worker, default 16).
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { createPool } from '../../common/db.js';
import type { Order } from '../../common/order.js';
import { type AcceptedRequest, announce, BULL_QUEUE, insertOrder, sendJson, serveOrders } from './common.js';

const role = process.argv[2];
const prefix = process.env.BENCH_BULL_PREFIX ?? 'surge-bench:bull';
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const concurrency = Number(process.env.BENCH_BULL_CONCURRENCY ?? 16);
const pool = createPool(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/surge', {
  max: role === 'worker' ? concurrency : 2,
  applicationName: `surge-bench-bullmq-${role}`,
});

interface JobData {
  c: string;
  k: string;
  o: Order;
  r: number;
}

if (role === 'front') {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  const queue = new Queue<JobData>(BULL_QUEUE, { connection, prefix });
  serveOrders(
    pool,
    async (r, res) => {
      await queue.add(
        'order',
        { c: r.clientId, k: r.key, o: r.order, r: r.receivedAtMs },
        { jobId: `${r.clientId}-${r.key}`, removeOnComplete: true, removeOnFail: 1000 },
      );
      sendJson(res, 202, { idempotency_key: r.key, status: 'queued' });
    },
    () => Promise.all([queue.close(), pool.end()]),
  );
} else if (role === 'worker') {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const worker = new Worker<JobData>(
    BULL_QUEUE,
    async (job) => {
      const d = job.data;
      const r: AcceptedRequest = { clientId: d.c, key: d.k, order: d.o, receivedAtMs: d.r };
      await insertOrder(pool, r, 'bullmq', String(job.id));
    },
    { connection, prefix, concurrency },
  );
  worker.on('error', () => {});
  void worker.waitUntilReady().then(() => announce(0));
  process.on('SIGTERM', () => {
    void Promise.all([worker.close(), pool.end()]).then(() => process.exit(0));
  });
} else {
  process.stderr.write('usage: bullmq.js front|worker\n');
  process.exit(2);
}
