// The commit message convention (CONTRIBUTING.md): the rule itself, the commit-msg hook that
// applies it to a message file, and the lint step that applies it to the commits not on main.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { PACKAGE_ROOT } from '../common/paths.js';

const SCRIPT = join(PACKAGE_ROOT, 'scripts', 'check-commits.mjs');
const HOOK = join(PACKAGE_ROOT, '.githooks', 'commit-msg');
const { commitMessageProblems, MAX_SUBJECT_LENGTH } = (await import(
  pathToFileURL(SCRIPT).href
)) as typeof import('../scripts/check-commits.mjs');

const dir = mkdtempSync(join(tmpdir(), 'surge-commits-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('subjects of the form `area: summary` within the length limit pass', () => {
  for (const message of [
    'ingest: answer 413 before reading the whole body\n\nA client sending too much should learn it early.\n',
    'test/support: wait for the consumer group, not a fixed time\n',
    `ci: ${'x'.repeat(MAX_SUBJECT_LENGTH - 4)}`,
    '# a comment git drops\n\nworkers: apply batches in one transaction\n',
    'Merge branch "h1" into main with a subject as long as git likes to make it, well over the limit',
    'Revert "ingest: answer 413 before reading the whole body"',
    'fixup! ingest: answer 413 before reading the whole body',
    'squash! anything at all',
    'docs: a subject\n# ------------------------ >8 ------------------------\ndiff --git a/x b/x\n',
  ]) {
    assert.deepEqual(commitMessageProblems(message), [], message);
  }
});

test('long subjects, subjects without an area and a missing blank line fail', () => {
  const cases: Array<[string, RegExp]> = [
    [`ci: ${'x'.repeat(MAX_SUBJECT_LENGTH - 3)}`, /characters/],
    ['answer 413 before reading the whole body', /area/],
    ['Ingest: capitalised area', /area/],
    ['ingest:missing space', /area/],
    ['ingest answer: 413', /area/],
    ['ingest: subject\nbody right below it', /blank line/],
    ['', /empty/],
    ['# only a comment\n', /empty/],
  ];
  for (const [message, expected] of cases) {
    const problems = commitMessageProblems(message);
    assert.ok(
      problems.some((p) => expected.test(p)),
      `${JSON.stringify(message)}: ${problems.join('; ')}`,
    );
  }
});

function hook(message: string): number | null {
  const file = join(dir, 'COMMIT_EDITMSG');
  writeFileSync(file, message);
  return spawnSync(HOOK, [file], { stdio: 'ignore' }).status;
}

test('the commit-msg hook accepts a good message file and rejects a bad one', () => {
  assert.equal(hook('common: read the shard count once\n\nEvery caller read it again.\n'), 0);
  assert.equal(hook('Read the shard count once in common because every caller read it again and again\n'), 1);
});

test('the lint step checks the commits not on main, and nothing on main or outside git', () => {
  const repo = join(dir, 'repo');
  const env = {
    ...process.env,
    GIT_AUTHOR_NAME: 't',
    GIT_AUTHOR_EMAIL: 't@example.invalid',
    GIT_COMMITTER_NAME: 't',
    GIT_COMMITTER_EMAIL: 't@example.invalid',
  };
  const git = (...args: string[]) =>
    execFileSync('git', ['-c', 'core.hooksPath=', ...args], { cwd: repo, env, stdio: 'ignore' });
  const lint = (cwd: string) => spawnSync(process.execPath, [SCRIPT], { cwd, env, encoding: 'utf8' });

  const outside = join(dir, 'no-git');
  execFileSync('mkdir', ['-p', outside, repo]);
  assert.equal(lint(outside).status, 0);

  git('init', '-q', '-b', 'main');
  git('commit', '-q', '--allow-empty', '-m', 'a subject from before the convention, which main keeps as it is forever');
  assert.equal(lint(repo).status, 0);

  git('checkout', '-q', '-b', 'topic');
  git('commit', '-q', '--allow-empty', '-m', 'common: a good subject', '-m', 'Why.');
  assert.equal(lint(repo).status, 0);
  git('commit', '-q', '--allow-empty', '-m', 'no area here');
  const r = lint(repo);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no area here/);
  assert.doesNotMatch(r.stderr, /before the convention|a good subject/);
});
