// shardFor is part of the data layout: a retry must land on the shard that holds its idempotency
// record, across processes and versions. It is FNV-1a-32 over `client NUL key` (UTF-16 code
// units) mod N; the values below were computed by the first version and must never change.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { idemKey, shardFor, streamKey } from '../common/keys.js';
import { keySlot } from '../common/redis.js';

function reference(clientId: string, key: string, shards: number): number {
  const s = `${clientId}\u0000${key}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % shards;
}

test('shardFor: the shards of known (client, key) pairs do not change', () => {
  assert.equal(shardFor('0e8f8a5e-1c1d-4f0e-9a4e-123456789abc', 'order-1', 16), 15);
  assert.equal(shardFor('alice', 'key-ü-€-😀', 7), 5);
  assert.equal(shardFor('', '', 4), 3);
  assert.equal(shardFor('c', '', 1000), 134);
});

test('shardFor equals FNV-1a over `client NUL key` for any strings and shard count', () => {
  fc.assert(
    fc.property(
      fc.string({ unit: 'binary' }),
      fc.string({ unit: 'binary' }),
      fc.integer({ min: 1, max: 4096 }),
      (client, key, shards) => {
        assert.equal(shardFor(client, key, shards), reference(client, key, shards));
      },
    ),
    { numRuns: 2000 },
  );
});

// keySlot routes durable-mode accept calls on Redis Cluster; test/faults/redis-cluster.test.ts
// also compares it with CLUSTER KEYSLOT on a real cluster.
test('keySlot: CRC16 (XMODEM) mod 16384, over the hash tag when there is a non-empty one', () => {
  assert.equal(keySlot('123456789'), 0x31c3); // the CRC16 check value of the Redis Cluster spec
  assert.equal(keySlot('{user1000}.following'), keySlot('{user1000}.followers'));
  assert.equal(keySlot('foo{bar}{zap}'), keySlot('bar'));
  assert.equal(keySlot('foo{{bar}}zap'), keySlot('{bar'));
  assert.equal(keySlot('foo{}{bar}'), keySlot('foo{}{bar}'));
  assert.notEqual(keySlot('foo{}{bar}'), keySlot('bar'), 'an empty tag hashes the whole key');
  assert.equal(keySlot('surge:{s0}:orders'), 11097);
  // Its UTF-8 bytes, as Redis hashes them (the UTF-16 code unit would give 11271).
  assert.equal(keySlot('é'), 10180);
});

test('keySlot: a shard stream and its idempotency records share one slot for any prefix and key', () => {
  fc.assert(
    fc.property(fc.string(), fc.nat(63), fc.string(), fc.string(), (prefix, shard, client, key) => {
      fc.pre(!prefix.includes('{'));
      assert.equal(keySlot(idemKey(prefix, shard, client, key)), keySlot(streamKey(prefix, shard)));
    }),
  );
});
