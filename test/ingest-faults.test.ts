// Ingest under faults, each against its own redis-server: Redis killed while a write is in
// flight, graceful stop with a request in flight, writes over the in-flight limit shed at the
// door, durable mode (refusal without WAITAOF/WAIT; WAIT 1 with a real replica; 409 while the
// first write waits; 503 when it cannot be confirmed), and the `surge ingest` command.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type CreatedClient, createClient } from '../common/clients.js';
import { allStreamKeys, idemKey, shardFor, streamKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { parseRecord, STATE_PENDING } from '../ingest/scripts.js';
import { type IngestService, startIngest } from '../ingest/server.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';
import { type RedisServer, startRedisServer } from '../devkit/redis-server.js';
import { waitFor } from '../devkit/wait.js';
import { http } from './support/http.js';
import { parseOrderRef } from './support/defined.js';

const silent = createLogger('silent', 'ingest-test');
const ORDER = { customer_id: 'c', currency: 'EUR', items: [{ sku: 'a', qty: 1, unit_price_cents: 10 }] };

function postOrder(svc: IngestService, client: CreatedClient, key: string) {
  return http(svc.url, {
    method: 'POST',
    path: '/v1/orders',
    headers: { authorization: `Bearer ${client.apiKey}`, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify(ORDER),
  });
}

/**
 * A write whose headers announce a body that is never sent (under an unknown API key): resolves
 * with the answer's head, or rejects if none comes.
 */
function headersOnly(url: string, key: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) });
    let got = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer before the body: ${JSON.stringify(got)}`));
    }, 5000);
    socket.on('data', (chunk) => {
      got += chunk.toString('latin1');
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.destroy();
      resolve(got.slice(0, end + 2));
    });
    socket.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    socket.write(
      'POST /v1/orders HTTP/1.1\r\nhost: x\r\nauthorization: Bearer no-such-key\r\n' +
        `content-type: application/json\r\nidempotency-key: ${key}\r\ncontent-length: 100\r\n\r\n`,
    );
  });
}

async function entries(redis: Redis, env: TestEnv): Promise<number> {
  let n = 0;
  for (const k of allStreamKeys(env.prefix, env.config.shards)) n += await redis.xlen(k);
  return n;
}

/** Waits until ingest's connection is parked inside Redis by CLIENT PAUSE WRITE (its EVALSHA is in flight). */
async function waitForPausedWrite(admin: Redis): Promise<void> {
  await waitFor('ingest write parked by CLIENT PAUSE', async () => {
    const list = String(await admin.client('LIST'));
    return list
      .split('\n')
      .some((line) => line.includes('name=surge-ingest') && / flags=[a-zA-Z]*b/.test(line) && /cmd=eval/.test(line));
  });
}

describe('ingest: Redis killed mid-request, graceful stop', () => {
  let server: RedisServer;
  let env: TestEnv;
  let pool: pg.Pool;
  let client: CreatedClient;
  let admin: Redis;

  before(async () => {
    server = await startRedisServer({ appendonly: true, appendfsync: 'always' });
    env = await createTestEnv({ SURGE_SHARDS: '2', SURGE_BACKPRESSURE_INTERVAL_MS: '50' }, server.url);
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    client = await createClient(pool, 'fault');
    admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
  });
  after(async () => {
    admin?.disconnect();
    await pool?.end();
    await env?.cleanup();
    await server?.stop();
  });

  test('Redis killed while the write is in flight → 503 + Retry-After; nothing half-written; a retry adds exactly one entry', async () => {
    const svc = await startIngest(env.config, { logger: silent });
    try {
      assert.equal((await postOrder(svc, client, 'warm-up')).status, 202);
      await admin.call('CLIENT', 'PAUSE', '30000', 'WRITE');
      const inFlight = postOrder(svc, client, 'mid-1');
      await waitForPausedWrite(admin);
      await server.kill();
      const res = await inFlight;
      assert.equal(res.status, 503);
      assert.ok(Number(res.headers['retry-after']) >= 1);
      assert.match(String(res.headers['content-type']), /problem\+json/);
      // While Redis is down: liveness fine, not ready, writes refused at once.
      await waitFor('/readyz 503', async () => (await http(svc.url, { path: '/readyz' })).status === 503);
      assert.equal((await http(svc.url, { path: '/healthz' })).status, 200);
      assert.equal((await postOrder(svc, client, 'while-down')).status, 503);

      await server.restart();
      await waitFor('/readyz 200', async () => (await http(svc.url, { path: '/readyz' })).status === 200);
      admin.disconnect();
      admin = new Redis(server.url, { maxRetriesPerRequest: 1 });
      admin.on('error', () => {});
      const shard = shardFor(client.id, 'mid-1', env.config.shards);
      assert.equal(await entries(admin, env), 1, 'only the warm-up entry survived (AOF always)');
      assert.equal(
        await admin.exists(idemKey(env.prefix, shard, client.id, 'mid-1')),
        0,
        'no record for the failed write',
      );
      const retry = await postOrder(svc, client, 'mid-1');
      assert.equal(retry.status, 202);
      assert.equal(retry.headers['idempotent-replayed'], undefined);
      assert.equal(await entries(admin, env), 2);
      assert.equal((await postOrder(svc, client, 'mid-1')).headers['idempotent-replayed'], 'true');
      assert.equal(await entries(admin, env), 2);
    } finally {
      await svc.stop();
    }
  });

  test('the script cache emptied (SCRIPT FLUSH): the next orders are accepted once each, the call resent as EVAL', async () => {
    const svc = await startIngest(env.config, { logger: silent });
    try {
      assert.equal((await postOrder(svc, client, 'flush-warm-up')).status, 202);
      const before = await entries(admin, env);
      await admin.call('SCRIPT', 'FLUSH');
      const keys = ['flush-1', 'flush-2', 'flush-3', 'flush-4'];
      const answers = await Promise.all(keys.map((k) => postOrder(svc, client, k)));
      assert.deepEqual(
        answers.map((r) => r.status),
        [202, 202, 202, 202],
      );
      assert.equal(await entries(admin, env), before + keys.length);
      // Cached again: the next call runs as EVALSHA, and a retry is a replay.
      const replay = await postOrder(svc, client, 'flush-1');
      assert.equal(replay.status, 202);
      assert.equal(replay.headers['idempotent-replayed'], 'true');
      assert.equal(await entries(admin, env), before + keys.length);
    } finally {
      await svc.stop();
    }
  });

  test('stop() finishes the request in flight, refuses new connections, and is safe to call twice', async () => {
    const svc = await startIngest(env.config, { logger: silent });
    assert.equal((await postOrder(svc, client, 'warm-up-2')).status, 202);
    await admin.call('CLIENT', 'PAUSE', '30000', 'WRITE');
    const inFlight = postOrder(svc, client, 'graceful-1');
    await waitForPausedWrite(admin);
    let stopped = false;
    const stopping = svc.stop().then(() => {
      stopped = true;
    });
    await waitFor('listener closed', async () => {
      try {
        await http(svc.url, { path: '/healthz' });
        return false;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === 'ECONNREFUSED';
      }
    });
    assert.equal(stopped, false, 'stop waits for the request in flight');
    await admin.call('CLIENT', 'UNPAUSE');
    const res = await inFlight;
    assert.equal(res.status, 202);
    await stopping;
    await svc.stop();
    assert.equal(stopped, true);
  });

  test('an order arriving on a kept-alive connection while stopping: 503 + Retry-After + Connection: close, nothing written', async () => {
    const svc = await startIngest(env.config, { logger: silent });
    const before = await entries(admin, env);
    const request = (key: string) => {
      const body = JSON.stringify(ORDER);
      return [
        'POST /v1/orders HTTP/1.1',
        'Host: t',
        `authorization: Bearer ${client.apiKey}`,
        'content-type: application/json',
        `idempotency-key: ${key}`,
        `content-length: ${body.length}`,
        '',
        body,
      ].join('\r\n');
    };
    const socket = connect(svc.port, '127.0.0.1');
    let received = '';
    socket.on('data', (d: Buffer) => {
      received += d.toString();
    });
    const closed = new Promise((r) => socket.once('close', r));
    try {
      await admin.call('CLIENT', 'PAUSE', '30000', 'WRITE');
      socket.write(request('drain-first'));
      await waitForPausedWrite(admin);
      const stopping = svc.stop();
      // The second request comes on the connection the first keeps busy, after the stop began.
      socket.write(request('drain-second'));
      await admin.call('CLIENT', 'UNPAUSE');
      await closed;
      await stopping;
      const answers = received.split(/(?=HTTP\/1\.1 )/);
      assert.equal(answers.length, 2, received);
      const [accepted = '', refused = ''] = answers;
      assert.match(accepted, /^HTTP\/1\.1 202 /);
      assert.match(refused, /^HTTP\/1\.1 503 /);
      assert.match(refused, /\r\nretry-after: \d+\r\n/i);
      assert.match(refused, /\r\nconnection: close\r\n/i);
      assert.match(refused, /"type":"https:\/\/surge\.dev\/problems#shutting-down"/);
      assert.equal(await entries(admin, env), before + 1, 'only the first order was written');
    } finally {
      socket.destroy();
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
      await svc.stop();
    }
  });
  test('more writes in flight than the limit: the excess gets 503 + Retry-After at once, nothing written, counted by reason', async () => {
    const svc = await startIngest({ ...env.config, ingestMaxInFlight: 1 }, { logger: silent });
    try {
      assert.equal((await postOrder(svc, client, 'door-warm')).status, 202);
      const before = await entries(admin, env);
      await admin.call('CLIENT', 'PAUSE', '30000', 'WRITE');
      const inFlight = postOrder(svc, client, 'door-held');
      await waitForPausedWrite(admin);
      // The one write allowed is held inside Redis: the next is answered without waiting for it.
      const shed = await postOrder(svc, client, 'door-shed');
      assert.equal(shed.status, 503);
      assert.match(shed.text, /"type":"https:\/\/surge\.dev\/problems#overloaded"/);
      assert.match(shed.text, /SURGE_INGEST_MAX_IN_FLIGHT/);
      assert.ok(Number(shed.headers['retry-after']) >= 1, `Retry-After ${shed.headers['retry-after']}`);
      // Before the body and before the key: headers that announce a body never sent, with a key
      // no client has, are still answered 503 at once (a 401, or no answer, means the door let it in).
      const head = await headersOnly(svc.url, 'door-no-body');
      assert.match(head, /^HTTP\/1\.1 503 /, head);
      assert.match(head, /\r\nretry-after: [1-9]\d*\r\n/i, head);
      await admin.call('CLIENT', 'UNPAUSE');
      assert.equal((await inFlight).status, 202);
      assert.equal(await entries(admin, env), before + 1, 'the shed order was not written');
      const shard = shardFor(client.id, 'door-shed', env.config.shards);
      assert.equal(await admin.exists(idemKey(env.prefix, shard, client.id, 'door-shed')), 0, 'no record either');
      // Shed and answered: a retry with the same key is accepted once the load is gone.
      assert.equal((await postOrder(svc, client, 'door-shed')).status, 202);
      const metrics = (await http(svc.metricsUrl, { path: '/metrics' })).text;
      assert.match(metrics, /surge_ingest_shed_total\{reason="in_flight",role="ingest"\} 2\b/);
    } finally {
      await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
      await svc.stop();
    }
  });
});

describe('ingest: durable mode', () => {
  let master: RedisServer;
  let replica: RedisServer | undefined;
  let env: TestEnv;
  let pool: pg.Pool;
  let client: CreatedClient;
  let admin: Redis;

  before(async () => {
    master = await startRedisServer({ appendonly: true });
    env = await createTestEnv(
      { SURGE_SHARDS: '2', SURGE_DURABILITY: 'durable', SURGE_DURABLE_TIMEOUT_MS: '1500' },
      master.url,
    );
    pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
    client = await createClient(pool, 'durable');
    admin = new Redis(master.url);
    admin.on('error', () => {});
  });
  after(async () => {
    admin?.disconnect();
    await pool?.end();
    await env?.cleanup();
    await replica?.stop();
    await master?.stop();
  });

  test('without WAITAOF (Redis < 7.2) and without a replica, durable mode refuses to start and says why', async () => {
    const version = /redis_version:(\S+)/.exec(await admin.info('server'))?.[1] ?? '';
    await assert.rejects(startIngest(env.config, { logger: silent }), (e: Error) => {
      if (/^7\.[01]\.|^[0-6]\./.test(version))
        assert.match(
          e.message,
          new RegExp(`WAITAOF needs Redis ≥ 7\\.2 \\(this server is ${version.replace(/\./g, '\\.')}\\)`),
        );
      assert.match(e.message, /WAIT 1 needs a connected replica \(connected_slaves:0\)/);
      assert.match(e.message, /SURGE_DURABILITY=fast/);
      return true;
    });
  });

  test('with a replica: 202 only once WAIT 1 confirmed; 409 + Retry-After while the first write waits; 503 and no record when it cannot be confirmed', async () => {
    replica = await startRedisServer({ extraArgs: ['--replicaof', '127.0.0.1', String(master.port)] });
    const replicaClient = new Redis(replica.url);
    replicaClient.on('error', () => {});
    const linked = async () =>
      /connected_slaves:1/.test(await admin.info('replication')) &&
      /master_link_status:up/.test(await replicaClient.info('replication'));
    await waitFor('replica linked', linked);
    const a = await startIngest(env.config, { logger: silent });
    const b = await startIngest(env.config, { logger: silent });
    try {
      const ok = await postOrder(a, client, 'd-1');
      assert.equal(ok.status, 202);
      const ref = parseOrderRef((ok.json as { order_ref: string }).order_ref);
      // WAIT 1 returned, so the replica already holds the entry.
      assert.equal((await replicaClient.xrange(streamKey(env.prefix, ref.shard), ref.entryId, ref.entryId)).length, 1);
      replicaClient.disconnect();

      await replica.kill();
      const shard = shardFor(client.id, 'd-2', env.config.shards);
      const record = idemKey(env.prefix, shard, client.id, 'd-2');
      const first = postOrder(a, client, 'd-2');
      await waitFor('pending record', async () => parseRecord(await admin.get(record))?.state === STATE_PENDING);
      const second = await postOrder(b, client, 'd-2');
      assert.equal(second.status, 409);
      assert.equal(second.headers['retry-after'], '1');
      const firstRes = await first;
      assert.equal(firstRes.status, 503);
      assert.ok(Number(firstRes.headers['retry-after']) >= 1);
      assert.equal(await admin.exists(record), 0, '503 caches nothing');
      assert.equal(
        (await http(a.url, { path: '/v1/orders/d-2', headers: { authorization: `Bearer ${client.apiKey}` } })).status,
        404,
      );

      await replica.restart();
      const again = new Redis(replica.url);
      again.on('error', () => {});
      try {
        await waitFor(
          'replica relinked',
          async () =>
            /connected_slaves:1/.test(await admin.info('replication')) &&
            /master_link_status:up/.test(await again.info('replication')),
        );
      } finally {
        again.disconnect();
      }
      const retry = await postOrder(a, client, 'd-2');
      assert.equal(retry.status, 202);
      assert.equal(retry.headers['idempotent-replayed'], undefined);
      // SEMANTICS 1.5: the unconfirmed XADD stays in the stream; the retry adds a second entry
      // and PostgreSQL's unique (client_id, idempotency_key) applies the order once.
      assert.equal(await admin.xlen(streamKey(env.prefix, shard)), shard === ref.shard ? 3 : 2);
      assert.equal((await postOrder(b, client, 'd-2')).headers['idempotent-replayed'], 'true');
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});

describe('surge ingest (CLI)', () => {
  let env: TestEnv;
  before(async () => {
    env = await createTestEnv();
  });
  after(async () => {
    await env?.cleanup();
  });

  test('prints one line with the listening URL, serves /healthz, exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js'), 'ingest'], {
      env: { ...process.env, ...env.env, SURGE_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      let out = '';
      child.stdout.on('data', (c: Buffer) => {
        out += c.toString();
      });
      const url = await waitFor('listening line', () => {
        const line = out.split('\n').find((l) => l.includes('ingest listening on'));
        return line ? (JSON.parse(line) as { url: string }).url : undefined;
      });
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal((await http(url, { path: '/healthz' })).status, 200);
      await waitFor('ready', async () => (await http(url, { path: '/readyz' })).status === 200);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
