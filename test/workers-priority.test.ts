// How a worker yields the cores (workers/priority.ts): its threads' nice value, and — when it leads
// its own session, as every role `surge up` starts does — its autogroup's, without which the
// kernel's autogroups would give its session a full share against ingest's whatever its nice.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { getPriority } from 'node:os';
import { describe, test } from 'node:test';
import { autogroupNiceAfter } from '../workers/priority.js';

describe('worker priority', () => {
  test('the autogroup is lowered only by the leader of its session, from its current nice, up to 19', () => {
    const stat = (pid: number, session: number, comm = 'node') => `${pid} (${comm}) S 1 ${pid} ${session} 0 -1 4194560`;
    assert.equal(autogroupNiceAfter(stat(123, 123), 123, '/autogroup-5 nice 0\n', 10), 10);
    assert.equal(autogroupNiceAfter(stat(123, 99), 123, '/autogroup-5 nice 0\n', 10), undefined, 'a shared session');
    assert.equal(autogroupNiceAfter(stat(77, 77, 'a) b'), 77, '/autogroup-9 nice 0', 10), 10, 'a name with ") "');
    assert.equal(autogroupNiceAfter(stat(5, 5), 5, '/autogroup-1 nice -3', 7), 4);
    assert.equal(autogroupNiceAfter(stat(5, 5), 5, '/autogroup-1 nice 15', 10), 19);
    assert.equal(autogroupNiceAfter(stat(5, 5), 5, '', 10), undefined);
  });

  test('a worker process in a session of its own lowers its threads and its autogroup', {
    skip: existsSync('/proc/self/autogroup') ? false : 'no autogroups on this kernel',
  }, async () => {
    // As `surge up` starts the roles: detached, so the child leads a new session.
    const module = new URL('../workers/priority.js', import.meta.url).href;
    const code = `
        import { readFileSync } from 'node:fs';
        import { getPriority } from 'node:os';
        const { lowerPriority } = await import(${JSON.stringify(module)});
        lowerPriority(3, { warn: (o, m) => console.error(m) });
        console.log(JSON.stringify({ nice: getPriority(), autogroup: readFileSync('/proc/self/autogroup', 'utf8') }));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d;
    });
    const code_ = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code_, 0, err);
    const got = JSON.parse(out) as { nice: number; autogroup: string };
    assert.equal(got.nice, Math.min(19, getPriority() + 3));
    assert.match(got.autogroup, /nice 3\b/, `${got.autogroup.trim()}; ${err}`);
  });
});
