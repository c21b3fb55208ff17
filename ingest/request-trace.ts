// One traced request (tracing on only; with it off the pipeline holds no RequestTrace and does
// no tracing work): a server span that continues the caller's `traceparent` or starts a trace,
// an `admission` child (door and auth) and an `accept` child (the order's write to Redis), and
// the `traceparent` answered to the caller.
import type { IncomingMessage } from 'node:http';
import {
  type Context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { Logger } from '../common/log.js';
import { remoteContext, sampled, traceParentOf } from '../common/tracing.js';
import { parseTraceParent } from '../common/traceparent.js';

export class RequestTrace {
  /** The server span's context: handlers of a sampled request run in it (their log lines carry its ids). */
  readonly ctx: Context;
  /**
   * The sampler kept the request. An unsampled one gets no child spans, no `t` and no context
   * switch around its handler: at a low ratio almost every request takes this cheap path.
   */
  readonly sampled: boolean;
  private readonly span: Span;
  private admission: Span | undefined;
  private accept: Span | undefined;

  constructor(
    private readonly tracer: Tracer,
    req: IncomingMessage,
    route: string,
    path: string,
  ) {
    // An invalid or repeated traceparent is ignored: a new trace starts (W3C Trace Context).
    const header = req.headers.traceparent;
    const parent = parseTraceParent(typeof header === 'string' ? header : undefined);
    const parentCtx = parent ? remoteContext(parent) : ROOT_CONTEXT;
    // Route labels are `METHOD /path/:param`; requests no route matched have the method alone.
    const space = route.indexOf(' ');
    this.span = tracer.startSpan(
      space > 0 ? route : (req.method ?? 'HTTP'),
      {
        kind: SpanKind.SERVER,
        attributes: {
          'http.request.method': req.method ?? '',
          'http.route': space > 0 ? route.slice(space + 1) : '',
          'url.path': path,
        },
      },
      parentCtx,
    );
    this.ctx = trace.setSpan(parentCtx, this.span);
    this.sampled = sampled(this.span);
    if (this.sampled) this.admission = tracer.startSpan('admission', undefined, this.ctx);
  }

  /** Door and auth passed (or the route needs neither). */
  admitted(client: string | undefined): void {
    if (!this.admission) return;
    if (client !== undefined) this.admission.setAttribute('surge.client', client);
    this.admission.end();
    this.admission = undefined;
  }

  /**
   * The order's write begins: starts the `accept` span and returns its `traceparent` for the
   * stream entry, or undefined when the trace is not sampled (the entry then carries none).
   */
  startAccept(): string | undefined {
    if (!this.sampled) return undefined;
    this.accept = this.tracer.startSpan('accept', { attributes: { 'db.system.name': 'redis' } }, this.ctx);
    return traceParentOf(this.accept);
  }

  /** The write's outcome (`accepted`, `replayed`, `mismatch`, `pending`, `unavailable`…) and shard. */
  accepted(outcome: string, shard: number | undefined): void {
    const span = this.accept;
    if (!span) return;
    span.setAttribute('surge.outcome', outcome);
    if (shard !== undefined) span.setAttribute('surge.shard', shard);
    if (outcome === 'unavailable') span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
    this.accept = undefined;
  }

  /**
   * Ends the request's spans with its answer's status and logs the answer at debug level with
   * the trace's ids; returns the `traceparent` to answer with.
   */
  answered(status: number, logger: Logger, reqId: string): string {
    if (this.admission) {
      // Refused before admission completed (drain, door, auth, bad path).
      this.admission.setAttribute('http.response.status_code', status);
      this.admission.end();
      this.admission = undefined;
    }
    this.accepted('unanswered', undefined);
    this.span.setAttribute('http.response.status_code', status);
    if (status >= 500) this.span.setStatus({ code: SpanStatusCode.ERROR });
    this.span.end();
    if (logger.isLevelEnabled('debug')) {
      const sc = this.span.spanContext();
      logger.debug({ reqId, code: status, trace_id: sc.traceId, span_id: sc.spanId }, 'request answered');
    }
    return traceParentOf(this.span);
  }
}
