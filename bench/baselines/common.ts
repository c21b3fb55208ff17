// Shared by the two comparison baselines (sync-server.ts, bullmq.ts): the same request handling
// as Surge's ingest in spirit (bearer key, Idempotency-Key, order v1 validation) and the same
// single-statement INSERT of an order with its items, so the comparison measures the pipeline,
// not different validation or schema work.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { findClientByKey } from '../../common/clients.js';
import type { Pool } from '../../common/db.js';
import { idempotencyKeyProblem, type Order, validateOrder } from '../../common/order.js';

export const MAX_BODY = 64 * 1024;
/** The BullMQ baseline's queue name. */
export const BULL_QUEUE = 'orders';

export interface AcceptedRequest {
  clientId: string;
  key: string;
  order: Order;
  receivedAtMs: number;
}

function problem(res: ServerResponse, status: number, title: string): void {
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: 'about:blank', title, status }));
}

async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses and checks POST /v1/orders; answers the error itself and returns undefined on failure. */
export async function readOrderRequest(
  pool: Pool,
  authCache: Map<string, string | null>,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<AcceptedRequest | undefined> {
  const receivedAtMs = Date.now();
  if (req.method !== 'POST' || req.url !== '/v1/orders') {
    problem(res, 404, 'not found');
    return undefined;
  }
  const auth = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
  let clientId = auth ? authCache.get(auth) : null;
  if (auth && clientId === undefined) {
    clientId = (await findClientByKey(pool, auth))?.id ?? null;
    authCache.set(auth, clientId);
  }
  if (!clientId) {
    problem(res, 401, 'unknown API key');
    return undefined;
  }
  const key = req.headers['idempotency-key'];
  if (typeof key !== 'string' || idempotencyKeyProblem(key) !== undefined) {
    problem(res, 400, 'Idempotency-Key missing or malformed');
    return undefined;
  }
  const text = await readBody(req);
  if (text === undefined) {
    problem(res, 413, 'body too large');
    return undefined;
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    problem(res, 400, 'body is not JSON');
    return undefined;
  }
  const v = validateOrder(body);
  if (!v.ok) {
    problem(res, 400, 'invalid order');
    return undefined;
  }
  return { clientId, key, order: v.order, receivedAtMs };
}

const INSERT = `
WITH o AS (
  INSERT INTO orders (client_id, idempotency_key, order_id, customer_id, currency, total_cents, status, received_at, stream, entry_id)
  VALUES ($1, $2, $3, $4, $5, $6, 'applied', to_timestamp($7::double precision / 1000), $8, $9)
  ON CONFLICT (client_id, idempotency_key) DO NOTHING
  RETURNING id)
INSERT INTO order_items (order_pk, line, sku, qty, unit_price_cents)
SELECT o.id, i.line::smallint, i.sku, i.qty, i.price
FROM o, unnest($10::text[], $11::int[], $12::bigint[]) WITH ORDINALITY AS i(sku, qty, price, line)`;

/** One statement: the order row and its item rows; a repeated key inserts nothing. */
export async function insertOrder(pool: Pool, r: AcceptedRequest, stream: string, entryId: string): Promise<void> {
  const o = r.order;
  const total = o.items.reduce((a, i) => a + i.qty * i.unit_price_cents, 0);
  await pool.query(INSERT, [
    r.clientId,
    r.key,
    o.order_id ?? null,
    o.customer_id,
    o.currency,
    total,
    r.receivedAtMs,
    stream,
    entryId,
    o.items.map((i) => i.sku),
    o.items.map((i) => i.qty),
    o.items.map((i) => i.unit_price_cents),
  ]);
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Prints the bound port as one JSON line on stdout: how the parent learns it. */
export function announce(port: number): void {
  process.stdout.write(`${JSON.stringify({ listening: port })}\n`);
}

/**
 * The HTTP front both baselines share: health routes, the same request reading and validation as
 * each other, `accept` for what the design does with an accepted order, 503 on its failure; the
 * port announced to the parent; SIGTERM closes the server, then `close()`, then exits.
 */
export function serveOrders(
  pool: Pool,
  accept: (r: AcceptedRequest, res: ServerResponse) => Promise<void>,
  close: () => Promise<unknown>,
): void {
  const authCache = new Map<string, string | null>();
  const server = createServer((req, res) => {
    if (req.url === '/healthz' || req.url === '/readyz') return sendJson(res, 200, { ok: true });
    void (async () => {
      const r = await readOrderRequest(pool, authCache, req, res);
      if (r) await accept(r, res);
    })().catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 503, { title: (e as Error).message, status: 503 });
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(Number(process.env.BENCH_PORT ?? 0), '127.0.0.1', () =>
    announce((server.address() as AddressInfo).port),
  );
  process.on('SIGTERM', () => {
    server.close();
    server.closeAllConnections();
    void close().then(() => process.exit(0));
  });
}
