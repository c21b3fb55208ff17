// The single-order intake (ingest/intake.ts) sends a turn's orders at the end of the turn, and
// also every full accept call's worth without waiting for it: a long poll phase must not hold the
// orders it read (and their places in flight) until it ends.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OrderIntake } from '../ingest/intake.js';
import { ORDERS_PER_SCRIPT_CALL, type OrderWriter, type PreparedOrder, type WriteOutcome } from '../ingest/writer.js';

/** A writer that records what reaches it and accepts every order. */
function recordingWriter() {
  const written: string[] = [];
  let flushes = 0;
  const writer = {
    prepare: (clientId: string, idempotencyKey: string) =>
      ({
        clientId,
        idempotencyKey,
        shard: 0,
        recordKey: '',
        streamKey: '',
        canonical: '',
        fingerprint: undefined,
      }) as PreparedOrder,
    submit: (p: PreparedOrder, done: (o: WriteOutcome) => void) => {
      written.push(p.idempotencyKey);
      done({ kind: 'accepted', body: '{}' });
    },
    flushNow: () => {
      flushes++;
    },
  };
  return { writer: writer as unknown as OrderWriter, written, flushes: () => flushes };
}

const body = Buffer.from(
  JSON.stringify({ customer_id: 'c', currency: 'EUR', items: [{ sku: 's', qty: 1, unit_price_cents: 1 }] }),
);

test('a full call of orders goes to the writer at once; the rest of the turn at its end', async () => {
  const { writer, written, flushes } = recordingWriter();
  const intake = new OrderIntake(writer);
  const outcomes: Array<Promise<unknown>> = [];
  for (let i = 0; i < ORDERS_PER_SCRIPT_CALL + 3; i++) outcomes.push(intake.submit(body, 'client', `k-${i}`));
  // Still inside the turn that read them: the first full call's worth is written already.
  assert.equal(written.length, ORDERS_PER_SCRIPT_CALL);
  assert.equal(flushes(), 1);
  const all = await Promise.all(outcomes);
  assert.equal(written.length, ORDERS_PER_SCRIPT_CALL + 3, 'the rest at the end of the turn');
  assert.deepEqual(
    written,
    Array.from({ length: ORDERS_PER_SCRIPT_CALL + 3 }, (_, i) => `k-${i}`),
    'in the order they came',
  );
  assert.ok(all.every((o) => (o as WriteOutcome).kind === 'accepted'));
});

test('fewer than a call: nothing is written until the end of the turn', async () => {
  const { writer, written } = recordingWriter();
  const intake = new OrderIntake(writer);
  const outcome = intake.submit(body, 'client', 'one');
  assert.equal(written.length, 0);
  assert.equal(((await outcome) as WriteOutcome).kind, 'accepted');
  assert.deepEqual(written, ['one']);
});
