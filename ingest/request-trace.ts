// One traced request (tracing on and the request sampled): a server span that continues the
// caller's `traceparent` or starts a trace, an `admission` child (door and auth) and an
// `accept` child (the order's write to Redis), and the `traceparent` answered to the caller.
// Sampling is decided first, from the configured sampler's rule (common/tracing.ts): an
// unsampled request gets no RequestTrace, so it does no tracing work at all and answers no
// `traceparent` (docs/design.md, "Tracing").
import type { IncomingMessage } from 'node:http';
import { type Context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Logger } from '../common/log.js';
import { remoteContext, rootTraceId, sampledBy, type Tracing, traceParentOf } from '../common/tracing.js';
import { parseTraceParent, type TraceParent } from '../common/traceparent.js';

/**
 * The request's trace when the sampler keeps it, undefined when not. A request without a valid
 * `traceparent` (an invalid or repeated one is ignored: a new trace starts, as W3C Trace Context
 * asks) is decided on a random word before any id is made (rootTraceId); one with a parent by
 * the rule (its sampled flag, for the parent-based samplers).
 */
export function requestTrace(
  tracing: Tracing,
  req: IncomingMessage,
  route: string,
  path: string,
): RequestTrace | undefined {
  const header = req.headers.traceparent;
  const { rule } = tracing.settings;
  const parent = header === undefined ? undefined : parseTraceParent(typeof header === 'string' ? header : undefined);
  if (parent) {
    if (!sampledBy(rule, parent.traceId, parent.flags)) return undefined;
    return new RequestTrace(tracing, req, route, path, parent, parent.traceId);
  }
  const traceId = rootTraceId(rule);
  return traceId === undefined ? undefined : new RequestTrace(tracing, req, route, path, undefined, traceId);
}

export class RequestTrace {
  /**
   * The server span's context: the request's handler runs in it, so its log lines carry the ids
   * (on Node before 24 only its synchronous part: common/trace-context.ts).
   */
  readonly ctx: Context;
  private readonly span: Span;
  private admission: Span | undefined;
  private accept: Span | undefined;

  constructor(
    private readonly tracing: Tracing,
    req: IncomingMessage,
    route: string,
    path: string,
    parent: TraceParent | undefined,
    traceId: string,
  ) {
    const parentCtx = parent ? remoteContext(parent) : ROOT_CONTEXT;
    // Route labels are `METHOD /path/:param`; requests no route matched have the method alone.
    const space = route.indexOf(' ');
    // A root span takes the trace id the decision was made on.
    if (!parent) tracing.ids.stage(traceId);
    this.span = tracing.tracer.startSpan(
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
    tracing.ids.stage(undefined);
    this.ctx = trace.setSpan(parentCtx, this.span);
    this.admission = tracing.tracer.startSpan('admission', undefined, this.ctx);
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
   * stream entry.
   */
  startAccept(): string {
    this.accept = this.tracing.tracer.startSpan('accept', { attributes: { 'db.system.name': 'redis' } }, this.ctx);
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
    const { span } = this;
    if (this.admission) {
      // Refused before admission completed (drain, door, auth, bad path).
      this.admission.setAttribute('http.response.status_code', status);
      this.admission.end();
      this.admission = undefined;
    }
    this.accepted('unanswered', undefined);
    span.setAttribute('http.response.status_code', status);
    if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
    if (logger.isLevelEnabled('debug')) {
      const sc = span.spanContext();
      logger.debug({ reqId, code: status, trace_id: sc.traceId, span_id: sc.spanId }, 'request answered');
    }
    return traceParentOf(span);
  }
}
