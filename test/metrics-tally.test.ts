// TalliedCounter and TalliedHistogram: counts kept on the hot path reach the prom-client Counter at each scrape,
// exactly once, per label set.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { TalliedCounter, TalliedHistogram } from '../metrics/definitions.js';

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

test('a tallied histogram writes what prom-client’s Histogram writes for the same observations', async () => {
  const tallied = new Registry();
  const plain = new Registry();
  for (const r of [tallied, plain]) r.setDefaultLabels({ role: 'ingest' });
  const config = {
    name: 'tally_seconds',
    help: 'test',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.005, 0.1, 1],
  };
  const t = new TalliedHistogram({ ...config, registers: [tallied] });
  const h = new Histogram({ ...config, registers: [plain] });
  // Below, on and between the bounds, past the last one; two label sets, one seen first later.
  const seen: Array<[string, number]> = [
    ['POST /v1/orders', 0.0004],
    ['POST /v1/orders', 0.001],
    ['GET /healthz', 0.0051],
    ['POST /v1/orders', 0.1],
    ['POST /v1/orders', 3.5],
    ['GET /healthz', 0],
    ['POST /v1/orders', 0.0049],
  ];
  assert.equal(await tallied.metrics(), await plain.metrics(), 'no observation: the same (empty) family');
  for (const [route, v] of seen) {
    t.observe({ route }, v);
    h.observe({ route }, v);
  }
  const text = await tallied.metrics();
  assert.equal(text, await plain.metrics());
  assert.match(text, /tally_seconds_bucket\{le="0.005",role="ingest",route="POST \/v1\/orders"\} 3\n/);
  assert.match(text, /tally_seconds_count\{role="ingest",route="POST \/v1\/orders"\} 5\n/);
  assert.deepEqual((await t.get()).values, (await h.get()).values);
  t.reset();
  h.reset();
  assert.equal(await tallied.metrics(), await plain.metrics(), 'after reset');
});

test('a tallied histogram without labels takes observe(value), as prom-client’s does', async () => {
  const tallied = new Registry();
  const plain = new Registry();
  const config = { name: 'tally_orders', help: 'test', buckets: [1, 2, 5, 10] };
  const t = new TalliedHistogram(config);
  const h = new Histogram(config);
  tallied.registerMetric(t as unknown as Histogram);
  plain.registerMetric(h);
  for (const v of [1, 3, 12, 2, 5]) {
    t.observe(v);
    h.observe(v);
  }
  const text = await tallied.metrics();
  assert.equal(text, await plain.metrics());
  assert.match(text, /tally_orders_bucket\{le="5"\} 4\n/);
});
