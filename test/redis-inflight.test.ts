// Regression test for the fix in common/redis.ts: with autoResendUnfulfilledCommands off, a
// command in flight when Redis went away must fail (the caller decides), not hang forever once
// the client reconnects — that hang stalled every worker after a Redis restart.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createRedis, IN_FLIGHT_LOST } from '../common/redis.js';
import { type RedisServer, startRedisServer } from '../devkit/redis-server.js';
import { waitFor } from '../devkit/wait.js';

describe('Redis client: commands in flight at a disconnect', () => {
  let server: RedisServer;
  before(async () => {
    server = await startRedisServer({ appendonly: true, appendfsync: 'always' });
  });
  after(async () => {
    await server?.stop();
  });

  test('a blocked XREAD (reader settings: retry forever) rejects when the server dies, and the client works after the restart', async () => {
    const reader = createRedis({ redisUrl: server.url, redisClusterNodes: [] }, { maxRetriesPerRequest: null });
    reader.on('error', () => {});
    try {
      await reader.ping();
      let settled: { ok: boolean; error?: string } | undefined;
      reader
        .call('XREAD', 'BLOCK', '0', 'STREAMS', 'inflight-test', '$')
        .then(() => {
          settled = { ok: true };
        })
        .catch((e: Error) => {
          settled = { ok: false, error: e.message };
        });
      await waitFor('XREAD blocked on the server', async () => {
        const probe = createRedis({ redisUrl: server.url, redisClusterNodes: [] });
        try {
          return String(await probe.client('LIST')).includes('cmd=xread');
        } finally {
          probe.disconnect();
        }
      });
      await server.kill();
      await server.restart();
      await waitFor('the in-flight XREAD settled', () => settled !== undefined, { timeoutMs: 10_000 });
      assert.deepEqual(settled, { ok: false, error: IN_FLIGHT_LOST });
      await waitFor('reconnected', async () => (await reader.ping()) === 'PONG');
    } finally {
      reader.disconnect();
    }
  });
});
