// What `surge bench wait` and its latency probe share: one long poll of GET /v1/orders/:key?wait=
// over node:http, timed on arrival.
import { type Agent, request } from 'node:http';

/** An answered long poll: when the answer arrived and its order's applied_at (ms since the epoch). */
export interface Answer {
  key: string;
  at: number;
  appliedAt: number;
}

/**
 * One long poll; resolves with its answer, or the failure. `sent` hears the request written on
 * its connection.
 */
export function longPoll(
  agent: Agent,
  url: string,
  apiKey: string,
  key: string,
  wait: number,
  sent: () => void = () => {},
): Promise<Answer | string> {
  return new Promise((resolve) => {
    const req = request(
      `${url}/v1/orders/${encodeURIComponent(key)}?wait=${wait}`,
      { agent, headers: { authorization: `Bearer ${apiKey}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const at = Date.now();
          const body = JSON.parse(Buffer.concat(chunks).toString()) as { status: string; applied_at?: string };
          if (res.statusCode !== 200 || body.status === 'queued' || !body.applied_at)
            resolve(`${res.statusCode} ${body.status}`);
          else resolve({ key, at, appliedAt: Date.parse(body.applied_at) });
        });
      },
    );
    req.on('error', (e) => resolve(`error ${e.message}`));
    req.on('finish', sent);
    req.end();
  });
}
