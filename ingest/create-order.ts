// POST /v1/orders on node:http directly. The fastify app (app.ts) serves every other route; its
// server hands this handler the requests of this one route. The answers are the same: the
// checks, problems, headers and order are the ones the fastify route had (auth and load
// shedding, Content-Type → 415, body limit → 413, Idempotency-Key, the body), shared with the
// fastify routes through answers.ts.
//
// Why leave the framework for this route: it takes the surge, and fastify alone cost a large
// share of the overhead the whole ingest may add to a bare node:http server; serving the route
// here lowers the main thread's CPU per request (docs/ingest.md, "Why the hot path looks as it
// does"; figures in bench/results/HISTORY.md).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../common/log.js';
import type { IngestMetrics } from '../metrics/definitions.js';
import {
  type AdmissionDeps,
  admit,
  answerFor,
  bodyTooLarge,
  ORDER_RESULT,
  requestId,
  ROUTES,
  SINGLE_BODY_LIMIT,
  unsupportedMediaType,
} from './answers.js';
import type { OrderIntake } from './intake.js';
import { keyProblem, type Problem, problem } from './requests.js';

export interface CreateOrderDeps extends AdmissionDeps {
  intake: OrderIntake;
  metrics: Pick<IngestMetrics, 'orders' | 'requests' | 'duration'>;
  logger: Logger;
  /** True once a graceful stop began: new requests get 503 and `Connection: close`. */
  draining: () => boolean;
}

/** The Content-Types whose bodies the order routes read (app.ts registers the same for :batch). */
export const BODY_TYPES: readonly string[] = ['application/json', 'application/x-ndjson', 'application/jsonl'];

const JSON_CONTENT_TYPE = 'application/json; charset=utf-8';
const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';
const PATH = '/v1/orders';

/** `type/subtype` of a Content-Type, lowercased, without parameters. */
function mediaType(header: string): string {
  const semi = header.indexOf(';');
  return (semi < 0 ? header : header.slice(0, semi)).trim().toLowerCase();
}

/** True for the requests createOrderHandler serves: POST /v1/orders, with or without a query string. */
export function isCreateOrder(req: IncomingMessage): boolean {
  const url = req.url;
  return (
    req.method === 'POST' &&
    url !== undefined &&
    url.startsWith(PATH) &&
    (url.length === PATH.length || url.charCodeAt(PATH.length) === 0x3f)
  );
}

export function createOrderHandler(deps: CreateOrderDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const { intake, metrics, logger, backpressure } = deps;
  const route = ROUTES.create;

  return (req, res) => {
    const started = performance.now();
    const reqId = requestId(req);

    // Every answer goes through here: the request metrics and the info line of a 4xx, as the
    // fastify routes' LogController (app.ts) does for theirs.
    // Headers as a flat list (name, value, …): writeHead takes it without walking an object.
    const respond = (status: number, headers: readonly string[], contentType: string, body: string): void => {
      const head = ['x-request-id', reqId];
      for (const h of headers) head.push(h);
      head.push('content-type', contentType, 'content-length', String(Buffer.byteLength(body)));
      res.writeHead(status, head);
      res.end(body);
      metrics.requests.inc({ route, code: String(status) });
      metrics.duration.observe({ route }, (performance.now() - started) / 1000);
      if (status >= 400 && status < 500) logger.info({ reqId, route, code: status }, 'client error');
    };
    const refuse = (p: Problem, headers: Record<string, string> = {}): void =>
      respond(p.status, Object.entries(headers).flat(), PROBLEM_CONTENT_TYPE, JSON.stringify(p));
    const invalid = (p: Problem): void => {
      metrics.orders.inc({ result: 'invalid' });
      refuse(p);
    };
    // A throw here is a bug: it fails this request alone (500, or the connection dropped when
    // the answer had begun), as fastify's error handler did, instead of the process.
    const failed = (err: unknown): void => {
      logger.error({ reqId, err }, 'request failed');
      if (res.headersSent) res.destroy();
      else refuse(problem(500, 'internal', 'Internal error'));
    };

    if (deps.draining()) {
      refuse(problem(503, 'shutting-down', 'Shutting down', 'this instance is stopping; nothing was recorded, retry'), {
        'retry-after': String(backpressure.retryAfterSeconds),
        connection: 'close',
      });
      return;
    }

    // Once the body is read: the Idempotency-Key, then the body itself (the order of the checks
    // the fastify route had).
    const write = (clientId: string, body: Buffer | undefined): void => {
      const rawKey = req.headers['idempotency-key'];
      const badKey = Array.isArray(rawKey)
        ? problem(400, 'invalid-idempotency-key', 'Invalid Idempotency-Key', 'send exactly one Idempotency-Key header')
        : (keyProblem(rawKey, 'Idempotency-Key') ??
          (body ? undefined : problem(400, 'malformed-json', 'Malformed JSON', 'the request has no JSON body')));
      if (badKey || !body) {
        invalid(badKey as Problem);
        return;
      }
      const key = rawKey as string;
      intake.submit(body, clientId, key).then((outcome) => {
        try {
          if (outcome.kind === 'invalid') {
            invalid(outcome.problem);
            return;
          }
          metrics.orders.inc({ result: ORDER_RESULT[outcome.kind] });
          if (outcome.kind === 'unavailable')
            logger.error({ reqId, err: outcome.err, reason: outcome.reason }, 'order not accepted');
          const answer = answerFor(outcome, key, backpressure.retryAfterSeconds);
          respond(
            answer.status,
            answer.headers,
            answer.problem ? PROBLEM_CONTENT_TYPE : JSON_CONTENT_TYPE,
            answer.body,
          );
        } catch (err) {
          failed(err);
        }
      }, failed);
    };

    const readBody = (clientId: string): void => {
      const { headers } = req;
      const contentType = headers['content-type'];
      if (contentType === undefined) {
        const length = headers['content-length'];
        // No Content-Type and no body: the key is checked, then "no JSON body". A body without one: 415.
        if (headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) {
          write(clientId, undefined);
          return;
        }
      }
      if (contentType === undefined || !BODY_TYPES.includes(mediaType(contentType))) {
        refuse(unsupportedMediaType());
        return;
      }
      // The client may go on sending what we will not read: the connection closes after a 413.
      const tooLarge = () => refuse(bodyTooLarge(SINGLE_BODY_LIMIT), { connection: 'close' });
      if (Number(headers['content-length']) > SINGLE_BODY_LIMIT) {
        tooLarge();
        return;
      }
      let first: Buffer | undefined;
      let chunks: Buffer[] | undefined;
      let size = 0;
      const stop = () => {
        req.removeListener('data', onData);
        req.removeListener('end', onEnd);
        req.removeListener('error', onError);
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > SINGLE_BODY_LIMIT) {
          stop();
          tooLarge();
          return;
        }
        if (!first) first = chunk;
        else if (chunks) chunks.push(chunk);
        else chunks = [first, chunk];
      };
      const onEnd = () => {
        stop();
        write(clientId, chunks ? Buffer.concat(chunks, size) : (first ?? Buffer.alloc(0)));
      };
      // The client went away mid-body (aborted, reset): nothing to answer, nothing was written.
      const onError = () => stop();
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('error', onError);
    };

    try {
      admit(
        deps,
        req.headers.authorization,
        true,
        (client, refusal) => {
          // Called at once, or later from the key lookup's promise: guarded either way.
          try {
            if (refusal) refuse(refusal.problem, refusal.headers);
            else readBody((client as NonNullable<typeof client>).id);
          } catch (err) {
            failed(err);
          }
        },
        (err) => logger.error({ reqId, err }, 'api key lookup failed'),
      );
    } catch (err) {
      failed(err);
    }
  };
}
