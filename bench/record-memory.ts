// Redis memory per idempotency record, for capacity planning (records live SURGE_IDEMPOTENCY_TTL_SECONDS,
// so Redis holds rate × TTL of them). On a private redis-server: N orders written through ingest's
// OrderWriter (records + stream entries), then the streams' share (MEMORY USAGE) taken out of
// the used_memory growth. Baseline in the same run: the same N records in the earlier format, a
// hash holding fingerprint, state and the whole 202 body, with its EXPIRE.
// Run: npx tsc -p tsconfig.json && node dist/bench/record-memory.js [orders]   (default 100000)
import { cpus } from 'node:os';
import { Redis } from 'ioredis';
import { streamKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { canonicalFingerprint, type Order } from '../common/order.js';
import { acceptedBody, defineIngestCommands } from '../ingest/scripts.js';
import { OrderWriter } from '../ingest/writer.js';
import { startRedisServer } from '../devkit/redis-server.js';
import { checkScriptArgs } from './commands.js';

checkScriptArgs('record-memory');
const N = Number(process.argv[2] ?? 100_000);
if (!Number.isInteger(N) || N < 1) {
  process.stderr.write(`bench:record-memory: orders must be a positive integer, got ${process.argv[2]}\n`);
  process.exit(2);
}
const SHARDS = 4;
const CLIENT = '0b6b2a1e-5a5e-4a8e-9d7e-2a3b4c5d6e7f'; // client ids are UUIDs
const ORDER: Order = {
  customer_id: 'c-77',
  currency: 'EUR',
  items: [{ sku: 'tee-m', qty: 2, unit_price_cents: 1999 }],
};
const key = (i: number) => `order-2026-11-22-${String(i).padStart(7, '0')}`; // a 24-character key

const server = await startRedisServer();
const redis = new Redis(server.url, { enableAutoPipelining: true });
defineIngestCommands(redis);
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
try {
  console.log(
    `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ` +
      `node ${process.version}; redis ${/redis_version:(\S+)/.exec(await redis.info('server'))?.[1]}`,
  );
  const config = { redisPrefix: 'surge', shards: SHARDS, idempotencyTtlSeconds: 86_400, durableTimeoutMs: 1000 };
  const writer = new OrderWriter({ redis, config, logger: createLogger('silent', 'bench') });

  const before = await usedMemory();
  const prepared = [];
  for (let i = 0; i < N; i += 1000) {
    const chunk = Array.from({ length: Math.min(1000, N - i) }, (_, j) => writer.prepare(CLIENT, key(i + j), ORDER));
    const outcomes = await writer.writeMany(chunk);
    for (const [j, p] of chunk.entries()) {
      const outcome = outcomes[j];
      if (outcome?.kind !== 'accepted') throw new Error('an order was not accepted');
      prepared.push({ p, body: outcome.body });
    }
  }
  let streams = 0;
  for (let s = 0; s < SHARDS; s++)
    streams += Number(await redis.memory('USAGE', streamKey('surge', s), 'SAMPLES', '0'));
  const records = (await usedMemory()) - before - streams;

  // The earlier format, same keys under another prefix, same TTL.
  const before2 = await usedMemory();
  for (let i = 0; i < prepared.length; i += 1000) {
    const pipeline = redis.pipeline();
    for (const { p, body } of prepared.slice(i, i + 1000)) {
      const k = p.recordKey.replace(/^surge:/, 'hash:');
      pipeline.hset(k, 'f', canonicalFingerprint(p.canonical), 's', 'done', 'b', body).expire(k, 86_400);
    }
    await pipeline.exec();
  }
  const hashes = (await usedMemory()) - before2;

  const per = (bytes: number) => Math.round(bytes / N);
  console.log(
    `${N} records, key like ${JSON.stringify(prepared[0]?.p.recordKey)}, ` +
      `body like ${JSON.stringify(acceptedBody(0, '1795326383087-0', key(0)))}`,
  );
  console.log(
    'string record (state, fingerprint, entry id): ' +
      `${per(records)} B per record (streams took ${(streams / 2 ** 20).toFixed(1)} MiB, ` +
      'not counted)',
  );
  console.log(`baseline, hash with the 202 body:            ${per(hashes)} B per record`);
  console.log(`ratio string / hash: ${(records / hashes).toFixed(2)}`);
  console.log(
    'at 1,000 orders/s and a 24 h TTL: ' +
      `${((per(records) * 86_400_000) / 2 ** 30).toFixed(1)} GiB of records (hash format: ` +
      `${((per(hashes) * 86_400_000) / 2 ** 30).toFixed(1)} GiB)`,
  );
} finally {
  redis.disconnect();
  await server.stop();
}
