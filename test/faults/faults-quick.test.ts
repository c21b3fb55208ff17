// The short fault suite (part of `npm test`): the stack of test/faults/stack.ts — own
// redis-server with AOF always, a private PostgreSQL, 2 ingest + 2 worker processes, steady
// load — and every fault once with little load between steps. `npm run test:faults` runs the
// full suite (more load per step, read-only PostgreSQL, a mixed run) and writes its table.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertExactlyOnce,
  DISK_FULL,
  FaultStack,
  type FaultName,
  formatRow,
  SINGLE_FAULTS,
  TABLE_HEADER,
} from './stack.js';

// Read-only PostgreSQL is left to the full suite, as its header says.
const ALL: FaultName[] = SINGLE_FAULTS.filter((f) => f !== 'postgres-read-only');
/** SURGE_FAULTS_ONLY=a,b runs only those faults (debugging). */
const FAULTS = process.env.SURGE_FAULTS_ONLY ? (process.env.SURGE_FAULTS_ONLY.split(',') as FaultName[]) : ALL;

describe('fault suite (short)', () => {
  const stack = new FaultStack({
    progress: Number(process.env.SURGE_FAULTS_PROGRESS ?? 60),
    log: process.env.SURGE_FAULTS_VERBOSE ? (l) => console.log(l) : undefined,
    smallDisks: FAULTS.some((f) => DISK_FULL.has(f)),
  });
  before(async () => {
    await stack.start();
  });
  after(async () => {
    console.log(`${TABLE_HEADER}\n${stack.rows.map(formatRow).join('\n')}`);
    await stack.stop();
  });
  for (const fault of FAULTS) {
    test(`${fault}: every 202 applied exactly once or dead-lettered; nothing lost, doubled, altered or invented; stock consistent`, async (t) => {
      if (DISK_FULL.has(fault) && !stack.canFillDisks) {
        t.skip('no small filesystem could be mounted (needs root and a tmpfs mount)');
        return;
      }
      const row = await stack.phase(fault);
      assertExactlyOnce(row);
      assert.ok(row.accepted > 0 && row.applied > 0);
    });
  }
});
