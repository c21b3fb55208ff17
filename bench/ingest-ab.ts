// Paired A/B of two ingest builds: both servers run at the same time, each loaded by its own
// autocannon at the same fixed request rate, and the CPU time each spends per request is
// compared round by round. A shared, noisy host slows both alike within a round, so the ratio
// B/A resolves differences smaller than the round-to-round spread of interleaved saturated
// bench:ingest runs (bench/results/HISTORY.md). It measures CPU per request, not capacity.
//
//   npm run bench:ingest-ab -- --b <other build's dist dir> [--a <dist dir>] [--rate 3000] [--rounds 6]
//                              [--duration 8] [--warmup 3] [--connections 50] [--allow-503]
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import pg from 'pg';
import { createClient } from '../common/clients.js';
import { PACKAGE_ROOT } from '../common/paths.js';
import { createTestEnv } from '../devkit/scratch.js';
import { httpRequestBytes, takeRequestsFrom } from './autocannon-requests.js';
import { processCpu } from './cpu.js';
import { BENCH_ORDER_JSON, type ServerProcess, startServer, stopServer } from './ingest-servers.js';
import { median } from './stats.js';

const USAGE = `Usage: npm run bench:ingest-ab -- --b DIR [options]

Paired A/B of two ingest builds: servers A and B run at once, each loaded by autocannon at the
same fixed rate with POST /v1/orders (a fresh key per request); per round, the CPU time per
request of each server's main thread and of the whole process, and the ratios B/A.
A ratio below 1 means B spends less CPU per request. Run an A/A (--b the same as --a) to see
the spread on the host.

Options:
  --a DIR           build A: a compiled dist directory (default: this package's dist)
  --b DIR           build B: another dist directory, e.g. a git worktree's dist (required)
  --rate N          requests per second to each server (default 3000)
  --rounds N        measured rounds (default 6)
  --duration S      seconds per round (default 8)
  --warmup S        warm-up seconds, once (default 3)
  --connections N   connections per server (default 50)
  --b-env NAME=VALUE  an environment variable for B's server only (repeatable): one build
                    against itself with a setting changed, e.g. --b-env OTEL_SDK_DISABLED=true
  --allow-503       count 503 answers as answered requests instead of refusing the round; when
                    A answers only 2xx and B sheds some (e.g. --b-env SURGE_INGEST_MAX_IN_FLIGHT=1),
                    also the CPU of one of B's 503s, taking its 2xx at A's cost per request
  -h, --help        this text

Both builds must have bench/ingest.js (its --serve surge mode starts ingest). The run makes its
own database and key prefix and removes them afterwards, as bench:ingest does.
`;

interface Side {
  name: 'A' | 'B';
  server: ServerProcess;
}

interface SideRound {
  ok: number;
  /** 503 answers (counted only with --allow-503). */
  shed: number;
  non2xx: number;
  errors: number;
  mainUsPerRequest: number;
  processUsPerRequest: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      a: { type: 'string', default: join(PACKAGE_ROOT, 'dist') },
      b: { type: 'string' },
      rate: { type: 'string', default: '3000' },
      rounds: { type: 'string', default: '6' },
      duration: { type: 'string', default: '8' },
      warmup: { type: 'string', default: '3' },
      connections: { type: 'string', default: '50' },
      'b-env': { type: 'string', multiple: true, default: [] },
      'allow-503': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (!values.b) throw new Error('--b: the dist directory of build B is required (see --help)');
  const rate = Number(values.rate);
  const rounds = Number(values.rounds);
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const connections = Number(values.connections);
  for (const [name, n] of Object.entries({ rate, rounds, duration, warmup, connections })) {
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got ${n}`);
  }
  const bEnv: Record<string, string> = {};
  for (const pair of values['b-env']) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new Error(`--b-env: expected NAME=VALUE, got ${JSON.stringify(pair)}`);
    bEnv[pair.slice(0, eq)] = pair.slice(eq + 1);
  }

  const env = await createTestEnv({ SURGE_LOG_LEVEL: 'warn', SURGE_MAX_BACKLOG: '0', SURGE_SHARDS: '4' });
  const pool = new pg.Pool({ connectionString: env.db.url, max: 1 });
  const sides: Side[] = [];
  try {
    const { apiKey } = await createClient(pool, 'bench-ab');
    sides.push({ name: 'A', server: await startServer(join(values.a, 'bench', 'ingest.js'), 'surge', env.env) });
    sides.push({
      name: 'B',
      server: await startServer(join(values.b, 'bench', 'ingest.js'), 'surge', { ...env.env, ...bEnv }),
    });
    const runId = Date.now().toString(36);
    let seq = 0;
    const load = (url: string, seconds: number) => {
      const bytes = httpRequestBytes(`${url}/v1/orders`, 'POST', {
        'content-type': 'application/json',
        authorization: `Bearer ${apiKey}`,
      });
      return autocannon({
        url: `${url}/v1/orders`,
        method: 'POST',
        connections,
        duration: seconds,
        overallRate: rate,
        setupClient: (client) =>
          takeRequestsFrom(client, () => bytes(BENCH_ORDER_JSON, ['idempotency-key', `ab-${runId}-${seq++}`])),
      });
    };
    process.stdout.write(
      `A: ${values.a}\nB: ${values.b}${values['b-env'].map((e) => ` ${e}`).join('')}\n${rate} requests/s to each, ` +
        `${connections} connections, ${rounds} rounds of ${duration} s after ${warmup} s warm-up\n`,
    );
    await Promise.all(sides.map((s) => load(s.server.url, warmup)));
    const ratios = { main: [] as number[], process: [] as number[] };
    const shedUs = { main: [] as number[], process: [] as number[] };
    for (let round = 1; round <= rounds; round++) {
      const cpu = (s: Side) => {
        const pid = s.server.child.pid;
        const main = processCpu(pid, pid);
        const whole = processCpu(pid);
        return { main: main.user + main.system, whole: whole.user + whole.system };
      };
      const before = sides.map(cpu);
      const results = await Promise.all(sides.map((s) => load(s.server.url, duration)));
      const after = sides.map(cpu);
      const figures: SideRound[] = results.map((r, i) => {
        const ok = r['2xx'];
        const shed = values['allow-503'] ? (r.statusCodeStats?.['503']?.count ?? 0) : 0;
        const b = before[i];
        const a = after[i];
        if (b === undefined || a === undefined) throw new Error(`round ${round}: no CPU reading for side ${i}`);
        return {
          ok,
          shed,
          non2xx: r.non2xx,
          errors: r.errors,
          mainUsPerRequest: ((a.main - b.main) * 1e6) / (ok + shed),
          processUsPerRequest: ((a.whole - b.whole) * 1e6) / (ok + shed),
        };
      });
      const [fa, fb] = figures;
      if (fa === undefined || fb === undefined) throw new Error(`round ${round}: expected the figures of A and B`);
      for (const f of figures) {
        if (f.ok + f.shed === 0 || f.non2xx > f.shed || f.errors > 0)
          throw new Error(
            `round ${round}: a server did not answer every request with 2xx${values['allow-503'] ? ' or 503' : ''} ` +
              `(${JSON.stringify(f)}); ` +
              'the comparison would mean nothing',
          );
      }
      const mainRatio = fb.mainUsPerRequest / fa.mainUsPerRequest;
      const processRatio = fb.processUsPerRequest / fa.processUsPerRequest;
      ratios.main.push(mainRatio);
      ratios.process.push(processRatio);
      const f1 = (x: number) => x.toFixed(1);
      const count = (f: SideRound) => (values['allow-503'] ? `${f.ok} 2xx + ${f.shed} 503` : `${f.ok}`);
      // B's 503s alone: its CPU less its 2xx at A's cost per request, over its 503s.
      let perShed = '';
      if (fa.shed === 0 && fb.shed > 0) {
        const one = (bUs: number, aUs: number) => (bUs * (fb.ok + fb.shed) - fb.ok * aUs) / fb.shed;
        shedUs.main.push(one(fb.mainUsPerRequest, fa.mainUsPerRequest));
        shedUs.process.push(one(fb.processUsPerRequest, fa.processUsPerRequest));
        perShed = ` | B per 503: main thread ${f1(shedUs.main.at(-1) ?? 0)}, process ${f1(shedUs.process.at(-1) ?? 0)}`;
      }
      process.stdout.write(
        `round ${round}: ` +
          `A ${count(fa)} requests, CPU µs/request main thread ${f1(fa.mainUsPerRequest)}, ` +
          `process ${f1(fa.processUsPerRequest)} | ` +
          `B ${count(fb)} requests, main thread ${f1(fb.mainUsPerRequest)}, process ${f1(fb.processUsPerRequest)} | ` +
          `B/A main thread ${mainRatio.toFixed(3)}, process ${processRatio.toFixed(3)}${perShed}\n`,
      );
    }
    if (shedUs.main.length > 0)
      process.stdout.write(
        `median CPU µs per 503 of B (its 2xx at A's cost): main thread ${median(shedUs.main).toFixed(1)}, ` +
          `whole process ${median(shedUs.process).toFixed(1)}\n`,
      );
    process.stdout.write(
      `median B/A of CPU per request: main thread ${median(ratios.main).toFixed(3)}, ` +
        `whole process ${median(ratios.process).toFixed(3)} (below 1: B spends less)\n`,
    );
  } finally {
    for (const s of sides) await stopServer(s.server.child);
    await pool.end();
    await env.cleanup();
  }
}

await main().catch((e: unknown) => {
  // A bad option is one line and exit 2, not a stack trace.
  if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`bench:ingest-ab: ${(e as Error).message} (--help for the options)\n`);
    process.exit(2);
  }
  throw e;
});
