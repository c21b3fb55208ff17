// The ingest HTTP API (v1): a fastify app serving POST /v1/orders:batch, GET /v1/orders/:key,
// /healthz, /readyz and /metrics, on a server whose request listener hands POST /v1/orders to
// create-order.ts. Every error is application/problem+json (RFC 9457). The app holds no
// connections of its own: `startIngest` (server.ts) builds them.
import { createServer } from 'node:http';
import {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  fastify,
  LogController,
} from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';
import type { Registry } from 'prom-client';
import type { ApiClient } from '../common/clients.js';
import type { Config } from '../common/config.js';
import type { Pool } from '../common/db.js';
import { idemKey, shardFor, shardOfStream } from '../common/keys.js';
import type { Logger } from '../common/log.js';
import type { RedisClient } from '../common/redis.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import {
  admit,
  answerFor,
  bodyTooLarge,
  location,
  ORDER_RESULT,
  PROBLEM_TYPE,
  ROUTES,
  requestId,
  SINGLE_BODY_LIMIT,
  unsupportedMediaType,
} from './answers.js';
import type { Authenticator } from './auth.js';
import type { Backpressure } from './backpressure.js';
import { BODY_TYPES, createOrderHandler, isCreateOrder } from './create-order.js';
import { OrderIntake } from './intake.js';
import { type BatchResult, keyProblem, type PreparedBatch, type Problem, problem } from './requests.js';
import { parseRecord, STATE_DONE } from './scripts.js';
import type { OrderWriter } from './writer.js';

/** Largest body of POST /v1/orders:batch: 1,000 orders at up to ~8 KiB each on average. */
const BATCH_BODY_LIMIT = 8 * 1024 * 1024;
declare module 'fastify' {
  interface FastifyContextConfig {
    /** The bounded `route` label of the request metrics. */
    metricRoute?: string;
  }
  interface FastifyRequest {
    apiClient: ApiClient | null;
  }
}

export interface IngestAppDeps {
  config: Pick<Config, 'shards' | 'redisPrefix' | 'ingestHeadersTimeoutMs' | 'ingestRequestTimeoutMs'>;
  redis: RedisClient;
  pool: Pool;
  auth: Authenticator;
  backpressure: Backpressure;
  writer: OrderWriter;
  metrics: IngestMetrics;
  registry: Registry;
  logger: Logger;
  /** Parses, checks and prepares a `:batch` body (on a thread when configured: ingest/batch.ts). */
  prepareBatch: (body: Buffer, contentType: string, clientId: string) => Promise<PreparedBatch>;
  /** True once a graceful stop began (/readyz answers 503). */
  draining: () => boolean;
}

function sendProblem(reply: FastifyReply, p: Problem, headers: Record<string, string> = {}): FastifyReply {
  return reply.code(p.status).headers(headers).type(PROBLEM_TYPE).send(JSON.stringify(p));
}

/** A pino log call's arguments, passed on as given. */
type LogArgs = [obj: unknown, msg?: string, ...args: unknown[]];

/**
 * A request's logger whose pino child (bound to the request id) is made the first time it logs.
 * fastify asks for a child logger per request; nearly every request never logs, and making a
 * pino child costs the event loop on every one (bench/results/HISTORY.md). The lines it writes
 * are the child's, reqId included.
 */
class LazyRequestLogger implements FastifyBaseLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
    private readonly options: ChildLoggerOptions,
  ) {}

  private get logger(): FastifyBaseLogger {
    this.made ??= this.parent.child(this.bindings, this.options);
    return this.made;
  }

  get level(): string {
    return this.made?.level ?? this.options.level ?? this.parent.level;
  }

  set level(level: string) {
    this.logger.level = level;
  }

  fatal(...args: LogArgs): void {
    this.logger.fatal(...args);
  }

  error(...args: LogArgs): void {
    this.logger.error(...args);
  }

  warn(...args: LogArgs): void {
    this.logger.warn(...args);
  }

  info(...args: LogArgs): void {
    this.logger.info(...args);
  }

  debug(...args: LogArgs): void {
    this.logger.debug(...args);
  }

  trace(...args: LogArgs): void {
    this.logger.trace(...args);
  }

  silent(): void {}

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.logger.child(bindings, options);
  }
}

/**
 * What happens when a response is done. fastify calls its LogController once per response
 * whatever the route (404s and errors included); Surge's records the request metrics there and
 * logs a 4xx at info, instead of an access log line. An `onResponse` hook would do the same but
 * costs every request a trip through fastify's hook runner (bench/results/HISTORY.md).
 */
class RequestMetrics extends LogController {
  constructor(private readonly metrics: Pick<IngestMetrics, 'requests' | 'duration'>) {
    super({ disableRequestLogging: true });
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const route = request.routeOptions.config.metricRoute ?? 'other';
    const code = reply.statusCode;
    this.metrics.requests.inc({ route, code: String(code) });
    this.metrics.duration.observe({ route }, reply.elapsedTime / 1000);
    if (error) request.log.error({ err: error, route, code }, 'response failed');
    else if (code >= 400 && code < 500) request.log.info({ route, code }, 'client error');
  }
}

export function buildIngestApp(deps: IngestAppDeps): FastifyInstance {
  const { metrics, backpressure, writer, logger, config } = deps;
  // POST /v1/orders: bodies checked and written once per event-loop turn (ingest/intake.ts).
  const intake = new OrderIntake(writer);
  // POST /v1/orders is served on node:http directly (create-order.ts: why); fastify the rest.
  const createOrder = createOrderHandler({
    auth: deps.auth,
    backpressure,
    metrics,
    intake,
    logger,
    draining: deps.draining,
  });
  const app = fastify({
    // The server is made here rather than by fastify so that its request listener can hand
    // POST /v1/orders to createOrder; it is set up as fastify sets up its own (keepAliveTimeout
    // and connectionTimeout from fastify's options, with its defaults; requestTimeout is ours).
    serverFactory: (handler, options) => {
      const server = createServer(
        {
          // Slow clients (slowloris): Node answers 408 and closes the connection when the headers
          // (headersTimeout) or the whole request (requestTimeout) take too long; it checks open
          // connections every connectionsCheckingInterval. fastify's default requestTimeout is 0 (none).
          headersTimeout: config.ingestHeadersTimeoutMs,
          requestTimeout: config.ingestRequestTimeoutMs,
          connectionsCheckingInterval: Math.max(50, Math.min(5000, Math.floor(config.ingestHeadersTimeoutMs / 4))),
        },
        (req, res) => {
          if (isCreateOrder(req)) createOrder(req, res);
          else handler(req, res);
        },
      );
      server.keepAliveTimeout = Number(options.keepAliveTimeout);
      server.setTimeout(Number(options.connectionTimeout));
      return server;
    },
    loggerInstance: logger as FastifyBaseLogger,
    logController: new RequestMetrics(metrics),
    childLoggerFactory: (parent, bindings, options) => new LazyRequestLogger(parent, bindings, options),
    bodyLimit: SINGLE_BODY_LIMIT,
    genReqId: requestId,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: 1024 },
  });
  app.decorateRequest('apiClient', null);

  // Bodies arrive as bytes: we decode them ourselves to reject invalid UTF-8 (fastify's parser
  // would silently turn it into U+FFFD) and to report malformed JSON as problem+json.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser([...BODY_TYPES], { parseAs: 'buffer' }, (_req, body, done) => {
    done(null, body);
  });

  // Hooks in callback style: no promise per request and hook. The request id is set first thing
  // (an onSend hook would cost every reply a trip through fastify's onSend runner); replies
  // built later, errors and 404s included, keep it.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const status = error.statusCode && error.statusCode >= 400 ? error.statusCode : 500;
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    if (status === 413) return sendProblem(reply, bodyTooLarge(request.routeOptions.bodyLimit ?? SINGLE_BODY_LIMIT));
    if (status === 415) return sendProblem(reply, unsupportedMediaType());
    return sendProblem(
      reply,
      status >= 500
        ? problem(status, 'internal', 'Internal error')
        : problem(status, 'bad-request', 'Bad request', error.message),
    );
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      reply,
      problem(404, 'not-found', 'Not found', `no route ${request.method} ${request.url.split('?')[0]}`),
    ),
  );

  // Auth first (before the body is read), then, for writes, load shedding (answers.ts: admit).
  // A hook that replies does not call done (fastify: respond from a hook).
  const authHook =
    (shed: boolean) =>
    (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void): void => {
      admit(
        deps,
        request.headers.authorization,
        shed,
        (client, refusal) => {
          if (refusal) {
            sendProblem(reply, refusal.problem, refusal.headers);
            return;
          }
          request.apiClient = client ?? null;
          done();
        },
        (err) => request.log.error({ err }, 'api key lookup failed'),
      );
    };
  const authenticate = authHook(false);
  const authenticateAndShed = authHook(true);

  app.post(
    '/v1/orders::batch',
    { config: { metricRoute: ROUTES.batch }, bodyLimit: BATCH_BODY_LIMIT, onRequest: authenticateAndShed },
    async (request, reply) => {
      const client = request.apiClient as ApiClient;
      if (!Buffer.isBuffer(request.body)) {
        return sendProblem(reply, problem(400, 'malformed-json', 'Malformed JSON', 'the request has no body'));
      }
      let batch: PreparedBatch;
      try {
        batch = await deps.prepareBatch(request.body, String(request.headers['content-type'] ?? ''), client.id);
      } catch (err) {
        request.log.error({ err }, 'batch: preparing the orders failed');
        return sendProblem(
          reply,
          problem(
            503,
            'unavailable',
            'Order batch not accepted',
            'the batch could not be prepared; nothing was recorded, retry',
          ),
          {
            'retry-after': String(backpressure.retryAfterSeconds),
          },
        );
      }
      if (!batch.ok) return sendProblem(reply, batch.problem);
      // The 207 body is built as text: each accepted result embeds the 202 body as the single
      // route answers it (the same bytes a replay returns), without parsing it back.
      const { prepared, indexes } = batch;
      const results: string[] = new Array(batch.count);
      for (const { index, result } of batch.invalid) results[index] = result;
      const invalid = batch.invalid.length;
      const outcomes = await writer.writeMany(prepared);
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
      if (failure !== undefined) request.log.error({ err: failure }, 'batch: some orders not accepted');
      return reply
        .code(207)
        .type('application/json; charset=utf-8')
        .send(`{"results":[${results.join(',')}]}`);
    },
  );

  app.get<{ Params: { key: string } }>(
    '/v1/orders/:key',
    { config: { metricRoute: ROUTES.get }, onRequest: [authenticate] },
    async (request, reply) => {
      const client = request.apiClient as ApiClient;
      const key = request.params.key;
      const bad = keyProblem(key, 'the key in the path');
      if (bad) return sendProblem(reply, bad);
      let state: OrderState | undefined;
      try {
        state = await lookupOrder(deps, client.id, key);
      } catch (err) {
        request.log.error({ err }, 'order lookup failed');
        return sendProblem(
          reply,
          problem(503, 'unavailable', 'Order state unavailable', 'PostgreSQL or Redis cannot be reached'),
          {
            'retry-after': String(backpressure.retryAfterSeconds),
          },
        );
      }
      if (!state)
        return sendProblem(
          reply,
          problem(
            404,
            'order-not-found',
            'No such order',
            'no order with this Idempotency-Key for this client (or its record expired)',
          ),
        );
      return reply.code(200).send(state);
    },
  );

  app.get('/healthz', { config: { metricRoute: ROUTES.healthz } }, async (_request, reply) =>
    reply.type('text/plain').send('ok\n'),
  );
  app.get('/readyz', { config: { metricRoute: ROUTES.readyz } }, async (_request, reply) => {
    const why = deps.draining() ? 'draining' : backpressure.redisUp ? undefined : 'redis unreachable';
    return reply
      .code(why ? 503 : 200)
      .type('text/plain')
      .send(why ? `not ready: ${why}\n` : 'ready\n');
  });
  app.get('/metrics', { config: { metricRoute: ROUTES.metrics } }, async (_request, reply) => {
    const body = await deps.registry.metrics();
    return reply.type(deps.registry.contentType).send(body);
  });
  return app;
}

export interface OrderState {
  idempotency_key: string;
  status: 'queued' | 'applied' | 'rejected' | 'dead_lettered';
  order_ref?: string;
  reason?: string;
  applied_at?: string;
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
