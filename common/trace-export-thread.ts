// The export thread (trace-export.ts): rebuilds each batch's spans from their records and hands
// them to the SDK's OTLP/HTTP exporter, which encodes them as OTLP JSON and POSTs them (with
// its retries, timeout, headers and compression from the OTEL_EXPORTER_OTLP_* variables).
import { parentPort, workerData } from 'node:worker_threads';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { fromRecord } from './span-record.js';
import type { ExportThreadData, ExportThreadReply, ExportThreadRequest } from './trace-export.js';

const port = parentPort;
if (!port) throw new Error('trace-export-thread runs as a worker thread');
const data = workerData as ExportThreadData;
const resource = resourceFromAttributes(
  data.resourceAttributes,
  data.schemaUrl ? { schemaUrl: data.schemaUrl } : undefined,
);
const scopes = new Map<string, ReadableSpan['instrumentationScope']>();
const exporter = new OTLPTraceExporter();

const reply = (r: ExportThreadReply) => port.postMessage(r);
const failed = (id: number, e: unknown) => reply({ id, ok: false, error: e instanceof Error ? e.message : String(e) });

port.on('message', (m: ExportThreadRequest) => {
  switch (m.op) {
    case 'export': {
      let spans: ReadableSpan[];
      try {
        spans = m.spans.map((r) => fromRecord(r, resource, scopes));
      } catch (e) {
        failed(m.id, e);
        return;
      }
      exporter.export(spans, (result) =>
        result.code === 0 ? reply({ id: m.id, ok: true }) : failed(m.id, result.error ?? 'export failed'),
      );
      return;
    }
    case 'flush':
      exporter.forceFlush().then(
        () => reply({ id: m.id, ok: true }),
        (e: unknown) => failed(m.id, e),
      );
      return;
    case 'shutdown':
      // The main thread ends the thread once it has the answer.
      exporter.shutdown().then(
        () => reply({ id: m.id, ok: true }),
        (e: unknown) => failed(m.id, e),
      );
      return;
  }
});
