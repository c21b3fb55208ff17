import assert from 'node:assert/strict';

/**
 * The value read where the test knows there is one (an array index, a map key, a regex group):
 * fails the test, naming `what`, when there is none.
 */
export function defined<T>(value: T | undefined, what: string): T {
  assert.ok(value !== undefined, `${what} is missing`);
  return value;
}

/** Splits an order_ref (`s<shard>-<entry ID>`) into its shard and stream entry ID; fails the test on other text. */
export function parseOrderRef(ref: string): { shard: number; entryId: string } {
  const m = /^s(\d+)-(\d+-\d+)$/.exec(ref);
  assert.ok(m, `not an order_ref: ${ref}`);
  return { shard: Number(defined(m[1], 'the shard of an order_ref')), entryId: defined(m[2], 'the entry ID') };
}
