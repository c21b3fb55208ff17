// The waiters of `?wait` (ingest/outcomes.ts) on a real Redis: an outcome published after the
// pin wakes every waiter of its order and no other, a wait that runs out ends with undefined
// (never before its time), a cancelled waiter is forgotten and never called, and a stop ends
// every wait at once.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { outcomeKey } from '../common/keys.js';
import { createLogger } from '../common/log.js';
import { type Outcome, outcomeFields } from '../common/outcome.js';
import { OutcomeWaiters, type WaitListener } from '../ingest/outcomes.js';
import { createTestEnv, type TestEnv } from '../devkit/scratch.js';

/** A listener that records what it heard, and a promise of the first call. */
function listener(): WaitListener & { heard: Array<Outcome | undefined>; first: Promise<Outcome | undefined> } {
  let resolve: (o: Outcome | undefined) => void = () => {};
  const first = new Promise<Outcome | undefined>((r) => {
    resolve = r;
  });
  const heard: Array<Outcome | undefined> = [];
  return {
    heard,
    first,
    ended(o) {
      heard.push(o);
      resolve(o);
    },
  };
}

describe('outcome waiters', () => {
  let env: TestEnv;
  let redis: Redis;
  let waiters: OutcomeWaiters;

  before(async () => {
    env = await createTestEnv({ SURGE_SHARDS: '2' });
    redis = new Redis(env.redisUrl);
    waiters = new OutcomeWaiters(env.config, createLogger('silent', 'outcome-waiters-test'));
    waiters.start();
  });

  after(async () => {
    await waiters?.stop();
    redis?.disconnect();
    await env?.cleanup();
  });

  const ready = () => new Promise<void>((r) => waiters.whenReady(r));
  const publish = (shard: number, o: Outcome) => redis.xadd(outcomeKey(env.prefix, shard), '*', ...outcomeFields(o));

  test('an outcome wakes every waiter of its order, and only those', async () => {
    const a = listener();
    const b = listener();
    const other = listener();
    const wa = waiters.wait('alice', 'k-1', 30_000, a);
    waiters.wait('alice', 'k-1', 30_000, b);
    const wo = waiters.wait('bob', 'k-1', 30_000, other);
    assert.equal(waiters.size, 2, 'two orders waited for');
    await ready();
    const applied: Outcome = {
      clientId: 'alice',
      idempotencyKey: 'k-1',
      status: 'applied',
      orderRef: 's1-1-0',
      appliedAt: new Date().toISOString(),
    };
    await publish(1, applied);
    assert.deepEqual(await a.first, applied);
    assert.deepEqual(await b.first, applied);
    assert.equal(wa.waiting, false);
    assert.equal(wo.waiting, true, "another client's order with the same key still waits");
    assert.deepEqual(other.heard, []);
    wo.cancel();
    assert.equal(waiters.size, 0);
  });

  test('a wait that runs out ends with undefined, not before its time', async () => {
    const l = listener();
    const started = Date.now();
    waiters.wait('alice', 'k-2', 200, l);
    assert.equal(await l.first, undefined);
    assert.ok(Date.now() - started >= 200, `ended after ${Date.now() - started} ms`);
    assert.equal(waiters.size, 0);
  });

  test('a cancelled waiter is forgotten and never called', async () => {
    const gone = listener();
    const stays = listener();
    const w = waiters.wait('alice', 'k-3', 200, gone);
    waiters.wait('alice', 'k-3', 30_000, stays);
    w.cancel();
    w.cancel();
    assert.equal(w.waiting, false);
    await ready();
    await publish(0, { clientId: 'alice', idempotencyKey: 'k-3', status: 'rejected', reason: 'out_of_stock' });
    assert.equal((await stays.first)?.status, 'rejected');
    // Past the cancelled one's tick: the wheel skipped it.
    const later = listener();
    waiters.wait('alice', 'k-4', 250, later);
    await later.first;
    assert.deepEqual(gone.heard, []);
  });

  test('a stop ends every wait at once, and later waits do not wait', async () => {
    const l = listener();
    waiters.wait('alice', 'k-5', 30_000, l);
    await waiters.stop();
    assert.deepEqual(l.heard, [undefined]);
    const late = waiters.wait('alice', 'k-6', 30_000, listener());
    assert.equal(late.waiting, false);
    await ready();
  });
});
