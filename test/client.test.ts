// The reference client (`surge/client`) against the real stack (ingest + a worker) and against
// small servers that answer what the stack answers under faults: Retry-After honoured on 503 and
// 409 with the same key, network errors retried, a 4xx surfaced after one attempt, the deadline
// kept, per-item `:batch` results, and waitFor seeing applied and rejected orders.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type Order, retryDelayMs, SurgeClient, SurgeError } from '../client/index.js';
import { type CreatedClient, createClient } from '../common/clients.js';
import { createLogger } from '../common/log.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { type IngestService, startIngest } from '../ingest/server.js';
import { startWorker, type WorkerHandle } from '../workers/worker.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';

const order = (sku = 'free-1', qty = 1): Order => ({
  customer_id: 'c-1',
  currency: 'EUR',
  items: [{ sku, qty, unit_price_cents: 250 }],
});

/** A server in front of ingest: answers the first requests itself, then forwards to `target`. */
async function frontServer(
  target: string,
  answer: (n: number, req: IncomingMessage, res: ServerResponse) => boolean,
): Promise<{ url: string; seen: Array<{ at: number; key: string | undefined }>; close: () => Promise<void> }> {
  const seen: Array<{ at: number; key: string | undefined }> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      seen.push({ at: Date.now(), key: req.headers['idempotency-key'] as string | undefined });
      if (answer(seen.length, req, res)) return;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host') headers[k] = v;
      const r = await fetch(`${target}${req.url}`, {
        method: req.method ?? 'GET',
        headers,
        ...(chunks.length ? { body: Buffer.concat(chunks) } : {}),
      });
      const out: Record<string, string> = {};
      r.headers.forEach((v, k) => {
        if (k !== 'content-length' && k !== 'transfer-encoding' && k !== 'connection') out[k] = v;
      });
      res.writeHead(r.status, out);
      res.end(Buffer.from(await r.arrayBuffer()));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const problem503 = JSON.stringify({ type: 'https://surge.dev/problems#overloaded', title: 'Overloaded', status: 503 });

describe('surge/client', () => {
  let env: TestEnv;
  let ingest: IngestService;
  let worker: WorkerHandle;
  let pool: pg.Pool;
  let alice: CreatedClient;
  const client = (baseUrl: string, extra: Partial<ConstructorParameters<typeof SurgeClient>[0]> = {}) =>
    new SurgeClient({ baseUrl, apiKey: alice.apiKey, retry: { baseDelayMs: 20, maxDelayMs: 200 }, ...extra });

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2', SURGE_WORKER_THREADS: '1', SURGE_PG_POOL_SIZE: '2' });
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    alice = await createClient(pool, 'alice');
    await pool.query("INSERT INTO inventory (sku, available) VALUES ('scarce', 1)");
    const logger = createLogger('silent', 'client-test');
    ingest = await startIngest(env.config, { logger });
    worker = await startWorker(env.config, { logger });
  });
  after(async () => {
    await ingest?.stop();
    await worker?.stop();
    await pool?.end();
    await env?.cleanup();
  });

  test('is the package subpath export surge/client, with types, and imports nothing of the service', async () => {
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
      exports: Record<string, { types: string; default: string }>;
    };
    const exported = pkg.exports['./client'];
    assert.ok(exported);
    const viaExport = (await import('surge/client')) as { SurgeClient: unknown };
    assert.equal(viaExport.SurgeClient, SurgeClient);
    const js = readFileSync(join(PACKAGE_ROOT, exported.default), 'utf8');
    assert.deepEqual(
      [...js.matchAll(/^import .* from '([^']+)'/gm)].map((m) => m[1]),
      [],
      'no runtime imports',
    );
    assert.match(readFileSync(join(PACKAGE_ROOT, exported.types), 'utf8'), /export declare class SurgeClient/);
  });

  test('submit: 202, the same key replays, waitFor sees applied and rejected', async () => {
    const c = client(ingest.url);
    const first = await c.submit(order(), { key: 'c-ok' });
    assert.equal(first.body.status, 'queued');
    assert.equal(first.replayed, false);
    const again = await c.submit(order(), { key: 'c-ok' });
    assert.equal(again.replayed, true);
    assert.equal(again.body.order_ref, first.body.order_ref);
    const applied = await c.waitFor('c-ok', { timeoutMs: 20_000 });
    assert.equal(applied.status, 'applied');
    await c.submit(order('scarce', 1), { key: 'c-scarce-1' });
    assert.equal((await c.waitFor('c-scarce-1', { timeoutMs: 20_000 })).status, 'applied');
    await c.submit(order('scarce', 1), { key: 'c-scarce-2' });
    const rejected = await c.waitFor('c-scarce-2', { timeoutMs: 20_000 });
    assert.equal(rejected.status, 'rejected');
    assert.equal(rejected.reason, 'out_of_stock');
  });

  test('a 4xx is surfaced after one attempt', async () => {
    const attempts: number[] = [];
    const c = client(ingest.url, { onAttempt: (a) => attempts.push(a.status) });
    const err = await c.submit({ ...order(), currency: 'euro' }, { key: 'c-bad' }).catch((e: unknown) => e);
    assert.ok(err instanceof SurgeError);
    assert.equal(err.status, 400);
    assert.equal(err.attempts, 1);
    assert.equal(err.problem?.type, 'https://surge.dev/problems#invalid-order');
    assert.deepEqual(attempts, [400]);
    const reused = await c.submit(order('free-2'), { key: 'c-ok' }).catch((e: unknown) => e);
    assert.ok(reused instanceof SurgeError && reused.status === 422 && reused.attempts === 1);
  });

  test('503 with Retry-After: waits at least that long, then retries with the same key', async () => {
    const front = await frontServer(ingest.url, (n, _req, res) => {
      if (n > 2) return false;
      res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/problem+json' });
      res.end(problem503);
      return true;
    });
    try {
      const started = Date.now();
      const done = await client(front.url).submit(order(), { key: 'c-503' });
      assert.equal(done.attempts, 3);
      assert.equal(done.body.idempotency_key, 'c-503');
      assert.deepEqual(
        front.seen.map((s) => s.key),
        ['c-503', 'c-503', 'c-503'],
      );
      const [a, b, c] = front.seen.map((s) => s.at) as [number, number, number];
      assert.ok(b - a >= 1000 && c - b >= 1000, `retries ${b - a} ms and ${c - b} ms apart`);
      assert.ok(Date.now() - started < 5000);
    } finally {
      await front.close();
    }
  });

  test('409 and a dropped connection are retried with the same key', async () => {
    const front = await frontServer(ingest.url, (n, req, res) => {
      if (n === 1) {
        req.socket.destroy();
        return true;
      }
      if (n === 2) {
        res.writeHead(409, { 'retry-after': '0', 'content-type': 'application/problem+json' });
        res.end('{}');
        return true;
      }
      return false;
    });
    try {
      const done = await client(front.url).submit(order(), { key: 'c-409' });
      assert.equal(done.attempts, 3);
      assert.deepEqual(
        front.seen.map((s) => s.key),
        ['c-409', 'c-409', 'c-409'],
      );
    } finally {
      await front.close();
    }
  });

  test('the deadline: no retry that would end past it; the last answer is the error', async () => {
    const front = await frontServer(ingest.url, (_n, _req, res) => {
      res.writeHead(503, { 'retry-after': '5', 'content-type': 'application/problem+json' });
      res.end(problem503);
      return true;
    });
    try {
      const started = Date.now();
      const err = await client(front.url, { deadlineMs: 2000 })
        .submit(order(), { key: 'c-deadline' })
        .catch((e: unknown) => e);
      assert.ok(err instanceof SurgeError);
      assert.equal(err.status, 503);
      assert.equal(err.attempts, 1);
      assert.ok(Date.now() - started < 1000, 'gave up at once: Retry-After is past the deadline');
    } finally {
      await front.close();
    }
  });

  test('submitMany: per-item results over :batch', async () => {
    const c = client(ingest.url);
    const results = await c.submitMany([
      { key: 'm-1', order: order() },
      { key: 'm-2', order: { ...order(), items: [] } },
      { key: 'c-ok', order: order() },
    ]);
    assert.deepEqual(
      results.map((r) => [r.key, r.ok, r.ok ? r.replayed : r.status]),
      [
        ['m-1', true, false],
        ['m-2', false, 400],
        ['c-ok', true, true],
      ],
    );
    assert.equal((await c.waitFor('m-1', { timeoutMs: 20_000 })).status, 'applied');
  });

  test('full jitter on top of Retry-After', () => {
    const policy = { baseDelayMs: 100, maxDelayMs: 1000 };
    assert.equal(
      retryDelayMs(policy, 0, undefined, () => 0),
      0,
    );
    assert.equal(
      retryDelayMs(policy, 0, undefined, () => 0.5),
      50,
    );
    assert.equal(
      retryDelayMs(policy, 10, undefined, () => 0.999),
      999,
    );
    assert.equal(
      retryDelayMs(policy, 3, 2000, () => 0),
      2000,
    );
    assert.equal(
      retryDelayMs(policy, 3, 2000, () => 0.5),
      2400,
    );
  });
});
