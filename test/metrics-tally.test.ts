// TalliedCounter: counts kept on the hot path reach the prom-client Counter at each scrape,
// exactly once, per label set.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { TalliedCounter } from '../metrics/definitions.js';

function seriesValue(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('a tallied counter shows its counts at each scrape, per label set, without counting twice', async () => {
  const registry = new Registry();
  const c = new TalliedCounter({
    name: 'tally_test_total',
    help: 'test',
    labelNames: ['route', 'code'] as const,
    registers: [registry],
  });
  c.inc({ route: 'POST /v1/orders', code: '202' });
  c.inc({ route: 'POST /v1/orders', code: '202' });
  c.inc({ route: 'POST /v1/orders', code: '400' }, 5);
  c.inc({ route: 'GET /healthz', code: '202' });
  let text = await registry.metrics();
  assert.equal(seriesValue(text, 'tally_test_total{route="POST /v1/orders",code="202"}'), 2);
  assert.equal(seriesValue(text, 'tally_test_total{route="POST /v1/orders",code="400"}'), 5);
  assert.equal(seriesValue(text, 'tally_test_total{route="GET /healthz",code="202"}'), 1);

  // A second scrape with nothing new shows the same totals; new counts add to them.
  text = await registry.metrics();
  assert.equal(seriesValue(text, 'tally_test_total{route="POST /v1/orders",code="202"}'), 2);
  c.inc({ route: 'POST /v1/orders', code: '202' }, 3);
  text = await registry.metrics();
  assert.equal(seriesValue(text, 'tally_test_total{route="POST /v1/orders",code="202"}'), 5);
  assert.equal(seriesValue(text, 'tally_test_total{route="POST /v1/orders",code="400"}'), 5);
});

test('label values that would join into the same text stay apart', async () => {
  const registry = new Registry();
  const c = new TalliedCounter({
    name: 'tally_join_total',
    help: 'test',
    labelNames: ['a', 'b'] as const,
    registers: [registry],
  });
  c.inc({ a: 'x y', b: 'z' });
  c.inc({ a: 'x', b: 'y z' });
  const text = await registry.metrics();
  assert.equal(seriesValue(text, 'tally_join_total{a="x y",b="z"}'), 1);
  assert.equal(seriesValue(text, 'tally_join_total{a="x",b="y z"}'), 1);
});
