// The full fault suite (`npm run test:faults`): every fault one at a time with more load per
// step than the short suite, then read-only PostgreSQL and a mixed run, then the Redis Cluster
// test. Prints the results table and writes it with the machine and the command to
// bench/results/faults-<date>.md (SURGE_FAULTS_REPORT=<path> to write elsewhere).
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../../common/paths.js';
import {
  assertExactlyOnce,
  DISK_FULL,
  FaultStack,
  type FaultName,
  formatRow,
  SINGLE_FAULTS,
  TABLE_HEADER,
} from './stack.js';

const FAULTS: FaultName[] = ['none', ...SINGLE_FAULTS, 'mixed'];
const PROGRESS = Number(process.env.SURGE_FAULTS_PROGRESS ?? 300);

describe('fault suite (full)', () => {
  const stack = new FaultStack({ progress: PROGRESS, concurrency: 6, log: (l) => console.log(l), smallDisks: true });
  const started = Date.now();
  before(async () => {
    await stack.start();
  });
  after(async () => {
    const table = `${TABLE_HEADER}\n${stack.rows.map(formatRow).join('\n')}`;
    console.log(table);
    const cpu = cpus()[0]?.model ?? 'unknown';
    const report = [
      `# Fault suite results (${new Date().toISOString().slice(0, 10)})`,
      '',
      'Command: `npm run test:faults` (build, then ' +
        '`node --test dist/test/faults/full.suite.js dist/test/faults/redis-cluster.test.js`).',
      `Machine: ${cpus().length} × ${cpu}, Node ${process.version}, load average at the end ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' / ')} (shared with other work).`,
      'Stack: own redis-server (appendonly yes, appendfsync always), private PostgreSQL, ' +
        '2 `surge ingest` + 2 `surge work` (no threads, the default), 4 shards, SURGE_CLAIM_TIMEOUT_MS=1500; ' +
        `load: 6 senders, ${PROGRESS} accepted orders per fault step. ` +
        `Whole run ${((Date.now() - started) / 1000).toFixed(0)} s.`,
      '',
      table,
      '',
      [
        'Columns: see docs/faults.md.',
        'lost = accepted keys in neither `orders` nor `dead_letters` (+ keys never answered 202);',
        'duplicates = keys with more than one row or item set;',
        'phantoms = orders whose key never got a 202;',
        'recovery = fault injected → every order accepted before it is in PostgreSQL.',
      ].join(' '),
      '',
    ].join('\n');
    const path =
      process.env.SURGE_FAULTS_REPORT ??
      join(PACKAGE_ROOT, 'bench', 'results', `faults-${new Date().toISOString().slice(0, 10)}.md`);
    writeFileSync(path, report);
    console.log(`written ${path}`);
    await stack.stop();
  });
  for (const fault of FAULTS) {
    test(`${fault}: 0 lost, 0 doubled, 0 phantoms, content exact, stock consistent, metrics agree`, async (t) => {
      if (DISK_FULL.has(fault) && !stack.canFillDisks) {
        t.skip('no small filesystem could be mounted (needs root and a tmpfs mount)');
        return;
      }
      const row = await stack.phase(fault);
      assertExactlyOnce(row);
    });
  }
});
