// The door's Retry-After (return times handed out like tickets at the rate the door accepts) and
// its signals: writes in flight, event-loop delay, and how long the running turn has run.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { describe, test } from 'node:test';
import { Door } from '../ingest/door.js';
import { SHED_REASONS } from '../metrics/definitions.js';

describe('door: Retry-After', () => {
  const limits = { ingestMaxInFlight: 10, ingestMaxEventLoopDelayMs: 0, ingestMaxTurnMs: 0 };

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
    const door = new Door({ ingestMaxInFlight: 3, ingestMaxEventLoopDelayMs: 0, ingestMaxTurnMs: 0 });
    door.inFlight = 2;
    assert.equal(door.check(0), undefined);
    door.inFlight = 3;
    assert.equal(door.check(0), 'in_flight');
    door.inFlight = 1000;
    assert.equal(door.check(0), 'in_flight');
    door.inFlight = 2;
    assert.equal(door.check(0), undefined);
  });

  test('a late event loop sheds only while enough writes are in flight; 0 turns a signal off', () => {
    const door = new Door({ ingestMaxInFlight: 0, ingestMaxEventLoopDelayMs: 20, ingestMaxTurnMs: 0 });
    door.delayMs = 21;
    door.inFlight = 1000;
    assert.equal(door.check(0), 'event_loop_delay', 'in-flight limit 0: no limit, the delay still sheds');
    door.inFlight = 2;
    assert.equal(door.check(0), undefined, 'a late loop with a few writes waiting refuses nobody');
    door.inFlight = 1000;
    door.delayMs = 20;
    assert.equal(door.check(0), undefined, 'at the threshold: not over it');
    const off = new Door({ ingestMaxInFlight: 0, ingestMaxEventLoopDelayMs: 0, ingestMaxTurnMs: 0 });
    off.delayMs = 1000;
    off.inFlight = 1_000_000;
    assert.equal(off.check(0), undefined);
  });
});

describe('door: a long turn', () => {
  const limits = { ingestMaxInFlight: 0, ingestMaxEventLoopDelayMs: 0, ingestMaxTurnMs: 50 };
  const turnEnd = () => new Promise<void>((resolve) => setImmediate(resolve));

  test('the first request of a turn stamps its start; writes arriving after the budget are shed', async () => {
    const door = new Door(limits);
    door.inFlight = 100;
    door.arrived(1_000);
    assert.equal(door.check(1_000), undefined);
    door.arrived(1_040); // a later request of the same turn moves nothing
    assert.equal(door.turnAge(1_040), 40);
    assert.equal(door.check(1_050), undefined, 'at the budget: not over it');
    assert.equal(door.check(1_051), 'turn');
    assert.equal(door.check(4_000), 'turn');
    await turnEnd();
    assert.equal(door.turnAge(4_000), 0, 'the turn ended: no age until the next request');
    assert.equal(door.check(4_000), undefined);
    door.arrived(4_000);
    assert.equal(door.check(4_030), undefined, 'the next turn counts from its own first request');
    await turnEnd();
  });

  test('a long turn with few writes in flight refuses nobody; 0 turns the signal off', async () => {
    const door = new Door(limits);
    door.inFlight = 15;
    door.arrived(0);
    assert.equal(door.check(1_000), undefined, 'a GC pause inside a quiet turn is no reason to shed');
    door.inFlight = 16;
    assert.equal(door.check(1_000), 'turn');
    const off = new Door({ ...limits, ingestMaxTurnMs: 0 });
    off.inFlight = 1_000_000;
    off.arrived(0);
    assert.equal(off.check(1_000_000), undefined);
    await turnEnd();
  });

  test('a connection shed late in a long turn is not read again until the turn ends', async () => {
    const calls: string[] = [];
    const connection = () => {
      const handle = {
        reading: true,
        readStop: () => calls.push('stop') && 0,
        readStart: () => calls.push('start') && 0,
      };
      return { _handle: handle, destroyed: false } as unknown as Socket;
    };
    const door = new Door(limits);
    door.inFlight = 100;
    door.arrived(0);
    door.shedOne(50, connection());
    assert.deepEqual(calls, [], 'shed within the budget (for another reason): read on');
    const late = connection();
    door.shedOne(51, late);
    door.shedOne(52, late);
    assert.deepEqual(calls, ['stop'], 'past the budget: not read until the turn ends, stopped once');
    const gone = connection();
    door.shedOne(60, gone);
    (gone as { destroyed: boolean }).destroyed = true;
    await turnEnd();
    assert.deepEqual(calls, ['stop', 'stop', 'start'], 'read again at the turn end; a closed one is left alone');
  });

  test('the writes in flight, then the loop delay, are named before the turn', async () => {
    const door = new Door({ ingestMaxInFlight: 100, ingestMaxEventLoopDelayMs: 20, ingestMaxTurnMs: 50 });
    door.arrived(0);
    door.inFlight = 50;
    assert.equal(door.check(100), 'turn');
    door.delayMs = 30;
    assert.equal(door.check(100), 'event_loop_delay');
    door.inFlight = 100;
    assert.equal(door.check(100), 'in_flight');
    await turnEnd();
  });
});

test('every shed reason is named where operators read them: the dashboard panel and docs/metrics.md', () => {
  const dashboard = readFileSync('metrics/dashboard.json', 'utf8');
  const panel = dashboard.match(/"description": "Writes answered 503[^"]*"/)?.[0] ?? '';
  const row = readFileSync('docs/metrics.md', 'utf8').match(/^\| `surge_ingest_shed_total`.*$/m)?.[0] ?? '';
  for (const reason of SHED_REASONS) {
    assert.match(panel, new RegExp(`\\b${reason}\\b`), `the dashboard's shed panel names ${reason}`);
    assert.match(row, new RegExp(`\`${reason}\``), `docs/metrics.md names ${reason}`);
  }
});
