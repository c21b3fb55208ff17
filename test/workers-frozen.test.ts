// A worker frozen in the middle of a batch (SIGSTOP, a paused VM) must not hold what the worker
// that claims its entries needs. PostgreSQL ends a frozen session's transaction through
// statement_timeout and idle_in_transaction_session_timeout, except while the backend waits for
// COPY data: neither timeout applies there, so the transaction may not hold a lock another
// batch can wait on at that point. Here a batch is frozen at each of its COPYs in turn, for
// real (the COPY is sent, its data never is), and a second apply of the same orders must commit.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createPool, type Pool, type PoolClient } from '../common/db.js';
import { encodeEntry } from '../common/entry.js';
import { streamKey } from '../common/keys.js';
import { canonicalOrderJson, type Order } from '../common/order.js';
import { applyBatch, encodeBatch, type TaskEntry } from '../workers/apply.js';
import { createTestDatabase, type TestDatabase } from '../devkit/scratch.js';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase({ migrate: true });
});
after(async () => {
  await db?.drop();
});

/** A COPY FROM STDIN query object (pg-copy-streams): a submittable that is also a Writable. */
const isCopy = (q: unknown): q is Writable & { text: string } =>
  q instanceof Writable && typeof (q as { submit?: unknown }).submit === 'function';

/**
 * A pool whose `freezeAt`-th COPY is sent to PostgreSQL but gets none of its data, as when the
 * process stops right after sending it; `frozen` receives that backend's pid.
 */
function freezingPool(pool: Pool, freezeAt: number, frozen: (pid: number) => void): Pool {
  let copies = 0;
  const wrap = (client: PoolClient): PoolClient =>
    new Proxy(client, {
      get(target, prop, receiver) {
        if (prop !== 'query') return Reflect.get(target, prop, receiver);
        return (...args: unknown[]) => {
          const q = args[0];
          if (!isCopy(q) || ++copies !== freezeAt) return Reflect.apply(target.query, target, args);
          const real = Reflect.apply(target.query, target, args) as Writable;
          // Takes the data and never passes it on: the backend waits in COPY for good.
          const stuck = new Writable({ write: () => {} });
          real.on('error', (e) => stuck.destroy(e));
          frozen((target as unknown as { processID: number }).processID);
          return stuck;
        };
      },
    });
  return new Proxy(pool, {
    get(target, prop, receiver) {
      if (prop !== 'connect') return Reflect.get(target, prop, receiver);
      return async () => wrap(await target.connect());
    },
  });
}

function entries(tag: string, n: number): TaskEntry[] {
  const base = Date.now();
  return Array.from({ length: n }, (_, i) => {
    const order: Order = {
      customer_id: `c${i}`,
      currency: 'EUR',
      items: [
        { sku: 'frozen-a', qty: 1, unit_price_cents: 100 },
        { sku: 'frozen-b', qty: 2, unit_price_cents: 50 },
      ],
    };
    return {
      id: `${base}-${i}`,
      fields: encodeEntry({ clientId: 'c1', idempotencyKey: `${tag}-${i}`, canonical: canonicalOrderJson(order) }),
      deliveries: 1,
    };
  });
}

test('a batch frozen at any of its COPYs holds nothing the claiming worker waits on', async () => {
  const admin = createPool(db.url, { max: 1 });
  const live = createPool(db.url, { max: 1, sessionTimeoutMs: 300 });
  let pid: number | undefined;
  try {
    await admin.query(`INSERT INTO inventory (sku, available) VALUES ('frozen-a', 1000000), ('frozen-b', 1000000)`);
    let freezes = 0;
    for (let freezeAt = 1; ; freezeAt++) {
      const batch = entries(`k${freezeAt}`, 20);
      const task = { stream: streamKey('frozen', 0), entries: batch };
      pid = undefined;
      let reached!: () => void;
      const frozenNow = new Promise<void>((r) => {
        reached = r;
      });
      const stuckPool = createPool(db.url, { max: 1, sessionTimeoutMs: 300 });
      const stuck = applyBatch(
        freezingPool(stuckPool, freezeAt, (p) => {
          pid = p;
          reached();
        }),
        task,
        encodeBatch(batch),
        { retryBudgetMs: 10_000 },
      );
      const first = await Promise.race([frozenNow.then(() => 'frozen' as const), stuck.then(() => 'done' as const)]);
      if (first === 'done') {
        await stuckPool.end();
        break;
      }
      freezes++;
      // The frozen backend really is waiting for COPY data.
      const state = await admin.query<{ wait_event: string | null }>(
        'SELECT wait_event FROM pg_stat_activity WHERE pid = $1',
        [pid],
      );
      assert.equal(state.rows[0]?.wait_event, 'ClientRead', `COPY #${freezeAt} waits for the client`);

      const outcome = await applyBatch(live, task, encodeBatch(batch), { retryBudgetMs: 3000 });
      assert.equal(outcome.gaveUp, undefined, `frozen at COPY #${freezeAt}: the claiming apply waited on its locks`);
      assert.equal(outcome.stats.inserted, batch.length, `frozen at COPY #${freezeAt}: every order committed`);

      // Unfreeze the way a restarted process would: its connection goes, its batch is a duplicate.
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      pid = undefined;
      const late = await stuck;
      assert.equal(late.stats.inserted, 0, 'the frozen batch, retried, finds its orders applied');
      await stuckPool.end();
    }
    assert.ok(freezes >= 1, 'the apply issued at least one COPY');
  } finally {
    // A failed check leaves the frozen backend waiting: end it, or the database cannot be dropped.
    if (pid !== undefined) await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await live.end();
    await admin.end();
  }
});
