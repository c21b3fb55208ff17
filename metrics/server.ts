// A minimal HTTP server for /metrics, /healthz and /readyz: the only listener of the workers, the
// lag exporter and maintenance, and ingest's metrics listener (/metrics alone: its probes stay on
// the API port, served by its own pipeline, ingest/pipeline.ts).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { OPENMETRICS_CONTENT_TYPE, openMetricsText } from './definitions.js';

export interface MetricsServerOptions {
  registry: Registry;
  host: string;
  port: number;
  /** Called before each /metrics response (e.g. to refresh gauges). */
  beforeScrape?: () => Promise<void>;
  /**
   * Serve OpenMetrics (with exemplars) to a scraper whose Accept asks for it. Off, every scrape
   * gets the Prometheus text format.
   */
  openMetrics?: boolean;
  /** /readyz answers 200 while this returns true. */
  ready?: () => boolean;
  /** Serve /healthz and /readyz (default true); false: /metrics only. */
  probes?: boolean;
}

export interface MetricsServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      (async () => {
        if (options.beforeScrape) await options.beforeScrape();
        // OpenMetrics (with exemplars) only when the scraper asks for it; Prometheus text otherwise.
        if (options.openMetrics && req.headers.accept?.includes('application/openmetrics-text')) {
          const body = await openMetricsText(options.registry);
          res.writeHead(200, { 'content-type': OPENMETRICS_CONTENT_TYPE }).end(body);
          return;
        }
        const body = await options.registry.metrics();
        res.writeHead(200, { 'content-type': options.registry.contentType }).end(body);
      })().catch((err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${(err as Error).message}\n`);
      });
    } else if (options.probes === false) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const ok = options.ready ? options.ready() : true;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
