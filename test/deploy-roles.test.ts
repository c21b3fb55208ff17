// The long-running roles every deployment must run come from one list, common/roles.ts: the
// manifest checks (test/support/k8s.ts, test/support/compose.ts) report a role with no Deployment
// or no compose service. This test keeps that list equal to the roles the CLI serves.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { PACKAGE_ROOT } from '../common/paths.js';
import { ROLES } from '../common/roles.js';

test('common/roles.ts lists exactly the roles the CLI runs through serve()', () => {
  const cli = join(PACKAGE_ROOT, 'cli');
  const served = readdirSync(cli)
    .filter((f) => f.endsWith('.ts'))
    .flatMap((f) => [...readFileSync(join(cli, f), 'utf8').matchAll(/\bserve\(\s*'([a-z-]+)'/g)].map((m) => m[1]));
  assert.ok(served.length > 0, 'the scan finds serve() calls');
  assert.deepEqual([...new Set(served)].sort(), [...ROLES].sort());
});
