// One traced request (tracing on only; with it off the pipeline holds no RequestTrace and does
// no tracing work): a server span that continues the caller's `traceparent` or starts a trace,
// an `admission` child (door and auth) and an `accept` child (the order's write to Redis), and
// the `traceparent` answered to the caller. Sampling is decided first, from the configured
// sampler's rule (common/tracing.ts, sampledBy): an unsampled request makes no SDK call at all
// and only answers a `traceparent` with the sampled flag clear, as a non-recording span would.
import type { IncomingMessage } from 'node:http';
import { type Context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Logger } from '../common/log.js';
import { remoteContext, sampledBy, type Tracing, traceParentOf } from '../common/tracing.js';
import { formatTraceParent, parseTraceParent } from '../common/traceparent.js';

export class RequestTrace {
  /** The server span's context (sampled requests only): their handlers run in it (log lines carry its ids). */
  readonly ctx: Context | undefined;
  /**
   * The sampler kept the request. An unsampled one has no span, no `t` and no context switch
   * around its handler: at a low ratio almost every request takes this cheap path.
   */
  readonly sampled: boolean;
  private readonly span: Span | undefined;
  private admission: Span | undefined;
  private accept: Span | undefined;
  /** The trace an unsampled request belongs to (the caller's, or a new one). */
  private readonly traceId: string;

  constructor(
    private readonly tracing: Tracing,
    req: IncomingMessage,
    route: string,
    path: string,
  ) {
    // An invalid or repeated traceparent is ignored: a new trace starts (W3C Trace Context).
    const header = req.headers.traceparent;
    const parent = parseTraceParent(typeof header === 'string' ? header : undefined);
    const ids = tracing.ids;
    this.traceId = parent ? parent.traceId : ids.generateTraceId();
    this.sampled = sampledBy(tracing.settings.rule, this.traceId, parent?.flags);
    if (!this.sampled) {
      this.ctx = undefined;
      this.span = undefined;
      return;
    }
    const parentCtx = parent ? remoteContext(parent) : ROOT_CONTEXT;
    // Route labels are `METHOD /path/:param`; requests no route matched have the method alone.
    const space = route.indexOf(' ');
    // A root span takes the trace id the decision was made on.
    if (!parent) ids.stage(this.traceId);
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
    ids.stage(undefined);
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
   * stream entry, or undefined when the trace is not sampled (the entry then carries none).
   */
  startAccept(): string | undefined {
    if (!this.sampled) return undefined;
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
    const span = this.span;
    if (!span) {
      // Unsampled: a span id of its own and the sampled flag clear, as the SDK's non-recording span.
      const tp = { traceId: this.traceId, spanId: this.tracing.ids.generateSpanId(), flags: 0 };
      if (logger.isLevelEnabled('debug'))
        logger.debug({ reqId, code: status, trace_id: tp.traceId, span_id: tp.spanId }, 'request answered');
      return formatTraceParent(tp);
    }
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
