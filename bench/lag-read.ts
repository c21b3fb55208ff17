// What one lag reading costs, and what the NULL-lag fallback (counting the entries after
// last-delivered-id with a paged Lua XRANGE) costs, on a private redis-server.
// Run: npx tsc -p tsconfig.json && node dist/bench/lag-read.js [entries ...]   (default 10000 100000)
// Baseline (same run): a reading where Redis knows the lag. Prints the machine.
import { cpus } from 'node:os';
import { Redis } from 'ioredis';
import { encodeEntry } from '../common/entry.js';
import { GROUP, streamKey } from '../common/keys.js';
import { ensureGroups } from '../common/streams.js';
import { readLag } from '../metrics/lag.js';
import { startRedisServer } from '../devkit/redis-server.js';

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const SIZES = sizes.length > 0 ? sizes : [10_000, 100_000];
const PREFIX = 'bench';
const PAYLOAD = JSON.stringify({
  customer_id: 'c-123',
  currency: 'EUR',
  items: [{ sku: 'sku-1', qty: 1, unit_price_cents: 1999 }],
  metadata: { note: 'x'.repeat(80) },
});

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

async function time(runs: number, fn: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = process.hrtime.bigint();
    await fn();
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(ms);
}

const server = await startRedisServer();
const r = new Redis(server.url);
console.log(
  `machine: ${cpus().length} × ${cpus()[0]?.model ?? '?'}; ` +
    `node ${process.version}; ${(await r.info('server')).match(/redis_version:(\S+)/)?.[1]}`,
);
console.log(
  'entries | reading, lag known (ms, median) | reading, lag NULL → counted (ms, median) | ' +
    'ratio | Lua page avg (µs/1000 entries)',
);
try {
  for (const n of SIZES) {
    const key = streamKey(PREFIX, 0);
    await r.del(key);
    for (let i = 0; i < n; i += 1000) {
      const p = r.pipeline();
      for (let j = i; j < Math.min(n, i + 1000); j++)
        p.xadd(key, '*', ...encodeEntry({ clientId: 'bench', idempotencyKey: `k${j}`, canonical: PAYLOAD }));
      await p.exec();
    }
    await ensureGroups(r, PREFIX, 1);
    await r.xgroup('SETID', key, GROUP, '0', 'ENTRIESREAD', 0);
    const read = (await r.xreadgroup('GROUP', GROUP, 'c', 'COUNT', 10, 'STREAMS', key, '>')) as Array<
      [string, Array<[string]>]
    >;
    const known = await time(20, () => readLag(r, PREFIX, 1));
    // Delete one undelivered entry: Redis reports lag NULL, readLag counts n − 11 entries.
    const after = (await r.xrange(key, `(${read[0]?.[1][9]?.[0]}`, '+', 'COUNT', 2))[1]?.[0];
    if (after === undefined) throw new Error('expected undelivered entries after the tenth');
    await r.xdel(key, after);
    const snap = await readLag(r, PREFIX, 1);
    if (snap.shards[0]?.group?.lag !== null || snap.shards[0]?.group?.undelivered !== n - 11)
      throw new Error(`unexpected reading ${JSON.stringify(snap.shards[0]?.group)}`);
    await r.config('RESETSTAT');
    const counted = await time(5, () => readLag(r, PREFIX, 1));
    const stats = await r.info('commandstats');
    const evalUs = Number(stats.match(/cmdstat_eval:calls=\d+,usec=\d+,usec_per_call=([\d.]+)/)?.[1] ?? Number.NaN);
    console.log(
      `${n} | ${known.toFixed(2)} | ${counted.toFixed(2)} | ${(counted / known).toFixed(1)}× | ${evalUs.toFixed(0)}`,
    );
    await r.del(key);
  }
} finally {
  r.disconnect();
  await server.stop();
}
