// The door's Retry-After: return times handed out like tickets at the rate the door accepts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Door } from '../ingest/door.js';

describe('door: Retry-After', () => {
  const limits = { ingestMaxInFlight: 10, ingestMaxEventLoopDelayMs: 0 };

  test('spreads the clients shed at once over the time the door needs to let them back in', () => {
    // Nothing accepted yet: the door assumes it lets 100 a second back in.
    const door = new Door(limits, () => 0);
    const now = 1_000_000;
    const answers = Array.from({ length: 1000 }, () => door.shedOne(now));
    assert.equal(answers[0], 1, 'the first comes back at once');
    assert.equal(answers[99], 1, 'a second holds 100 returns');
    assert.equal(answers[100], 2);
    assert.equal(answers[999], 10, 'the thousandth after ten seconds');
    for (let i = 1; i < answers.length; i++) assert.ok((answers[i] ?? 0) >= (answers[i - 1] ?? 0), 'in order');
  });

  test('never asks for more than 30 s, and forgets return times that have passed', () => {
    const door = new Door(limits, () => 0.99);
    const now = 5_000;
    let last = 0;
    for (let i = 0; i < 10_000; i++) last = door.shedOne(now);
    assert.equal(last, 30);
    assert.equal(door.shedOne(now + 60_000), 2, 'a minute later: the next second (with jitter)');
  });

  test('jitter adds at most one second', () => {
    const door = new Door(limits, () => 0.7);
    assert.equal(door.shedOne(0), 2);
  });
});

describe('door: when it sheds', () => {
  test('writes in flight at the limit: every further one is shed, one answered lets the next in', () => {
    const door = new Door({ ingestMaxInFlight: 3, ingestMaxEventLoopDelayMs: 0 });
    door.inFlight = 2;
    assert.equal(door.check(), undefined);
    door.inFlight = 3;
    assert.equal(door.check(), 'in_flight');
    door.inFlight = 1000;
    assert.equal(door.check(), 'in_flight');
    door.inFlight = 2;
    assert.equal(door.check(), undefined);
  });

  test('a late event loop sheds only while enough writes are in flight; 0 turns a signal off', () => {
    const door = new Door({ ingestMaxInFlight: 0, ingestMaxEventLoopDelayMs: 20 });
    door.delayMs = 21;
    door.inFlight = 1000;
    assert.equal(door.check(), 'event_loop_delay', 'in-flight limit 0: no limit, the delay still sheds');
    door.inFlight = 2;
    assert.equal(door.check(), undefined, 'a late loop with a few writes waiting refuses nobody');
    door.inFlight = 1000;
    door.delayMs = 20;
    assert.equal(door.check(), undefined, 'at the threshold: not over it');
    const off = new Door({ ingestMaxInFlight: 0, ingestMaxEventLoopDelayMs: 0 });
    off.delayMs = 1000;
    off.inFlight = 1_000_000;
    assert.equal(off.check(), undefined);
  });
});
