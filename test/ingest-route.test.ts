// POST /v1/orders on node:http (ingest/create-order.ts) when its own code throws: the request
// gets a 500 problem, the process and the other requests go on. The collaborators are small
// stand-ins here (the failure is injected into them); the route's behaviour against real Redis
// and PostgreSQL is in ingest.test.ts.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { ApiClient } from '../common/clients.js';
import { createLogger } from '../common/log.js';
import type { Authenticator } from '../ingest/auth.js';
import type { Backpressure } from '../ingest/backpressure.js';
import { type CreateOrderDeps, createOrderHandler } from '../ingest/create-order.js';
import type { IntakeOutcome, OrderIntake } from '../ingest/intake.js';
import { http } from './support/http.js';

const client = { id: 'client-1', name: 'c' } as ApiClient;
const counter = (onInc: (labels: Record<string, string>) => void) => ({ inc: onInc });

describe('POST /v1/orders: a bug in answering fails that request alone', () => {
  let server: Server;
  let url: string;
  const incs: string[] = [];

  before(async () => {
    const intake = {
      submit: (_body: Uint8Array, _clientId: string, key: string): Promise<IntakeOutcome> =>
        key === 'reject'
          ? Promise.reject(new Error('intake bug'))
          : Promise.resolve({ kind: 'accepted', body: `{"idempotency_key":"${key}"}` }),
    } as unknown as OrderIntake;
    const deps: CreateOrderDeps = {
      auth: { cached: () => ({ client }), lookup: async () => client } as unknown as Authenticator,
      backpressure: { overloaded: () => undefined, retryAfterSeconds: 1 } as unknown as Backpressure,
      metrics: {
        orders: counter(({ result }) => {
          incs.push(String(result));
          // The failure injected: counting an accepted order throws once.
          if (result === 'accepted' && incs.filter((r) => r === 'accepted').length === 1)
            throw new Error('metrics bug');
        }),
        requests: counter(() => {}),
        duration: { observe: () => {} },
      } as unknown as CreateOrderDeps['metrics'],
      intake,
      logger: createLogger('silent', 'ingest-route-test'),
      draining: () => false,
    };
    server = createServer(createOrderHandler(deps));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const post = (key: string) =>
    http(url, {
      method: 'POST',
      path: '/v1/orders',
      headers: { authorization: 'Bearer k', 'content-type': 'application/json', 'idempotency-key': key },
      body: '{}',
    });

  // The timeouts turn a request left unanswered into a failure rather than a hung run.
  test('a throw while answering → 500 problem; the next request is answered 202', { timeout: 10_000 }, async () => {
    const first = await post('first');
    assert.equal(first.status, 500);
    assert.match(String(first.headers['content-type']), /^application\/problem\+json/);
    assert.match(first.text, /"type":"https:\/\/surge\.dev\/problems\/internal"/);
    const second = await post('second');
    assert.equal(second.status, 202);
    assert.equal(second.headers.location, '/v1/orders/second');
  });

  test('the intake failing (a bug) → 500 problem; the process goes on', { timeout: 10_000 }, async () => {
    const res = await post('reject');
    assert.equal(res.status, 500);
    assert.equal((await post('after')).status, 202);
  });
});
