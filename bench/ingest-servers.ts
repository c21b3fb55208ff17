// What the ingest benchmarks (bench/ingest.ts, bench/ingest-ab.ts) share: their server
// processes — each runs as `node <script> --serve <kind>` in a child process of its own and prints
// {"port"} once it listens; its CPU time is read from /proc — and the order they send.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface ServerProcess {
  child: ChildProcess;
  url: string;
}

/**
 * Starts `node <script> --serve <kind>` with `env` added to this process's environment.
 * SURGE_BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") goes to the server processes.
 */
export function startServer(script: string, kind: string, env: Record<string, string>): Promise<ServerProcess> {
  const nodeArgs = (process.env.SURGE_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, script, '--serve', kind], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.once('exit', (code) => reject(new Error(`${kind} server (${script}) exited with ${code}`)));
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"port"'));
      if (line) resolve({ child, url: `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}` });
    });
  });
}

export async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

const CLOCK_TICKS = 100;

/** CPU seconds (user, system) a process — or one of its threads — used so far, from /proc (Linux); NaN elsewhere. */
export function processCpu(pid: number | undefined, thread?: number): { user: number; system: number } {
  try {
    const stat = readFileSync(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS };
  } catch {
    return { user: Number.NaN, system: Number.NaN };
  }
}

/** The order every ingest benchmark request carries (a single order's body; :batch items add a key). */
export const BENCH_ORDER_JSON = JSON.stringify({
  customer_id: 'bench-customer',
  currency: 'EUR',
  items: [
    { sku: 'sku-1', qty: 1, unit_price_cents: 1999 },
    { sku: 'sku-2', qty: 3, unit_price_cents: 250 },
  ],
});
