// A batch's spans, made on the main thread from what the apply step recorded (workers/steps.ts):
// one span per batch, linked to each order's context (the `accept` span of the request that
// wrote it: one batch, many parents, so links and not a parent), its SQL steps as child spans,
// its retries, splits and dead letters as events, and the ack as a child run in the batch's
// context so its log lines carry the batch's ids. Only batches with a traced entry get here.
import { context, type Link, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import type { Histogram } from 'prom-client';
import { ENTRY_FIELD, entryField } from '../common/entry.js';
import { parseTraceParent } from '../common/traceparent.js';
import type { Logger } from '../common/log.js';
import { linkTo, type Tracing } from '../common/tracing.js';
import type { ApplyTask, BatchOutcome, TaskEntry } from './apply.js';
import type { BatchSteps } from './steps.js';

export class BatchTracer {
  private readonly tracer: Tracing['tracer'];
  constructor(
    private readonly tracing: Pick<Tracing, 'tracer' | 'hold'>,
    private readonly logger: Logger,
  ) {
    this.tracer = tracing.tracer;
  }

  /**
   * The trace id of each end-to-end time the batch recorded ('' for an order without one): the
   * exemplars of the end-to-end histogram.
   */
  traceIds(task: ApplyTask, outcome: BatchOutcome): string[] {
    const committed = outcome.steps?.committed;
    if (!committed) return [];
    const traceOf = new Map<string, string>();
    for (const e of task.entries) {
      const p = parseTraceParent(entryField(e.fields, ENTRY_FIELD.trace));
      if (p) traceOf.set(e.id, p.traceId);
    }
    return committed.map((id) => traceOf.get(id) ?? '');
  }

  /** Observes end-to-end times with exemplar histograms: each with its trace id when it has one. */
  static observeEndToEnd(histogram: Histogram, endToEndMs: readonly number[], traces: readonly string[]): void {
    endToEndMs.forEach((ms, i) => {
      const traceId = traces[i];
      histogram.observe({
        value: Math.max(0, ms) / 1000,
        ...(traceId ? { exemplarLabels: { trace_id: traceId } } : {}),
      });
    });
  }

  /** True when an entry carries a trace context: only then does the apply step record its steps. */
  wants(entries: readonly TaskEntry[]): boolean {
    for (const e of entries) if (entryField(e.fields, ENTRY_FIELD.trace) !== undefined) return true;
    return false;
  }

  /**
   * Emits the batch's spans from its recorded steps; runs `ack` (when given) as the batch's
   * last child span, in the batch's context.
   */
  async traced<T>(task: ApplyTask, outcome: BatchOutcome & { steps: BatchSteps }, ack?: () => Promise<T>) {
    const { steps, stats } = outcome;
    const links: Link[] = [];
    const linked: string[] = [];
    for (const e of task.entries) {
      const link = linkTo(entryField(e.fields, ENTRY_FIELD.trace));
      if (!link) continue;
      link.attributes = { 'messaging.message.id': e.id };
      links.push(link);
      linked.push(link.context.traceId);
    }
    const span = this.tracer.startSpan(
      'apply batch',
      {
        kind: SpanKind.CONSUMER,
        startTime: steps.start,
        links,
        attributes: {
          'messaging.system': 'redis',
          'messaging.operation.type': 'process',
          'messaging.destination.name': task.stream,
          'messaging.batch.message_count': task.entries.length,
          'surge.inserted': stats.inserted,
          'surge.duplicate': stats.duplicate,
          'surge.rejected': stats.rejected,
          'surge.dead_lettered': stats.deadLettered,
          'surge.commits': stats.commits,
        },
      },
      ROOT_CONTEXT,
    );
    const ctx = trace.setSpan(ROOT_CONTEXT, span);
    for (const s of steps.steps) {
      const child = this.tracer.startSpan(
        s.name,
        { startTime: s.start, attributes: { 'db.system.name': 'postgresql', 'surge.orders': s.orders } },
        ctx,
      );
      if (s.error !== undefined) child.setStatus({ code: SpanStatusCode.ERROR, message: s.error });
      child.end(s.end || steps.end);
    }
    for (const e of steps.events) span.addEvent(e.name, e.attributes, e.at);
    if (outcome.gaveUp) {
      span.addEvent('gave_up', { 'db.response.status_code': outcome.gaveUp.sqlstate }, steps.end);
      span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.gaveUp.message });
    }
    try {
      if (ack) return await this.ack(ctx, span, linked, ack);
      span.end(steps.end);
      return undefined;
    } finally {
      if (span.isRecording()) span.end();
    }
  }

  private ack<T>(ctx: ReturnType<typeof trace.setSpan>, span: Span, linked: string[], ack: () => Promise<T>) {
    const ackSpan = this.tracer.startSpan('ack', { attributes: { 'db.system.name': 'redis' } }, ctx);
    // The ack's continuations run in its context until it is done (common/trace-context.ts).
    const release = this.tracing.hold();
    return context.with(trace.setSpan(ctx, ackSpan), async () => {
      try {
        return await ack();
      } finally {
        ackSpan.end();
        this.logger.debug({ linked_trace_ids: linked, entries: linked.length }, 'traced batch applied');
        span.end();
        release();
      }
    });
  }
}
