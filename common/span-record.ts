// An ended span as plain data, for the hop from the main thread to the export thread
// (trace-export.ts): what the OTLP encoding reads of a ReadableSpan and nothing else, so it
// clones cheaply, and the thread rebuilds a ReadableSpan from it for the SDK's exporter.
import {
  type Attributes,
  createTraceState,
  type HrTime,
  type Link,
  type SpanContext,
  type SpanKind,
  type SpanStatusCode,
} from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace';

interface ContextRecord {
  traceId: string;
  spanId: string;
  flags: number;
  /** The W3C tracestate, serialised; absent when there is none. */
  state?: string;
  remote?: boolean;
}

export interface SpanRecord {
  ctx: ContextRecord;
  parent?: ContextRecord;
  name: string;
  kind: SpanKind;
  start: HrTime;
  end: HrTime;
  duration: HrTime;
  status: SpanStatusCode;
  message?: string;
  attributes: Attributes;
  events?: { name: string; time: HrTime; attributes?: Attributes; dropped?: number }[];
  links?: { ctx: ContextRecord; attributes?: Attributes; dropped?: number }[];
  dropped: [attributes: number, events: number, links: number];
  scope: string;
  scopeVersion?: string;
  scopeSchemaUrl?: string;
}

function contextRecord(sc: SpanContext): ContextRecord {
  const r: ContextRecord = { traceId: sc.traceId, spanId: sc.spanId, flags: sc.traceFlags };
  const state = sc.traceState?.serialize();
  if (state) r.state = state;
  if (sc.isRemote) r.remote = true;
  return r;
}

function spanContext(r: ContextRecord): SpanContext {
  return {
    traceId: r.traceId,
    spanId: r.spanId,
    traceFlags: r.flags,
    ...(r.state !== undefined ? { traceState: createTraceState(r.state) } : {}),
    ...(r.remote ? { isRemote: true } : {}),
  };
}

/** The span as plain data (main thread). */
export function toRecord(span: ReadableSpan): SpanRecord {
  const r: SpanRecord = {
    ctx: contextRecord(span.spanContext()),
    name: span.name,
    kind: span.kind,
    start: span.startTime,
    end: span.endTime,
    duration: span.duration,
    status: span.status.code,
    attributes: span.attributes,
    dropped: [span.droppedAttributesCount, span.droppedEventsCount, span.droppedLinksCount],
    scope: span.instrumentationScope.name,
  };
  if (span.parentSpanContext) r.parent = contextRecord(span.parentSpanContext);
  if (span.status.message !== undefined) r.message = span.status.message;
  if (span.events.length > 0)
    r.events = span.events.map((e) => ({
      name: e.name,
      time: e.time,
      ...(e.attributes ? { attributes: e.attributes } : {}),
      ...(e.droppedAttributesCount ? { dropped: e.droppedAttributesCount } : {}),
    }));
  if (span.links.length > 0)
    r.links = span.links.map((l) => ({
      ctx: contextRecord(l.context),
      ...(l.attributes ? { attributes: l.attributes } : {}),
      ...(l.droppedAttributesCount ? { dropped: l.droppedAttributesCount } : {}),
    }));
  const { version, schemaUrl } = span.instrumentationScope;
  if (version !== undefined) r.scopeVersion = version;
  if (schemaUrl !== undefined) r.scopeSchemaUrl = schemaUrl;
  return r;
}

type Scope = ReadableSpan['instrumentationScope'];

/**
 * The span rebuilt from its record (export thread). `scopes` keeps one scope object per name
 * and version, as the encoding groups spans by scope.
 */
export function fromRecord(r: SpanRecord, resource: Resource, scopes: Map<string, Scope>): ReadableSpan {
  const key = `${r.scope}@${r.scopeVersion ?? ''}:${r.scopeSchemaUrl ?? ''}`;
  let scope = scopes.get(key);
  if (!scope) {
    scope = {
      name: r.scope,
      ...(r.scopeVersion !== undefined ? { version: r.scopeVersion } : {}),
      ...(r.scopeSchemaUrl !== undefined ? { schemaUrl: r.scopeSchemaUrl } : {}),
    };
    scopes.set(key, scope);
  }
  const ctx = spanContext(r.ctx);
  const events: TimedEvent[] = (r.events ?? []).map((e) => ({
    name: e.name,
    time: e.time,
    ...(e.attributes ? { attributes: e.attributes } : {}),
    ...(e.dropped ? { droppedAttributesCount: e.dropped } : {}),
  }));
  const links: Link[] = (r.links ?? []).map((l) => ({
    context: spanContext(l.ctx),
    ...(l.attributes ? { attributes: l.attributes } : {}),
    ...(l.dropped ? { droppedAttributesCount: l.dropped } : {}),
  }));
  return {
    name: r.name,
    kind: r.kind,
    spanContext: () => ctx,
    ...(r.parent ? { parentSpanContext: spanContext(r.parent) } : {}),
    startTime: r.start,
    endTime: r.end,
    duration: r.duration,
    ended: true,
    status: { code: r.status, ...(r.message !== undefined ? { message: r.message } : {}) },
    attributes: r.attributes,
    events,
    links,
    resource,
    instrumentationScope: scope,
    droppedAttributesCount: r.dropped[0],
    droppedEventsCount: r.dropped[1],
    droppedLinksCount: r.dropped[2],
  };
}
