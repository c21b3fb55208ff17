// The commit message convention (CONTRIBUTING.md), checked in one place for two callers:
//   node scripts/check-commits.mjs --message-file FILE   the commit-msg hook (.githooks/commit-msg)
//   node scripts/check-commits.mjs                       `npm run lint`: commits not yet on main
// Lint only reads history that exists locally: with no git, no main branch, or HEAD on main there
// is nothing to check, so a fresh clone of main (CI) passes quietly.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export const MAX_SUBJECT_LENGTH = 72;

/** `area: summary`; the area is a folder or concern in lower case (`ingest`, `ci`, `test/support`). */
const SUBJECT = /^[a-z][a-z0-9._/-]*: \S/;
/** Subjects git writes itself, and autosquash markers that a rebase folds away before main. */
const GIT_MADE = /^(Merge |Revert "|fixup! |squash! |amend! )/;

/**
 * The problems of one commit message, none when it follows the convention. As git does before it
 * stores the message, everything from the scissors line of `git commit -v` on and every line
 * starting with `#` are dropped first.
 * @param {string} message
 * @returns {string[]}
 */
export function commitMessageProblems(message) {
  const all = message.split('\n');
  const scissors = all.findIndex((line) => /^# -+ >8 -+$/.test(line));
  const lines = (scissors === -1 ? all : all.slice(0, scissors)).filter((line) => !line.startsWith('#'));
  while (lines.length > 0 && lines[0].trim() === '') lines.shift();
  const subject = (lines[0] ?? '').trimEnd();
  if (subject === '') return ['the message is empty'];
  if (GIT_MADE.test(subject)) return [];
  const problems = [];
  if (subject.length > MAX_SUBJECT_LENGTH)
    problems.push(`the subject has ${subject.length} characters; at most ${MAX_SUBJECT_LENGTH}`);
  if (!SUBJECT.test(subject))
    problems.push('the subject is not `area: imperative summary` (area in lower case, e.g. `ingest: `)');
  if (lines.length > 1 && lines[1].trim() !== '') problems.push('a blank line must separate the subject from the body');
  return problems;
}

function git(args) {
  return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

function refExists(ref) {
  try {
    git(['rev-parse', '--verify', '--quiet', `${ref}^{commit}`]);
    return true;
  } catch {
    return false;
  }
}

/**
 * The commits reachable from HEAD but from no main branch (local `main`, `origin/main`), with
 * their messages. Empty when there is no git repository or no main branch to compare with.
 * @returns {Array<{ hash: string; message: string }>}
 */
export function unmergedCommits() {
  try {
    git(['rev-parse', '--is-inside-work-tree']);
  } catch {
    return [];
  }
  const bases = ['main', 'origin/main'].filter(refExists);
  if (bases.length === 0 || !refExists('HEAD')) return [];
  const out = git(['log', '--format=%H%x00%B%x1e', 'HEAD', '--not', ...bases]);
  return out
    .split('\x1e')
    .map((record) => record.replace(/^\n/, ''))
    .filter((record) => record.includes('\0'))
    .map((record) => {
      const [hash, message] = record.split('\0');
      return { hash, message };
    });
}

function main(argv) {
  const fileFlag = argv.indexOf('--message-file');
  if (fileFlag !== -1) {
    const file = argv[fileFlag + 1];
    if (!file) throw new Error('--message-file needs a path');
    const problems = commitMessageProblems(readFileSync(file, 'utf8'));
    if (problems.length === 0) return 0;
    console.error(`commit message rejected (see CONTRIBUTING.md):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    console.error('your message is kept in .git/COMMIT_EDITMSG (git commit -e -F .git/COMMIT_EDITMSG to edit it)');
    return 1;
  }
  let failed = 0;
  for (const { hash, message } of unmergedCommits()) {
    const problems = commitMessageProblems(message);
    if (problems.length === 0) continue;
    failed++;
    console.error(`${hash.slice(0, 10)} ${message.split('\n')[0]}\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  }
  if (failed === 0) return 0;
  console.error(
    `${failed} commit(s) not on main break the commit convention (CONTRIBUTING.md); reword them with git rebase -i`,
  );
  return 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main(process.argv.slice(2));
