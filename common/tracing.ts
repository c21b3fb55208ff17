// OpenTelemetry tracing, set up from the standard OTEL_* variables and off unless they ask for
// it. Only the main thread of a process traces: worker threads record what they did as plain
// data (workers/steps.ts), and the main thread turns it into spans, so each process has one
// batch processor to flush on stop. The OTLP exporter behind it encodes and sends on a thread
// of its own (trace-export.ts; docs/design.md, "Tracing").
import {
  type Attributes,
  type Context,
  context,
  type Link,
  ROOT_CONTEXT,
  type Span,
  type SpanKind,
  type Tracer,
  TraceFlags,
  trace,
} from '@opentelemetry/api';
import { defaultResource, envDetector, detectResources, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  type IdGenerator,
  ParentBasedSampler,
  RandomIdGenerator,
  type Sampler,
  SamplingDecision,
  type SamplingResult,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import { TracedWorkContextManager } from './trace-context.js';
import { ThreadSpanExporter } from './trace-export.js';
import { formatTraceParent, parseTraceParent, type TraceParent } from './traceparent.js';

type Env = Readonly<Record<string, string | undefined>>;

/** What the OTEL_* variables ask for. */
export interface TracingSettings {
  exporter: 'otlp' | 'console';
  serviceName: string;
  sampler: Sampler;
  /** The same sampler as a rule the ingest fast path applies without the SDK (sampledBy). */
  rule: SamplingRule;
  /** The batch span processor's OTEL_BSP_* settings. */
  batch: BatchSettings;
}

export interface BatchSettings {
  /** OTEL_BSP_SCHEDULE_DELAY: how long finished spans wait before they are sent, ms. */
  scheduledDelayMillis: number;
  /** OTEL_BSP_MAX_EXPORT_BATCH_SIZE: spans per export; a full batch is sent without waiting. */
  maxExportBatchSize: number;
  /** OTEL_BSP_MAX_QUEUE_SIZE: spans waiting to be sent, beyond which new ones are dropped. */
  maxQueueSize: number;
  /** OTEL_BSP_EXPORT_TIMEOUT: ms an export may take. */
  exportTimeoutMillis: number;
}

export class TracingConfigError extends Error {}

function ratio(arg: string | undefined): number {
  if (arg === undefined || arg.trim() === '') return 1;
  const r = Number(arg);
  if (!Number.isFinite(r) || r < 0 || r > 1)
    throw new TracingConfigError(
      `OTEL_TRACES_SAMPLER_ARG: expected a ratio between 0 and 1, got ${JSON.stringify(arg)}`,
    );
  return r;
}

/**
 * A sampler's decision for a span with no links, as plain data: a parent-based sampler follows
 * a valid parent's sampled flag; otherwise the trace id decides (TraceIdRatioBasedSampler's
 * rule: always_on and always_off are the bounds 2^32 and 0).
 */
export interface SamplingRule {
  parentBased: boolean;
  /** A trace id is sampled when the XOR of its four 32-bit words is below this. */
  upperBound: number;
}

const ALL = 0x100000000;

function ratioBound(r: number): number {
  return r === 1 ? ALL : Math.floor(r * 0xffffffff);
}

/** OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, as the specification names them. */
function samplerFrom(env: Env): { sampler: Sampler; rule: SamplingRule } {
  const name = (env.OTEL_TRACES_SAMPLER ?? 'parentbased_always_on').trim().toLowerCase();
  const arg = env.OTEL_TRACES_SAMPLER_ARG;
  switch (name) {
    case 'always_on':
      return { sampler: new AlwaysOnSampler(), rule: { parentBased: false, upperBound: ALL } };
    case 'always_off':
      return { sampler: new AlwaysOffSampler(), rule: { parentBased: false, upperBound: 0 } };
    case 'traceidratio': {
      const r = ratio(arg);
      return { sampler: new TraceIdRatioBasedSampler(r), rule: { parentBased: false, upperBound: ratioBound(r) } };
    }
    case 'parentbased_always_on':
      return {
        sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
        rule: { parentBased: true, upperBound: ALL },
      };
    case 'parentbased_always_off':
      return {
        sampler: new ParentBasedSampler({ root: new AlwaysOffSampler() }),
        rule: { parentBased: true, upperBound: 0 },
      };
    case 'parentbased_traceidratio': {
      const r = ratio(arg);
      return {
        sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(r) }),
        rule: { parentBased: true, upperBound: ratioBound(r) },
      };
    }
    default:
      throw new TracingConfigError(
        `OTEL_TRACES_SAMPLER: ${JSON.stringify(name)} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio`,
      );
  }
}

/**
 * The rule's decision for a span of trace `traceId` (32 lowercase hex digits) whose parent has
 * `parentFlags` (undefined: no valid parent). Equal to the SDK sampler's for a span without links.
 */
export function sampledBy(rule: SamplingRule, traceId: string, parentFlags: number | undefined): boolean {
  if (rule.parentBased && parentFlags !== undefined) return (parentFlags & TraceFlags.SAMPLED) !== 0;
  if (rule.upperBound >= ALL) return true;
  if (rule.upperBound === 0) return false;
  let acc = 0;
  for (let i = 0; i < 32; i += 8) acc = (acc ^ Number.parseInt(traceId.slice(i, i + 8), 16)) >>> 0;
  return acc < rule.upperBound;
}

const hex8 = (n: number): string => n.toString(16).padStart(8, '0');
const word = (): number => (Math.random() * ALL) >>> 0;

/**
 * A new trace for a request without a valid parent: its id when the rule samples it, undefined
 * when not. The decision comes first and costs one random word: the ratio test compares the
 * XOR of an id's four 32-bit words with the bound, so that XOR is drawn, and only a sampled
 * trace draws three more words and fixes the fourth to match (every id with a sampled XOR is
 * equally likely, as when the id is drawn whole and then tested).
 */
export function rootTraceId(rule: SamplingRule): string | undefined {
  if (rule.upperBound === 0) return undefined;
  const x = word();
  if (x >= rule.upperBound) return undefined;
  for (;;) {
    const a = word();
    const b = word();
    const c = word();
    const d = (x ^ a ^ b ^ c) >>> 0;
    // All zero is not a valid trace id (and has odds of 2^-128).
    if ((a | b | c | d) !== 0) return hex8(d) + hex8(a) + hex8(b) + hex8(c);
  }
}

/**
 * The SDK's id generator, with one addition: the fast path that chose a root span's trace id to
 * decide its sampling hands it over (stage) so the span the SDK then starts carries that id.
 */
export class TraceIds implements IdGenerator {
  private readonly random = new RandomIdGenerator();
  private staged: string | undefined;
  private handed: string | undefined;
  stage(traceId: string | undefined): void {
    this.staged = traceId;
  }
  generateTraceId(): string {
    const id = this.staged;
    if (id === undefined) return this.random.generateTraceId();
    this.staged = undefined;
    this.handed = id;
    return id;
  }
  generateSpanId(): string {
    return this.random.generateSpanId();
  }
  /** True, once, for the trace id just handed over: the fast path sampled it already. */
  decided(traceId: string): boolean {
    if (this.handed !== traceId) return false;
    this.handed = undefined;
    return true;
  }
}

/**
 * The tracing the environment asks for, or undefined when it is off. On when
 * OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or
 * OTEL_TRACES_EXPORTER names `otlp` or `console`; off when OTEL_SDK_DISABLED is `true` or
 * OTEL_TRACES_EXPORTER is `none`. The specification's default exporter is `otlp`, but a
 * process that was told nothing sends nothing: tracing stays off until configured.
 */
export function tracingSettings(env: Env, defaultServiceName: string): TracingSettings | undefined {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return undefined;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '')
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  let exporter: TracingSettings['exporter'] | undefined;
  if (exporters.includes('none')) return undefined;
  for (const e of exporters) {
    if (e !== 'otlp' && e !== 'console')
      throw new TracingConfigError(`OTEL_TRACES_EXPORTER: ${JSON.stringify(e)} is not one of otlp, console, none`);
    exporter ??= e;
  }
  if (exporter === undefined && (env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT))
    exporter = 'otlp';
  if (exporter === undefined) return undefined;
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (exporter === 'otlp' && protocol !== undefined && protocol.trim() !== 'http/json')
    throw new TracingConfigError(
      `OTEL_EXPORTER_OTLP_PROTOCOL: Surge sends OTLP over HTTP as JSON (http/json), not ${JSON.stringify(protocol)}`,
    );
  return {
    exporter,
    serviceName: env.OTEL_SERVICE_NAME?.trim() || defaultServiceName,
    ...samplerFrom(env),
    batch: batchSettings(env),
  };
}

/** The OTEL_BSP_* variables, with the specification's defaults. */
function batchSettings(env: Env): BatchSettings {
  const read = (name: string, fallback: number, min: number): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min)
      throw new TracingConfigError(`${name}: expected an integer of at least ${min}, got ${JSON.stringify(raw)}`);
    return n;
  };
  const batch = {
    scheduledDelayMillis: read('OTEL_BSP_SCHEDULE_DELAY', 5000, 0),
    maxExportBatchSize: read('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512, 1),
    maxQueueSize: read('OTEL_BSP_MAX_QUEUE_SIZE', 2048, 1),
    exportTimeoutMillis: read('OTEL_BSP_EXPORT_TIMEOUT', 30000, 1),
  };
  if (batch.maxExportBatchSize > batch.maxQueueSize)
    throw new TracingConfigError('OTEL_BSP_MAX_EXPORT_BATCH_SIZE: must not exceed OTEL_BSP_MAX_QUEUE_SIZE');
  return batch;
}

/**
 * Samples a span that links to a sampled context, whatever the configured sampler says of it
 * as a root: a batch span is a root (its orders are links, not parents), and at a low ratio it
 * would otherwise mostly be dropped while the requests it links to were kept. A root whose
 * trace the request fast path decided (TraceIds) is sampled without asking the sampler again.
 */
const SAMPLED: SamplingResult = { decision: SamplingDecision.RECORD_AND_SAMPLED };

class LinkAwareSampler implements Sampler {
  constructor(
    private readonly inner: Sampler,
    private readonly ids: TraceIds,
  ) {}
  shouldSample(
    ctx: Context,
    traceId: string,
    name: string,
    kind: SpanKind,
    attributes: Attributes,
    links: Link[],
  ): SamplingResult {
    if (this.ids.decided(traceId)) return SAMPLED;
    for (const l of links) if ((l.context.traceFlags & TraceFlags.SAMPLED) !== 0) return SAMPLED;
    return this.inner.shouldSample(ctx, traceId, name, kind, attributes, links);
  }
  toString(): string {
    return `LinkAware{${this.inner.toString()}}`;
  }
}

/** A process's tracing, once started. */
export interface Tracing {
  tracer: Tracer;
  settings: TracingSettings;
  /** The provider's id generator (the request fast path hands its root trace ids to it). */
  ids: TraceIds;
  /**
   * Keeps span contexts propagating to async continuations until the returned function is
   * called: traced work that goes on after its `context.with` returns holds it (trace-context.ts).
   */
  hold(): () => void;
  /** pino's mixin: trace_id and span_id of the active span, when there is one. */
  logMixin(): Record<string, string>;
  /** Sends what is buffered and stops. */
  shutdown(): Promise<void>;
}

let active: Tracing | undefined;

/** The process's tracing, or undefined when it is off. */
export function activeTracing(): Tracing | undefined {
  return active;
}

/**
 * Starts tracing when the environment asks for it (tracingSettings), once per process.
 * `exporter` replaces the one the settings name (tests).
 */
export function startTracing(defaultServiceName: string, env: Env = process.env, exporter?: SpanExporter) {
  if (active) return active;
  const settings = tracingSettings(env, defaultServiceName);
  if (!settings) return undefined;
  const resource = defaultResource()
    .merge(detectResources({ detectors: [envDetector] }))
    .merge(resourceFromAttributes({ 'service.name': settings.serviceName }));
  const spanExporter =
    exporter ?? (settings.exporter === 'console' ? new ConsoleSpanExporter() : new ThreadSpanExporter(resource, env));
  const ids = new TraceIds();
  const provider = new TracerProvider({
    resource,
    idGenerator: ids,
    sampler: new LinkAwareSampler(settings.sampler, ids),
    spanProcessors: [new BatchSpanProcessor({ exporter: spanExporter, ...settings.batch })],
  });
  const contextManager = new TracedWorkContextManager();
  contextManager.enable();
  context.setGlobalContextManager(contextManager);
  const tracing: Tracing = {
    tracer: provider.getTracer('surge'),
    settings,
    ids,
    hold: () => contextManager.hold(),
    logMixin(): Record<string, string> {
      const span = trace.getSpan(context.active());
      // A new object each time: pino merges the line's own fields into it.
      if (!span) return {};
      const sc = span.spanContext();
      return { trace_id: sc.traceId, span_id: sc.spanId };
    },
    async shutdown() {
      await provider.shutdown();
      context.disable();
      if (active === tracing) active = undefined;
    },
  };
  active = tracing;
  return tracing;
}

/** The context of a remote parent given as a parsed `traceparent`. */
export function remoteContext(p: TraceParent): Context {
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: p.traceId,
    spanId: p.spanId,
    traceFlags: p.flags & TraceFlags.SAMPLED,
    isRemote: true,
  });
}

/** A link to the context a `traceparent` names, or undefined when it is not valid. */
export function linkTo(traceparent: string | undefined): Link | undefined {
  const p = parseTraceParent(traceparent);
  return p ? { context: { traceId: p.traceId, spanId: p.spanId, traceFlags: p.flags, isRemote: true } } : undefined;
}

/** A span's `traceparent`. */
export function traceParentOf(span: Span): string {
  const sc = span.spanContext();
  return formatTraceParent({ traceId: sc.traceId, spanId: sc.spanId, flags: sc.traceFlags });
}
