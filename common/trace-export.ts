// The OTLP/HTTP exporter, run on a thread of its own. The SDK's batch processor stays on the
// main thread (batch size, schedule delay, queue limit, flush on shutdown); each batch it
// exports crosses to the thread as plain records (span-record.ts), and the thread encodes it
// and POSTs it with the SDK's OTLPTraceExporter, configured by the same OTEL_EXPORTER_OTLP_*
// variables. On the main thread the encoding and the client socket cost ingest more than their
// size: node's stream and socket code, shared with the server's answers, runs slower once an
// HTTP client uses it too (docs/performance.md).
import { Worker } from 'node:worker_threads';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { type SpanRecord, toRecord } from './span-record.js';

type Env = Readonly<Record<string, string | undefined>>;
type ResultCallback = Parameters<SpanExporter['export']>[1];

/** What the thread is started with. */
export interface ExportThreadData {
  resourceAttributes: Resource['attributes'];
  schemaUrl?: string;
}

export type ExportThreadRequest =
  | { op: 'export'; id: number; spans: SpanRecord[] }
  | { op: 'flush'; id: number }
  | { op: 'shutdown'; id: number };

export interface ExportThreadReply {
  id: number;
  ok: boolean;
  error?: string;
}

// ExportResultCode (@opentelemetry/core) by value.
const SUCCESS = 0;
const FAILED = 1;

export class ThreadSpanExporter implements SpanExporter {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, (reply: ExportThreadReply) => void>();
  private next = 0;
  /** Why the thread is gone, once it is. */
  private gone: string | undefined;

  /** `env` is the thread's environment, where the exporter reads its OTEL_* variables. */
  constructor(resource: Resource, env: Env = process.env) {
    const data: ExportThreadData = {
      resourceAttributes: resource.attributes,
      ...(resource.schemaUrl ? { schemaUrl: resource.schemaUrl } : {}),
    };
    this.worker = new Worker(new URL('./trace-export-thread.js', import.meta.url), {
      workerData: data,
      ...(env === process.env ? {} : { env: definedOnly(env) }),
    });
    // The thread keeps the process alive only while a request to it is outstanding, so a stop
    // waits for the last batch's POST and an idle process exits.
    this.worker.unref();
    this.worker.on('message', (reply: ExportThreadReply) => {
      const done = this.waiting.get(reply.id);
      if (!done) return;
      this.waiting.delete(reply.id);
      if (this.waiting.size === 0) this.worker.unref();
      done(reply);
    });
    this.worker.on('error', (e: Error) => this.lost(`the export thread failed: ${e.message}`));
    this.worker.on('exit', (code) => this.lost(`the export thread exited (code ${code})`));
  }

  export(spans: ReadableSpan[], resultCallback: ResultCallback): void {
    let records: SpanRecord[];
    try {
      records = spans.map(toRecord);
    } catch (e) {
      resultCallback({ code: FAILED, error: e as Error });
      return;
    }
    this.ask({ op: 'export', id: 0, spans: records }).then(
      () => resultCallback({ code: SUCCESS }),
      (error: Error) => resultCallback({ code: FAILED, error }),
    );
  }

  async forceFlush(): Promise<void> {
    if (this.gone === undefined) await this.ask({ op: 'flush', id: 0 });
  }

  async shutdown(): Promise<void> {
    if (this.gone !== undefined) return;
    try {
      await this.ask({ op: 'shutdown', id: 0 });
    } finally {
      this.gone ??= 'shut down';
      await this.worker.terminate();
    }
  }

  private ask(request: ExportThreadRequest): Promise<void> {
    if (this.gone !== undefined) return Promise.reject(new Error(this.gone));
    const id = ++this.next;
    return new Promise<void>((resolve, reject) => {
      if (this.waiting.size === 0) this.worker.ref();
      this.waiting.set(id, (reply) => (reply.ok ? resolve() : reject(new Error(reply.error ?? 'export failed'))));
      this.worker.postMessage({ ...request, id });
    });
  }

  private lost(why: string): void {
    this.gone ??= why;
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    this.worker.unref();
    for (const done of waiting) done({ id: 0, ok: false, error: why });
  }
}

function definedOnly(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}
