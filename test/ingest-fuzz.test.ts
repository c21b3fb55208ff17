// HTTP fuzz pass over a real `surge ingest` process: malformed requests and headers, huge and
// negative numbers, deep JSON, duplicate JSON keys, random bytes and random JSON (fast-check),
// slowloris-style slow headers and bodies. The process must never crash, never answer a 5xx
// other than 503, and keep its memory bounded. Every 202 must be an entry that decodes to the
// order that was sent.
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type CreatedClient, createClient } from '../common/clients.js';
import { streamKey } from '../common/keys.js';
import { decodeEntry } from '../common/entry.js';
import { canonicalJson } from '../common/order.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';
import { metricValues, type SurgeProcess, startSurge } from './support/procs.js';
import { parseOrderRef } from './support/defined.js';

const HEADERS_TIMEOUT_MS = 400;
const REQUEST_TIMEOUT_MS = 1200;
/** The fields of a small valid order, as raw JSON text without the braces. */
const ONE_ITEM = '"customer_id":"c","currency":"EUR","items":[{"sku":"a","qty":1,"unit_price_cents":1}]';

interface RawAnswer {
  /** Status of the first response, 0 when the server closed without answering. */
  status: number;
  text: string;
}

/** Writes raw bytes (optionally a piece at a time) and reads until the server closes or answers. */
function raw(
  port: number,
  pieces: Array<string | Buffer>,
  options: { gapMs?: number; endAfter?: boolean; maxMs?: number } = {},
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = () => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: m ? Number(m[1]) : 0, text });
    };
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      // A complete response with Connection: close, or a full body by Content-Length.
      const text = Buffer.concat(chunks).toString('latin1');
      const head = text.indexOf('\r\n\r\n');
      if (head >= 0) {
        const len = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, head));
        if (len && text.length - head - 4 >= Number(len[1])) finish();
      }
    });
    socket.on('close', finish);
    socket.on('error', (e) => {
      if ((e as NodeJS.ErrnoException).code === 'ECONNRESET' || (e as NodeJS.ErrnoException).code === 'EPIPE') finish();
      else if (!done) reject(e);
    });
    timer = setTimeout(finish, options.maxMs ?? 10_000);
    socket.on('connect', async () => {
      for (const p of pieces) {
        if (done) return;
        socket.write(p);
        if (options.gapMs) await new Promise((r) => setTimeout(r, options.gapMs));
      }
      if (options.endAfter) socket.end();
    });
  });
}

describe('ingest fuzz (a real `surge ingest` process)', () => {
  let env: TestEnv;
  let ingest: SurgeProcess;
  let pool: pg.Pool;
  let redis: Redis;
  let client: CreatedClient;
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  let rssBefore = 0;

  const headers = (key: string, extra: Record<string, string> = {}) => ({
    authorization: `Bearer ${client.apiKey}`,
    'content-type': 'application/json',
    'idempotency-key': key,
    ...extra,
  });
  const postRaw = (key: string, body: string | Buffer, extra: Record<string, string> = {}) =>
    http(ingest.url, { method: 'POST', path: '/v1/orders', headers: headers(key, extra), body, agent });
  const metrics = async () => (await http(ingest.metricsUrl, { path: '/metrics', agent })).text;
  const rss = async () =>
    metricValues(await metrics(), 'surge_process_process_resident_memory_bytes').get('{role="ingest"}') ?? 0;
  const reqHead = (lines: string[], body = '') => `${lines.join('\r\n')}\r\n\r\n${body}`;
  let keySeq = 0;
  const nextKey = () => `fz-${++keySeq}`;

  /** A 202 must point at an entry that decodes to exactly the order that was sent. */
  const assertEntry = async (body: unknown, sent: unknown) => {
    const ref = parseOrderRef((body as { order_ref: string }).order_ref);
    const got = await redis.xrange(streamKey(env.prefix, ref.shard), ref.entryId, ref.entryId);
    const decoded = decodeEntry(got[0]?.[1]);
    assert.ok(decoded.ok, 'the accepted entry decodes');
    if (decoded.ok) assert.equal(canonicalJson(decoded.entry.order), canonicalJson(sent));
  };

  before(async () => {
    env = await createTestEnv({
      SURGE_SHARDS: '2',
      SURGE_INGEST_HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
      SURGE_INGEST_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    });
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    client = await createClient(pool, 'fuzz');
    redis = new Redis(env.redisUrl);
    ingest = await startSurge('ingest', env.env, 'ingest-fuzz');
    rssBefore = await rss();
  });
  after(async () => {
    agent.destroy();
    await ingest?.kill();
    redis?.disconnect();
    await pool?.end();
    await env?.cleanup();
  });

  test('malformed requests and headers: a 4xx (or a closed connection), never a 5xx', async () => {
    const body = JSON.stringify({
      customer_id: 'c',
      currency: 'EUR',
      items: [{ sku: 'a', qty: 1, unit_price_cents: 1 }],
    });
    const auth = `Authorization: Bearer ${client.apiKey}`;
    const cases: Array<[string, string | Buffer]> = [
      ['garbage request line', 'GARBAGE\r\n\r\n'],
      ['HTTP/2 preface on an HTTP/1 port', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
      [
        'control byte in a header name',
        reqHead(['POST /v1/orders HTTP/1.1', 'Host: x', 'X-B\x01d: v', 'Content-Length: 0']),
      ],
      [
        'header line without a colon',
        reqHead(['POST /v1/orders HTTP/1.1', 'Host: x', 'NoColonHere', 'Content-Length: 0']),
      ],
      [
        '32 KiB header (over the 16 KiB limit)',
        reqHead(['GET /healthz HTTP/1.1', 'Host: x', `X-Big: ${'a'.repeat(32 * 1024)}`]),
      ],
      ['100 KiB path', reqHead([`GET /v1/orders/${'k'.repeat(100 * 1024)} HTTP/1.1`, 'Host: x'])],
      [
        'two different Content-Length',
        reqHead(['POST /v1/orders HTTP/1.1', 'Host: x', 'Content-Length: 5', 'Content-Length: 6'], 'abcdef'),
      ],
      [
        'Content-Length and chunked together',
        reqHead(
          ['POST /v1/orders HTTP/1.1', 'Host: x', 'Content-Length: 5', 'Transfer-Encoding: chunked'],
          '0\r\n\r\n',
        ),
      ],
      ['negative Content-Length', reqHead(['POST /v1/orders HTTP/1.1', 'Host: x', 'Content-Length: -5'])],
      [
        'huge Content-Length',
        reqHead([
          'POST /v1/orders HTTP/1.1',
          'Host: x',
          auth,
          'Idempotency-Key: cl',
          'Content-Type: application/json',
          'Content-Length: 99999999999999999999',
        ]),
      ],
      [
        'bad chunk size',
        reqHead(
          [
            'POST /v1/orders HTTP/1.1',
            'Host: x',
            auth,
            'Idempotency-Key: ch',
            'Content-Type: application/json',
            'Transfer-Encoding: chunked',
          ],
          'zz\r\nabc\r\n0\r\n\r\n',
        ),
      ],
      [
        'two Idempotency-Key headers',
        reqHead(
          [
            'POST /v1/orders HTTP/1.1',
            'Host: x',
            auth,
            'Idempotency-Key: a',
            'Idempotency-Key: b',
            'Content-Type: application/json',
            `Content-Length: ${body.length}`,
          ],
          body,
        ),
      ],
      [
        'Idempotency-Key with latin-1 bytes',
        Buffer.concat([
          Buffer.from(`POST /v1/orders HTTP/1.1\r\nHost: x\r\n${auth}\r\nIdempotency-Key: `),
          Buffer.from([0xe9, 0xff]),
          Buffer.from(`\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
        ]),
      ],
      [
        '10 KiB bearer token',
        reqHead([
          'POST /v1/orders HTTP/1.1',
          'Host: x',
          `Authorization: Bearer ${'x'.repeat(10 * 1024)}`,
          'Content-Length: 0',
        ]),
      ],
      [
        'Basic auth',
        reqHead(['POST /v1/orders HTTP/1.1', 'Host: x', 'Authorization: Basic dXNlcjpwYXNz', 'Content-Length: 0']),
      ],
      [
        'charset=utf-16 JSON',
        reqHead(
          [
            'POST /v1/orders HTTP/1.1',
            'Host: x',
            auth,
            'Idempotency-Key: u16',
            'Content-Type: application/json; charset=utf-16',
            `Content-Length: ${body.length}`,
          ],
          body,
        ),
      ],
      [
        'no Content-Type',
        reqHead(
          ['POST /v1/orders HTTP/1.1', 'Host: x', auth, 'Idempotency-Key: nct', `Content-Length: ${body.length}`],
          body,
        ),
      ],
      ['bad percent-encoding in the path', reqHead(['GET /v1/orders/%ZZ%E0%A4%A HTTP/1.1', 'Host: x', auth])],
      ['HTTP/1.0 with an absolute URI', reqHead(['GET http://evil.example/healthz HTTP/1.0'])],
      ['unknown method', reqHead(['BREW /v1/orders HTTP/1.1', 'Host: x'])],
      [
        'Expect: 100-continue then nothing',
        reqHead([
          'POST /v1/orders HTTP/1.1',
          'Host: x',
          auth,
          'Idempotency-Key: exp',
          'Content-Type: application/json',
          'Expect: 100-continue',
          'Content-Length: 10',
        ]),
      ],
      ['HTTP/1.1 without Host', reqHead(['GET /healthz HTTP/1.1'])],
    ];
    for (const [what, bytes] of cases) {
      const answer = await raw(ingest.port, [bytes], { endAfter: false, maxMs: REQUEST_TIMEOUT_MS * 4 });
      assert.ok(
        answer.status === 0 || (answer.status >= 100 && answer.status < 500),
        `${what}: got ${answer.status} ${answer.text.slice(0, 200)}`,
      );
      assert.ok(ingest.alive(), `ingest died on: ${what}\n${ingest.tail()}`);
    }
  });

  test('huge, negative, fractional and non-numeric numbers are 400; the largest legal order is 202 and exact', async () => {
    const order = (qty: string, price: string) =>
      `{"customer_id":"c","currency":"EUR","items":[{"sku":"a","qty":${qty},"unit_price_cents":${price}}]}`;
    const bad: Array<[string, string]> = [
      ['-1', '1'],
      ['0', '1'],
      ['1e400', '1'],
      ['1e308', '1'],
      ['10001', '1'],
      ['1.5', '1'],
      ['"1"', '1'],
      ['null', '1'],
      ['true', '1'],
      ['9007199254740993', '1'],
      ['1', '-1'],
      ['1', '-0.5'],
      ['1', '1e400'],
      ['1', '-1e400'],
      ['1', '100000000001'],
      ['1', '9223372036854775808'],
      ['1', '1e-400.0'],
      // Not 0 but parsed as 0, and not 1 but parsed as 1: a double cannot hold them exactly.
      ['1', '1e-400'],
      ['1.00000000000000001', '1'],
      ['1', '0x10'],
      ['1', 'NaN'],
      ['1', 'Infinity'],
      ['1', '[1]'],
      ['1', '{}'],
    ];
    for (const [qty, price] of bad) {
      const res = await postRaw(nextKey(), order(qty, price));
      assert.equal(res.status, 400, `qty ${qty} price ${price}: ${res.text}`);
    }
    // -0, 0.0 and 1E2 are exactly the integers 0 and 100: a legal price.
    for (const price of ['-0', '0', '0.0', '1E2']) {
      const res = await postRaw(nextKey(), order('1', price));
      assert.equal(res.status, 202, `price ${price}: ${res.text}`);
    }
    const biggest = {
      customer_id: 'c'.repeat(64),
      currency: 'XXX',
      items: Array.from({ length: 100 }, (_, i) => ({
        sku: `s${i}`.padEnd(64, 'z'),
        qty: 10000,
        unit_price_cents: 100_000_000_000,
      })),
    };
    const res = await postRaw(nextKey(), JSON.stringify(biggest));
    assert.equal(res.status, 202, res.text);
    await assertEntry(res.json, biggest);
  });

  test('deep JSON: nested arrays/objects up to the body limits → 400, the process stays up', async () => {
    const depth = 30_000; // 60 KB of brackets: under the 64 KiB single-order limit
    const arrays = `${'['.repeat(depth)}${']'.repeat(depth)}`;
    const nestedMetadata = (levels: number) =>
      `{${ONE_ITEM},"metadata":${'{"a":'.repeat(levels)}1${'}'.repeat(levels)}}`;
    const objects = nestedMetadata(10_000);
    const shallowButLegal = nestedMetadata(30);
    for (const body of [arrays, objects]) {
      const res = await postRaw(nextKey(), body);
      assert.equal(res.status, 400, res.text.slice(0, 300));
    }
    const ok = await postRaw(nextKey(), shallowButLegal);
    assert.equal(ok.status, 202, ok.text);
    await assertEntry(ok.json, JSON.parse(shallowButLegal));
    // The batch route takes 8 MiB: a million nested arrays.
    const batchDeep = `${'['.repeat(1_000_000)}${']'.repeat(1_000_000)}`;
    const res = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: headers('unused'),
      body: batchDeep,
      agent,
    });
    assert.ok(res.status === 400 || res.status === 207, `deep batch: ${res.status} ${res.text.slice(0, 300)}`);
    const ndjsonDeep = `${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}\n`;
    const res2 = await http(ingest.url, {
      method: 'POST',
      path: '/v1/orders:batch',
      headers: headers('unused', { 'content-type': 'application/x-ndjson' }),
      body: ndjsonDeep,
      agent,
    });
    assert.ok(res2.status === 207 || res2.status === 400, `deep ndjson: ${res2.status} ${res2.text.slice(0, 300)}`);
    assert.ok(ingest.alive(), ingest.tail());
  });

  test('duplicate JSON keys: the last one wins (JSON.parse), consistently for the fingerprint and the entry; __proto__ is just an unknown field', async () => {
    const key = nextKey();
    const dup =
      '{"customer_id":"first","currency":"EUR","customer_id":"last",' +
      '"items":[{"sku":"a","qty":1,"unit_price_cents":1,"qty":2}]}';
    const res = await postRaw(key, dup);
    assert.equal(res.status, 202, res.text);
    const expected = { customer_id: 'last', currency: 'EUR', items: [{ sku: 'a', qty: 2, unit_price_cents: 1 }] };
    await assertEntry(res.json, expected);
    // The same order without duplicates is a replay (same fingerprint), another last value is a 422.
    assert.equal((await postRaw(key, JSON.stringify(expected))).headers['idempotent-replayed'], 'true');
    assert.equal((await postRaw(key, dup.replace('"last"', '"other"'))).status, 422);
    const proto = await postRaw(nextKey(), `{"__proto__":{"admin":true},${ONE_ITEM}}`);
    assert.equal(proto.status, 400, proto.text);
    assert.match(proto.text, /__proto__/);
    const metaProto = `{${ONE_ITEM},"metadata":{"__proto__":{"x":1},"constructor":"y"}}`;
    const mp = await postRaw(nextKey(), metaProto);
    assert.equal(mp.status, 202, mp.text);
    await assertEntry(mp.json, JSON.parse(metaProto));
  });

  test('property: random bytes, random JSON and mutated orders → 202 or 400 only; every 202 is exact', async () => {
    const allowed = new Set([202, 400]);
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), async (bytes) => {
        const res = await postRaw(nextKey(), Buffer.from(bytes));
        return allowed.has(res.status);
      }),
      { numRuns: 150 },
    );
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 6 }), async (value) => {
        const res = await postRaw(nextKey(), JSON.stringify(value) ?? 'null');
        return allowed.has(res.status);
      }),
      { numRuns: 150 },
    );
    // Orders whose every field is either legal or an arbitrary value (any JSON, any Unicode string).
    const anyString = fc.string({ unit: 'binary', maxLength: 80 });
    const field = <T>(legal: fc.Arbitrary<T>) =>
      fc.oneof(
        { weight: 14, arbitrary: legal },
        { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
        { weight: 1, arbitrary: anyString },
      );
    const item = fc.record({
      sku: field(fc.string({ unit: 'binary', minLength: 1, maxLength: 64 })),
      qty: field(fc.integer({ min: 1, max: 10000 })),
      unit_price_cents: field(fc.integer({ min: 0, max: 100_000_000_000 })),
    });
    const order = fc.record(
      {
        customer_id: field(fc.string({ unit: 'binary', minLength: 1, maxLength: 64 })),
        currency: field(fc.constantFrom('EUR', 'USD', 'JPY')),
        items: field(fc.array(item, { minLength: 1, maxLength: 5 })),
        order_id: field(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 })),
        metadata: field(fc.dictionary(anyString, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 })),
      },
      { requiredKeys: [] },
    );
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(order, async (o) => {
        const res = await postRaw(nextKey(), JSON.stringify(o));
        if (!allowed.has(res.status)) return false;
        if (res.status === 202) {
          accepted++;
          await assertEntry(res.json, JSON.parse(JSON.stringify(o)));
        }
        return true;
      }),
      { numRuns: 300 },
    );
    assert.ok(accepted > 20, `the generator reaches valid orders too (${accepted} accepted)`);
  });

  test('slowloris: slow headers and slow bodies get 408 and a closed connection; others are still served meanwhile', async () => {
    const slowHead = [
      'POST /v1/orders HTTP/1.1',
      'Host: x',
      `Authorization: Bearer ${client.apiKey}`,
      `X-Drip: ${'d'.repeat(200)}`,
    ]
      .join('\r\n')
      .split('');
    const slowBodyHead = reqHead([
      'POST /v1/orders HTTP/1.1',
      'Host: x',
      `Authorization: Bearer ${client.apiKey}`,
      'Idempotency-Key: slow-body',
      'Content-Type: application/json',
      'Content-Length: 400',
    ]);
    const body = Array.from({ length: 400 }, () => ' ');
    // 20 connections dripping headers and 20 dripping bodies, one byte every 50 ms: each would
    // take 10–20 s to finish; the server must cut them off.
    const drips = [
      ...Array.from({ length: 20 }, () => raw(ingest.port, slowHead, { gapMs: 50, maxMs: 30_000 })),
      ...Array.from({ length: 20 }, () => raw(ingest.port, [slowBodyHead, ...body], { gapMs: 50, maxMs: 30_000 })),
    ];
    // Meanwhile a normal client is served.
    const res = await postRaw(
      nextKey(),
      JSON.stringify({ customer_id: 'c', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 1 }] }),
    );
    assert.equal(res.status, 202);
    const answers = await Promise.all(drips);
    for (const a of answers) {
      assert.ok(a.status === 408 || a.status === 0, `a slow client got ${a.status}: ${a.text.slice(0, 200)}`);
    }
    assert.ok(
      answers.some((a) => a.status === 408),
      'the server answers 408 Request Timeout',
    );
    assert.ok(ingest.alive(), ingest.tail());
  });

  test('afterwards: alive, ready, no 5xx other than 503 in its own metrics, memory bounded', async () => {
    assert.equal((await http(ingest.url, { path: '/healthz', agent })).status, 200);
    await waitFor('ready', async () => (await http(ingest.url, { path: '/readyz', agent })).status === 200);
    const requests = metricValues(await metrics(), 'surge_ingest_requests_total');
    const fivexx = [...requests].filter(
      ([labels, n]) => n > 0 && /code="5\d\d"/.test(labels) && !labels.includes('code="503"'),
    );
    assert.deepEqual(fivexx, [], 'no 5xx other than 503');
    const total = [...requests.values()].reduce((a, b) => a + b, 0);
    assert.ok(total > 600, `the fuzz pass sent its requests (${total})`);
    const after = await rss();
    assert.ok(rssBefore > 0 && after > 0);
    // Bounded: the pass sent > 10 MB of hostile bodies; the process must not hold on to them.
    assert.ok(
      after < 400 * 1024 * 1024,
      `RSS ${Math.round(after / 1048576)} MiB after the fuzz pass (before: ${Math.round(rssBefore / 1048576)} MiB)`,
    );
  });
});
