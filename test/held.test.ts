// A request taken out of node:http while it waits (ingest/held.ts): node:http's parser is freed and
// its listeners are gone, the answer written by hand is a well-formed HTTP/1.1 response with
// `Connection: close` (no body for HEAD), a client that goes away is heard once, and a request
// that is not alone on its connection or whose body is still coming stays with node:http.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, test } from 'node:test';
import { detach, type Responder } from '../ingest/held.js';
import { waitFor } from '../devkit/wait.js';

interface Held {
  url: string;
  req: IncomingMessage;
  res: ServerResponse;
  responder: Responder | undefined;
  /** How many times the held socket's client was heard going away. */
  closed: number;
}

let server: Server;
let port: number;
const held: Held[] = [];

before(async () => {
  server = createServer((req, res) => {
    // Detached from a later turn, as the long poll does: node:http is parsing the request now.
    setImmediate(() => {
      const h: Held = { url: req.url ?? '', req, res, responder: undefined, closed: 0 };
      h.responder = detach(req, res, {
        closed: () => {
          h.closed++;
        },
      });
      held.push(h);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

const heldFor = async (url: string): Promise<Held> => {
  await waitFor(`${url} held`, () => held.some((h) => h.url === url), { timeoutMs: 5000, intervalMs: 5 });
  return held.find((h) => h.url === url) as Held;
};

function get(path: string, method = 'GET') {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>(
    (resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    },
  );
}

test('a held request is out of node:http and answered by hand, then its connection closes', async () => {
  const answer = get('/a');
  const h = await heldFor('/a');
  assert.ok(h.responder, 'detached');
  const socket = h.req.socket as typeof h.req.socket & { parser?: unknown };
  assert.equal(socket.parser, null, "node:http's parser is freed");
  assert.equal(socket.listeners('data').length, 1, "node:http's data listener is gone (one of ours left)");
  assert.equal(h.res.socket, null, 'the response is detached from the socket');
  const closed = new Promise((resolve) => socket.once('close', resolve));
  const body = JSON.stringify({ status: 'applied', note: 'é' });
  h.responder.writeHead(200, [
    'x-request-id',
    'r-1',
    'content-type',
    'application/json',
    'content-length',
    String(Buffer.byteLength(body)),
  ]);
  assert.equal(h.responder.headersSent, true);
  h.responder.end(body);
  const res = await answer;
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-request-id'], 'r-1');
  assert.equal(res.headers.connection, 'close');
  assert.ok(res.headers.date, 'a Date header');
  assert.deepEqual(JSON.parse(res.body), { status: 'applied', note: 'é' });
  await closed;
  assert.equal(h.closed, 0, 'an answered request is not reported as gone');
});

test('HEAD is answered without a body', async () => {
  const answer = get('/head', 'HEAD');
  const h = await heldFor('/head');
  assert.ok(h.responder);
  h.responder.writeHead(404, ['content-type', 'application/problem+json', 'content-length', '2']);
  h.responder.end('{}');
  const res = await answer;
  assert.equal(res.status, 404);
  assert.equal(res.headers['content-length'], '2');
  assert.equal(res.body, '');
});

test('a client that goes away is heard once, and its held response reads destroyed', async () => {
  const client = connect(port, '127.0.0.1');
  client.write('GET /gone HTTP/1.1\r\nHost: x\r\n\r\n');
  const h = await heldFor('/gone');
  assert.ok(h.responder);
  client.destroy();
  await waitFor('the close heard', () => h.closed === 1, { timeoutMs: 5000, intervalMs: 5 });
  assert.equal(h.responder.destroyed, true);
  h.responder.writeHead(200, ['content-length', '0']);
  h.responder.end('');
  assert.equal(h.closed, 1);
});

test('a request not alone on its connection, or whose body is still coming, stays with node:http', async () => {
  const pipelined = connect(port, '127.0.0.1');
  pipelined.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n');
  const first = await heldFor('/first');
  assert.equal(first.responder, undefined, 'another request came after it on its connection');
  const reply = new Promise<string>((resolve) => {
    let got = '';
    pipelined.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('one')) resolve(got);
    });
  });
  first.res.end('one');
  assert.match(await reply, /^HTTP\/1\.1 200 OK/);
  pipelined.destroy();

  const partial = connect(port, '127.0.0.1');
  partial.write('POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc');
  const body = await heldFor('/body');
  assert.equal(body.responder, undefined, 'its body is still coming');
  partial.destroy();
});
