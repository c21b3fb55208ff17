// One command line for every benchmark: each scenario and each benchmark script is a
// `surge bench <name>` subcommand whose --help works, each script run directly prints help too,
// a bad option ends in one line and exit 2 (never a stack trace), and the npm scripts are aliases.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { SCRIPT_BENCHES } from '../bench/commands.js';
import { SCENARIOS } from '../bench/options.js';
import { PACKAGE_ROOT } from '../common/paths.js';

const node = (args: string[]) =>
  spawnSync(process.execPath, args, {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, SURGE_BENCH_VIA_CLI: '' },
  });
const CLI = join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js');
const STACK = /\n\s+at /;

describe('surge bench: one command line', () => {
  test('`surge bench --help` lists every scenario and benchmark script', () => {
    const r = node([CLI, 'bench', '--help']);
    assert.equal(r.status, 0, r.stderr);
    for (const name of [...SCENARIOS, ...SCRIPT_BENCHES.map((b) => b.name)])
      assert.match(r.stdout, new RegExp(`^  ${name} `, 'm'), `lists ${name}`);
  });

  for (const name of [...SCENARIOS, ...SCRIPT_BENCHES.map((b) => b.name)]) {
    test(`surge bench ${name} --help`, () => {
      const r = node([CLI, 'bench', name, '--help']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^Usage: surge bench ${name} \\[options\\]`));
      assert.doesNotMatch(r.stdout + r.stderr, STACK);
    });
  }

  for (const b of SCRIPT_BENCHES) {
    test(`node dist/bench/${b.script}.js ${[...(b.leading ?? []), '--help'].join(' ')} prints help; a bad option exits 2`, () => {
      const script = join(PACKAGE_ROOT, 'dist', 'bench', `${b.script}.js`);
      const help = node([script, ...(b.leading ?? []), '--help']);
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, /Usage:/);
      assert.doesNotMatch(help.stdout + help.stderr, STACK);
      const bad = node([script, ...(b.leading ?? []), '--no-such-option']);
      assert.equal(bad.status, 2, bad.stdout + bad.stderr);
      assert.doesNotMatch(bad.stderr, STACK);
      // The subcommand declares every option the script itself parses.
      const source = readFileSync(script, 'utf8');
      const parsed = [...source.matchAll(/^\s+'?([a-z-]+)'?: \{ type: '(?:string|boolean)'/gm)].flatMap((m) =>
        m[1] === undefined || m[1] === 'help' ? [] : [m[1]],
      );
      const declared = b.options.map((x) => /--([a-z-]+)/.exec(x.flags)?.[1]);
      for (const x of parsed) assert.ok(declared.includes(x), `surge bench ${b.name} declares --${x}`);
    });
  }

  test('the npm benchmark scripts are aliases of `surge bench <name>`', () => {
    const scripts = (
      JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
        scripts: Record<string, string>;
      }
    ).scripts;
    const benches = Object.entries(scripts).filter(([k]) => /^(bench:|profile:|soak:)/.test(k));
    assert.ok(benches.length >= 8, benches.map(([k]) => k).join(', '));
    const names = new Set(SCRIPT_BENCHES.map((b) => b.name));
    for (const [k, v] of benches) {
      const [, name] = /^npm run build --silent && node dist\/cli\/surge\.js bench ([a-z0-9-]+)$/.exec(v) ?? [];
      assert.ok(name !== undefined && names.has(name), `${k}: ${v}`);
    }
  });
});
