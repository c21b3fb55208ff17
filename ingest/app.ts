// The ingest HTTP API (v1): the route table — POST /v1/orders, POST /v1/orders:batch,
// GET /v1/orders/:key, /healthz and /readyz — served by the one request pipeline (pipeline.ts).
// /metrics is not here: it is on its own port (SURGE_INGEST_METRICS_PORT, server.ts), so the
// public port does not show the process's internals to every client. Every error is application/problem+json (RFC 9457). The app holds no
// connections of its own: `startIngest` (server.ts) builds them.
import type { Server } from 'node:http';
import type { Config } from '../common/config.js';
import type { Pool } from '../common/db.js';
import { idemKey, shardFor, shardOfStream } from '../common/keys.js';
import type { RedisClient } from '../common/redis.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import { answerFor, location, ORDER_RESULT } from './answers.js';
import type { Authenticator } from './auth.js';
import type { Backpressure } from './backpressure.js';
import { openApiDocument, ROUTE_SPECS, type RouteSpec } from './contract.js';
import { OrderIntake } from './intake.js';
import { type LongPollDeps, longPoll } from './long-poll.js';
import type { OutcomeWaiters } from './outcomes.js';
import { MAX_WAIT_SECONDS, type OrderState } from '../common/outcome.js';
import {
  createIngestServer,
  createPipeline,
  type Exchange,
  type PipelineDeps,
  type Route,
  send,
  sendJson,
  sendProblem,
} from './pipeline.js';
import {
  type BatchResult,
  idempotencyKeyHeader,
  keyProblem,
  type PreparedBatch,
  type Problem,
  problem,
} from './requests.js';
import { parseRecord, STATE_DONE } from './scripts.js';
import type { OrderWriter } from './writer.js';

export interface IngestAppDeps extends PipelineDeps {
  config: Pick<Config, 'shards' | 'redisPrefix' | 'ingestHeadersTimeoutMs' | 'ingestRequestTimeoutMs'>;
  redis: RedisClient;
  pool: Pool;
  auth: Authenticator;
  backpressure: Backpressure;
  writer: OrderWriter;
  metrics: IngestMetrics;
  /** Wakes `?wait` requests when their order's outcome is published. */
  outcomes: Pick<OutcomeWaiters, 'wait' | 'whenReady'>;
  /** Parses, checks and prepares a `:batch` body (on a thread when configured: ingest/batch.ts). */
  prepareBatch: (body: Buffer, contentType: string, clientId: string) => Promise<PreparedBatch>;
}

/** The client of a route with `auth` (the pipeline ran admission before the handler). */
function clientOf(x: Exchange): string {
  if (!x.client) throw new Error(`route ${x.route} reached its handler without a client`);
  return x.client.id;
}

/** Every route ingest serves. The pipeline serves these and nothing else. */
export function ingestRoutes(deps: IngestAppDeps): Route[] {
  const { metrics, backpressure, writer, logger } = deps;
  // POST /v1/orders: bodies checked and written once per event-loop turn (ingest/intake.ts).
  const intake = new OrderIntake(writer);
  const retryAfter = () => ['retry-after', String(backpressure.retryAfterSeconds)];

  const invalid = (x: Exchange, p: Problem): void => {
    metrics.orders.inc({ result: 'invalid' });
    sendProblem(x, deps, p);
  };

  const createOrder: Route = {
    ...ROUTE_SPECS.create,
    handle(x, body) {
      // The Idempotency-Key first, then the body itself.
      const rawKey = x.req.headers['idempotency-key'];
      if (Array.isArray(rawKey)) {
        invalid(
          x,
          problem(400, 'invalid-idempotency-key', 'Invalid Idempotency-Key', 'send exactly one Idempotency-Key header'),
        );
        return;
      }
      const header = rawKey === undefined ? undefined : idempotencyKeyHeader(rawKey);
      if (header && !header.ok) {
        invalid(x, header.problem);
        return;
      }
      const key = header?.key;
      const badKey = keyProblem(key, 'Idempotency-Key');
      if (badKey || key === undefined) {
        invalid(x, badKey ?? problem(400, 'invalid-idempotency-key', 'Idempotency-Key is required'));
        return;
      }
      if (!body) {
        invalid(x, problem(400, 'malformed-json', 'Malformed JSON', 'the request has no JSON body'));
        return;
      }
      const traceparent = x.trace?.startAccept();
      return intake.submit(body, clientOf(x), key, traceparent).then((outcome) => {
        x.trace?.accepted(outcome.kind, shardFor(clientOf(x), key, deps.config.shards));
        if (outcome.kind === 'invalid') {
          invalid(x, outcome.problem);
          return;
        }
        metrics.orders.inc({ result: ORDER_RESULT[outcome.kind] });
        if (outcome.kind === 'unavailable')
          logger.error({ reqId: x.reqId, err: outcome.err, reason: outcome.reason }, 'order not accepted');
        const answer = answerFor(outcome, key, backpressure.retryAfterSeconds);
        if (answer.problem) sendProblem(x, deps, answer.problem, answer.headers);
        else send(x, deps, answer.status, answer.headers, 'application/json; charset=utf-8', answer.body);
      });
    },
  };

  const batch: Route = {
    ...ROUTE_SPECS.batch,
    async handle(x, body) {
      if (!body) {
        sendProblem(x, deps, problem(400, 'malformed-json', 'Malformed JSON', 'the request has no body'));
        return;
      }
      let prepared: PreparedBatch;
      try {
        prepared = await deps.prepareBatch(body, String(x.req.headers['content-type'] ?? ''), clientOf(x));
      } catch (err) {
        logger.error({ reqId: x.reqId, err }, 'batch: preparing the orders failed');
        sendProblem(
          x,
          deps,
          problem(
            503,
            'unavailable',
            'Order batch not accepted',
            'the batch could not be prepared; nothing was recorded, retry',
          ),
          retryAfter(),
        );
        return;
      }
      if (!prepared.ok) {
        sendProblem(x, deps, prepared.problem);
        return;
      }
      sendJson(x, deps, 207, await writeBatch(x, prepared));
    },
  };

  /** The 207 body of a prepared batch, its orders written. */
  const writeBatch = async (x: Exchange, batch: Extract<PreparedBatch, { ok: true }>): Promise<string> => {
    // The 207 body is built as text: each accepted result embeds the 202 body as the single
    // route answers it (the same bytes a replay returns), without parsing it back.
    const { prepared, indexes } = batch;
    const results: string[] = new Array(batch.count);
    for (const { index, result } of batch.invalid) results[index] = result;
    const invalid = batch.invalid.length;
    // Traced: every order of the batch carries the batch request's accept span.
    const traceparent = x.trace?.startAccept();
    if (traceparent) for (const p of prepared) p.traceparent = traceparent;
    const outcomes = await writer.writeMany(prepared);
    x.trace?.accepted(outcomes.every((o) => o.kind === 'accepted') ? 'accepted' : 'mixed', undefined);
    let failure: unknown;
    const counts = new Map<string, number>();
    if (invalid > 0) counts.set('invalid', invalid);
    // Parallel arrays: writeMany answers one outcome per prepared order, and indexes[j] is
    // prepared[j]'s place in the batch, so j is in bounds for all three.
    for (let j = 0; j < prepared.length; j++) {
      const outcome = outcomes[j]!;
      const index = indexes[j]!;
      const key = prepared[j]!.idempotencyKey;
      const result = ORDER_RESULT[outcome.kind];
      counts.set(result, (counts.get(result) ?? 0) + 1);
      if (outcome.kind === 'accepted' || outcome.kind === 'replayed') {
        results[index] =
          `{"index":${index},"idempotency_key":${JSON.stringify(key)},"status":202,` +
          `"replayed":${outcome.kind === 'replayed'},"location":${JSON.stringify(location(key))},` +
          `"body":${outcome.body}}`;
      } else {
        if (outcome.kind === 'unavailable') failure ??= outcome.err ?? outcome.reason;
        const answer = answerFor(outcome, key, backpressure.retryAfterSeconds);
        results[index] = JSON.stringify({
          index,
          idempotency_key: key,
          status: answer.status,
          problem: answer.problem as Problem,
        } satisfies BatchResult);
      }
    }
    for (const [result, n] of counts) metrics.orders.inc({ result }, n);
    if (failure !== undefined) logger.error({ reqId: x.reqId, err: failure }, 'batch: some orders not accepted');
    return `{"results":[${results.join(',')}]}`;
  };

  const getOrder: Route = {
    ...ROUTE_SPECS.get,
    async handle(x) {
      const key = x.param;
      const bad = keyProblem(key, 'the key in the path', true);
      if (bad) {
        sendProblem(x, deps, bad);
        return;
      }
      const wait = waitSeconds(x.query);
      if (wait === undefined) {
        sendProblem(
          x,
          deps,
          problem(400, 'bad-request', 'Bad request', `wait is a number of seconds from 0 to ${MAX_WAIT_SECONDS}`),
        );
        return;
      }
      const clientId = clientOf(x);
      if (wait > 0) {
        longPoll(polls, x, clientId, key, wait * 1000);
        return;
      }
      let state: OrderState | undefined;
      try {
        state = await lookupOrder(deps, clientId, key);
      } catch (err) {
        polls.unavailable(x, err);
        return;
      }
      polls.answer(x, state);
    },
  };

  const polls: LongPollDeps = {
    outcomes: deps.outcomes,
    lookup: (clientId, key) => lookupOrder(deps, clientId, key),
    answer(x, state) {
      if (state) sendJson(x, deps, 200, JSON.stringify(state));
      else
        sendProblem(
          x,
          deps,
          problem(
            404,
            'order-not-found',
            'No such order',
            'no order with this Idempotency-Key for this client (or its record expired)',
          ),
        );
    },
    unavailable(x, err) {
      logger.error({ reqId: x.reqId, err }, 'order lookup failed');
      sendProblem(
        x,
        deps,
        problem(503, 'unavailable', 'Order state unavailable', 'PostgreSQL or Redis cannot be reached'),
        retryAfter(),
      );
    },
    failed(x, err) {
      logger.error({ reqId: x.reqId, err, route: x.route }, 'request failed');
      if (x.res.headersSent) x.res.destroy();
      else sendProblem(x, deps, problem(500, 'internal', 'Internal error'));
    },
  };

  const plain = (spec: RouteSpec, handle: Route['handle']): Route => ({ ...spec, handle });
  // Built once: the document changes only with the code.
  const contract = JSON.stringify(openApiDocument());
  return [
    createOrder,
    batch,
    getOrder,
    plain(ROUTE_SPECS.healthz, (x) => send(x, deps, 200, [], 'text/plain; charset=utf-8', 'ok\n')),
    plain(ROUTE_SPECS.readyz, (x) => {
      const why = deps.draining() ? 'draining' : backpressure.redisUp ? undefined : 'redis unreachable';
      send(x, deps, why ? 503 : 200, [], 'text/plain; charset=utf-8', why ? `not ready: ${why}\n` : 'ready\n');
    }),
    plain(ROUTE_SPECS.openapi, (x) => sendJson(x, deps, 200, contract)),
  ];
}

/** The ingest HTTP server: every route of `ingestRoutes` through the one pipeline. */
export function buildIngestApp(deps: IngestAppDeps): Server {
  return createIngestServer(deps.config, createPipeline(deps, ingestRoutes(deps)));
}

/** `wait=` of a query string in seconds (0 when absent); undefined when it is not a number from 0 to MAX_WAIT_SECONDS. */
function waitSeconds(query: string): number | undefined {
  if (query === '') return 0;
  const raw = new URLSearchParams(query).get('wait');
  if (raw === null || raw === '') return 0;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 && n <= MAX_WAIT_SECONDS ? n : undefined;
}

/** PostgreSQL first (the final word), then dead letters, then the Redis record. */
async function lookupOrder(
  deps: Pick<IngestAppDeps, 'pool' | 'redis' | 'config'>,
  clientId: string,
  key: string,
): Promise<OrderState | undefined> {
  const { redisPrefix: prefix, shards } = deps.config;
  const orders = await deps.pool.query<{
    status: 'applied' | 'rejected';
    reason: string | null;
    stream: string;
    entry_id: string;
    applied_at: Date;
  }>('SELECT status, reason, stream, entry_id, applied_at FROM orders WHERE client_id = $1 AND idempotency_key = $2', [
    clientId,
    key,
  ]);
  const row = orders.rows[0];
  if (row) {
    const shard = shardOfStream(prefix, row.stream);
    return {
      idempotency_key: key,
      status: row.status,
      ...(shard !== undefined ? { order_ref: `s${shard}-${row.entry_id}` } : {}),
      ...(row.reason ? { reason: row.reason } : {}),
      applied_at: row.applied_at.toISOString(),
    };
  }
  const dead = await deps.pool.query<{ reason: string; stream: string; entry_id: string }>(
    'SELECT reason, stream, entry_id FROM dead_letters WHERE client_id = $1 AND idempotency_key = $2 ORDER BY last_seen_at DESC LIMIT 1',
    [clientId, key],
  );
  const dl = dead.rows[0];
  if (dl) {
    const shard = shardOfStream(prefix, dl.stream);
    return {
      idempotency_key: key,
      status: 'dead_lettered',
      ...(shard !== undefined ? { order_ref: `s${shard}-${dl.entry_id}` } : {}),
      reason: dl.reason,
    };
  }
  const shard = shardFor(clientId, key, shards);
  const record = parseRecord(await deps.redis.get(idemKey(prefix, shard, clientId, key)));
  if (record?.state !== STATE_DONE) return undefined;
  return { idempotency_key: key, status: 'queued', order_ref: `s${shard}-${record.entryId}` };
}
