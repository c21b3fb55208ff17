// The one request pipeline of ingest: every route, whatever it serves, is declared in a route
// table and goes through the same steps here, in this order — request id, route match, the
// drain answer, admission (auth, then load shedding for writes), the body (Content-Type, size),
// the handler — and answers through `send`, which adds the request id, counts the request
// metrics and logs a 4xx. A throw anywhere fails that request alone (500). No framework: a
// small node:http router, because the order route takes the surge and a framework's per-request
// work was a measurable share of its cost (bench/results/HISTORY.md).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { context } from '@opentelemetry/api';
import type { ApiClient } from '../common/clients.js';
import type { Config } from '../common/config.js';
import type { Logger } from '../common/log.js';
import type { Tracing } from '../common/tracing.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import {
  type AdmissionDeps,
  admitLater,
  admitNow,
  bodyTooLarge,
  isRefusal,
  type Refusal,
  countShed,
  requestId,
  SINGLE_BODY_LIMIT,
  shedProblem,
  unsupportedMediaType,
} from './answers.js';
import type { RouteSpec } from './contract.js';
import type { Door, DoorReason } from './door.js';
import { bearerToken } from './auth.js';
import type { Responder } from './held.js';
import { type RequestTrace, requestTrace } from './request-trace.js';
import { type Problem, problem } from './requests.js';

const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

/** A response header list: name, value, name, value, … (node:http's writeHead takes it without walking an object). */
export type HeaderList = readonly string[];

/** What answering a request needs: all a long poll keeps once its request is held (held.ts). */
export interface Answerable {
  readonly res: Responder;
  readonly reqId: string;
  /** The bounded `route` label of the request metrics. */
  readonly route: string;
  readonly started: number;
  answered: boolean;
  /** Its spans, when tracing is on and the request sampled (undefined otherwise: no tracing work at all). */
  readonly trace: RequestTrace | undefined;
}

/** One request on its way through the pipeline. */
export interface Exchange extends Answerable {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The authenticated client (routes with `auth`). */
  client: ApiClient | undefined;
  /** The path parameter (routes with `param`), percent-decoded. */
  param: string;
  /** The query string, without its `?` ('' when there is none). */
  readonly query: string;
}

/**
 * A route of the table: the serving part of its declaration (ingest/contract.ts) and its
 * handler; the pipeline reads the body's limit and types, the document the rest.
 */
export interface Route extends Pick<RouteSpec, 'method' | 'path' | 'param' | 'label' | 'auth' | 'shed'> {
  body?: Pick<NonNullable<RouteSpec['body']>, 'limit' | 'types'>;
  /** Answers with `send`/`sendProblem`; `body` is undefined when the request has none. */
  handle(x: Exchange, body: Buffer | undefined): void | Promise<void>;
}

export interface PipelineDeps extends AdmissionDeps {
  config: Pick<Config, 'ingestHeadersTimeoutMs' | 'ingestRequestTimeoutMs'>;
  metrics: Pick<IngestMetrics, 'orders' | 'requests' | 'duration' | 'shed'>;
  logger: Logger;
  /** Overload control at the door: writes shed before their body is read. */
  door: Door;
  /** True once a graceful stop began: new requests get 503 and `Connection: close`. */
  draining: () => boolean;
  /** Present when tracing is on (common/tracing.ts). */
  tracing?: Tracing | undefined;
  /** Told of every request as it is read, before anything else (the loop timeline, when on). */
  onRequest?: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
}

/** `type/subtype` of a Content-Type, lowercased, without parameters. */
function mediaType(header: string): string {
  const semi = header.indexOf(';');
  return (semi < 0 ? header : header.slice(0, semi)).trim().toLowerCase();
}

/**
 * Headers for an answer sent before the body was read: `Connection: close` unless the body is
 * small enough for Node to discard it unparsed (it does so for any unread body of a kept-alive
 * connection), so a shed client cannot make the process read a large body it refused.
 */
function unreadBody(req: IncomingMessage): readonly string[] {
  const { headers } = req;
  if (headers['transfer-encoding'] === undefined) {
    const length = headers['content-length'];
    if (length === undefined || Number(length) <= SINGLE_BODY_LIMIT) return [];
  }
  return ['connection', 'close'];
}

const DOOR_DETAIL: Record<DoorReason, string> = {
  in_flight: 'too many requests in flight (SURGE_INGEST_MAX_IN_FLIGHT)',
  event_loop_delay: 'the event loop is running late (SURGE_INGEST_MAX_EVENT_LOOP_DELAY_MS)',
  turn: 'this event-loop turn has run too long (SURGE_INGEST_MAX_TURN_MS)',
};

// A shed at the door is answered from strings made once: the body up to its `instance`, and the
// Retry-After header of each number of seconds. Under overload the door answers tens of thousands
// a second, and all a 503 spends is taken from the 202s.
const DOOR_BODY: Record<DoorReason, string> = {
  in_flight: doorBody('in_flight'),
  event_loop_delay: doorBody('event_loop_delay'),
  turn: doorBody('turn'),
};
const RETRY_AFTER_HEADERS: readonly HeaderList[] = Array.from({ length: 61 }, (_, s) => ['retry-after', String(s)]);

function doorBody(reason: DoorReason): string {
  const p = shedProblem(DOOR_DETAIL[reason]);
  return `${JSON.stringify(p).slice(0, -1)},"instance":`;
}

/** The 503 of a write the door shed: counted by reason, as an unavailable order. */
function sendShed(x: Exchange, deps: PipelineDeps, why: DoorReason, retryAfter: number): void {
  countShed(deps.metrics, why);
  const retry = RETRY_AFTER_HEADERS[retryAfter] ?? ['retry-after', String(retryAfter)];
  const close = unreadBody(x.req);
  const headers = close.length === 0 ? retry : [...retry, ...close];
  send(x, deps, 503, headers, PROBLEM_CONTENT_TYPE, `${DOOR_BODY[why]}${JSON.stringify(x.reqId)}}`);
}

/** A request body's 'error': the client went away mid-body (aborted, reset); nothing to answer, nothing was written. */
function wentAway(): void {}

/** The metrics label of requests no route matched. */
const OTHER = 'other';

/** Answers a request: the request id, the metrics and the 4xx log line, for every answer of every route. */
export function send(
  x: Answerable,
  deps: Pick<PipelineDeps, 'metrics' | 'logger'>,
  status: number,
  headers: HeaderList,
  contentType: string,
  body: string | Buffer,
): void {
  if (x.answered) return;
  x.answered = true;
  const head: string[] = ['x-request-id', x.reqId];
  if (x.trace) head.push('traceparent', x.trace.answered(status, deps.logger, x.reqId));
  for (const h of headers) head.push(h);
  head.push('content-type', contentType, 'content-length', String(Buffer.byteLength(body)));
  x.res.writeHead(status, head);
  x.res.end(body);
  const { route } = x;
  deps.metrics.requests.inc({ route, code: String(status) });
  deps.metrics.duration.observe({ route }, (performance.now() - x.started) / 1000);
  if (status >= 400 && status < 500) deps.logger.info({ reqId: x.reqId, route, code: status }, 'client error');
}

/** A problem answer (RFC 9457), its `instance` the request id. */
export function sendProblem(
  x: Answerable,
  deps: Pick<PipelineDeps, 'metrics' | 'logger'>,
  p: Problem,
  headers: HeaderList = [],
): void {
  send(x, deps, p.status, headers, PROBLEM_CONTENT_TYPE, JSON.stringify({ ...p, instance: x.reqId }));
}

export function sendJson(x: Answerable, deps: Pick<PipelineDeps, 'metrics' | 'logger'>, status: number, body: string) {
  send(x, deps, status, [], JSON_CONTENT_TYPE, body);
}

/** The route for a method and path (query string stripped); `param` is still percent-encoded. */
function match(
  routes: readonly Route[],
  method: string | undefined,
  path: string,
): { route: Route; param: string } | undefined {
  // HEAD is answered as GET (node:http sends no body for it).
  const m = method === 'HEAD' ? 'GET' : method;
  for (const route of routes) {
    if (route.method !== m) continue;
    if (!route.param) {
      if (path === route.path) return { route, param: '' };
    } else if (path.length > route.path.length && path.startsWith(route.path)) {
      const param = path.slice(route.path.length);
      if (!param.includes('/')) return { route, param };
    }
  }
  return undefined;
}

/** The request listener serving `routes`, every one of them through the same steps. */
export function createPipeline(
  deps: PipelineDeps,
  routes: readonly Route[],
): (req: IncomingMessage, res: ServerResponse) => void {
  const { logger, tracing } = deps;

  // A throw is a bug: it fails this request alone (500, or the connection dropped when the
  // answer had begun) instead of the process.
  const failed = (x: Exchange, err: unknown): void => {
    logger.error({ reqId: x.reqId, err, route: x.route }, 'request failed');
    if (x.res.headersSent) x.res.destroy();
    else sendProblem(x, deps, problem(500, 'internal', 'Internal error'));
  };

  const run = (x: Exchange, route: Route, body: Buffer | undefined): void => {
    // Traced: the handler runs in the request span's context (its log lines carry the ids).
    if (x.trace) context.with(x.trace.ctx, handle, undefined, x, route, body);
    else handle(x, route, body);
  };

  const handle = (x: Exchange, route: Route, body: Buffer | undefined): void => {
    try {
      const done = route.handle(x, body);
      if (done) done.catch((err: unknown) => failed(x, err));
    } catch (err) {
      failed(x, err);
    }
  };

  const readBody = (x: Exchange, route: Route, spec: NonNullable<Route['body']>): void => {
    const { req } = x;
    const { headers } = req;
    const contentType = headers['content-type'];
    if (contentType === undefined) {
      const length = headers['content-length'];
      // No Content-Type and no body: the handler says what is missing. A body without one: 415.
      if (headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) {
        run(x, route, undefined);
        return;
      }
    }
    if (contentType === undefined || !spec.types.includes(mediaType(contentType))) {
      sendProblem(x, deps, unsupportedMediaType());
      return;
    }
    if (Number(headers['content-length']) > spec.limit) {
      tooLarge(x, spec.limit);
      return;
    }
    // Two closures per request, as few as reading a body takes; after 'end' or 'error' the stream
    // emits nothing more, so the listeners are left to go with the request.
    let first: Buffer | undefined;
    let chunks: Buffer[] | undefined;
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > spec.limit) {
        req.removeListener('data', onData);
        req.removeListener('end', onEnd);
        tooLarge(x, spec.limit);
        return;
      }
      if (!first) first = chunk;
      else if (chunks) chunks.push(chunk);
      else chunks = [first, chunk];
    };
    const onEnd = () => {
      run(x, route, chunks ? Buffer.concat(chunks, size) : (first ?? Buffer.alloc(0)));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', wentAway);
  };

  // The client may go on sending what we will not read: the connection closes after a 413.
  const tooLarge = (x: Exchange, limit: number): void =>
    sendProblem(x, deps, bodyTooLarge(limit), ['connection', 'close']);

  const refuse = (x: Exchange, route: Route, refusal: Refusal): void => {
    sendProblem(x, deps, refusal.problem, route.body ? [...refusal.headers, ...unreadBody(x.req)] : refusal.headers);
  };

  /** Admission's answer: the request goes on with its client, or gets the refusal. */
  const decided = (x: Exchange, route: Route, a: ApiClient | Refusal): void => {
    if (isRefusal(a)) refuse(x, route, a);
    else {
      x.client = a;
      admitted(x, route);
    }
  };

  const admitted = (x: Exchange, route: Route): void => {
    x.trace?.admitted(x.client?.id);
    if (route.body) readBody(x, route, route.body);
    else run(x, route, undefined);
  };

  const { onRequest } = deps;
  return (req, res) => {
    onRequest?.(req, res);
    const started = performance.now();
    deps.door.arrived(started);
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const found = match(routes, req.method, path);
    const x: Exchange = {
      req,
      res,
      reqId: requestId(req),
      route: found ? found.route.label : OTHER,
      started,
      client: undefined,
      param: '',
      query: q < 0 ? '' : url.slice(q + 1),
      answered: false,
      trace: tracing ? requestTrace(tracing, req, found ? found.route.label : OTHER, path) : undefined,
    };
    try {
      if (deps.draining()) {
        sendProblem(
          x,
          deps,
          problem(503, 'shutting-down', 'Shutting down', 'this instance is stopping; nothing was recorded, retry'),
          ['retry-after', String(deps.backpressure.retryAfterSeconds), 'connection', 'close'],
        );
        return;
      }
      if (!found) {
        sendProblem(x, deps, problem(404, 'not-found', 'Not found', `no route ${req.method} ${path}`));
        return;
      }
      const { route } = found;
      if (route.shed) {
        // Overload at the door: before auth and before the body, the cheapest answer there is.
        const why = deps.door.check(started);
        if (why) {
          sendShed(x, deps, why, deps.door.shedOne(started, req.socket));
          return;
        }
        deps.door.enter(res);
      }
      if (route.param) {
        try {
          x.param = decodeURIComponent(found.param);
        } catch {
          sendProblem(x, deps, problem(400, 'bad-request', 'Bad request', 'the path is not valid percent-encoding'));
          return;
        }
      }
      if (!route.auth) {
        admitted(x, route);
        return;
      }
      const token = bearerToken(req.headers.authorization);
      const now = admitNow(deps, token, route.shed);
      if (now !== undefined) {
        decided(x, route, now);
        return;
      }
      admitLater(
        deps,
        token as string,
        route.shed,
        (a) => {
          // Called from the key lookup's promise: guarded here too.
          try {
            decided(x, route, a);
          } catch (err) {
            failed(x, err);
          }
        },
        (err) => logger.error({ reqId: x.reqId, err }, 'api key lookup failed'),
      );
    } catch (err) {
      failed(x, err);
    }
  };
}

/** The HTTP server of the pipeline, with the slow-client guards. */
export function createIngestServer(
  config: PipelineDeps['config'],
  listener: (req: IncomingMessage, res: ServerResponse) => void,
): Server {
  const server = createServer(
    {
      // Slow clients (slowloris): Node answers 408 and closes the connection when the headers
      // (headersTimeout) or the whole request (requestTimeout) take too long; it checks open
      // connections every connectionsCheckingInterval.
      headersTimeout: config.ingestHeadersTimeoutMs,
      requestTimeout: config.ingestRequestTimeoutMs,
      connectionsCheckingInterval: Math.max(50, Math.min(5000, Math.floor(config.ingestHeadersTimeoutMs / 4))),
    },
    listener,
  );
  // Longer than the idle timeout of common load balancers (60 s), so they close first.
  server.keepAliveTimeout = 72_000;
  return server;
}
