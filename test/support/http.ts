// A small HTTP client for tests (node:http, so raw bytes and odd headers reach the server as sent).
import { type Agent, type IncomingHttpHeaders, request } from 'node:http';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: unknown;
}

export interface HttpRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  agent?: Agent;
}

/** Sends one request to baseUrl; resolves with the response even if the server stopped reading the body early (413). */
export function http(baseUrl: string, req: HttpRequest): Promise<HttpResponse> {
  const url = new URL(req.path, baseUrl);
  const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body);
  return new Promise((resolve, reject) => {
    let answered = false;
    const r = request(
      url,
      {
        method: req.method ?? 'GET',
        headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...req.headers },
        ...(req.agent ? { agent: req.agent } : {}),
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    r.on('error', (err) => {
      if (!answered) reject(err);
    });
    if (body) r.end(body);
    else r.end();
  });
}
