// What the ingest benchmarks (bench/ingest.ts, bench/ingest-ab.ts) share: their server
// processes — each runs as `node <script> --serve <kind>` in a child process of its own and prints
// {"port"} once it listens (its CPU time is read from /proc, cpu.ts) — and the order they send.
import { type ChildProcess, spawn } from 'node:child_process';

export interface ServerProcess {
  child: ChildProcess;
  url: string;
}

/**
 * Starts `node <script> --serve <kind>` with `env` added to this process's environment.
 * SURGE_BENCH_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") goes to the server processes;
 * SURGE_INGEST_NODE_FLAGS in `env` to this one only, as `surge up` gives it to ingest (so
 * `ingest-ab --b-env SURGE_INGEST_NODE_FLAGS=…` runs B with flags NODE_OPTIONS does not accept).
 */
export function startServer(script: string, kind: string, env: Record<string, string>): Promise<ServerProcess> {
  const nodeArgs = [process.env.SURGE_BENCH_NODE_ARGS, env.SURGE_INGEST_NODE_FLAGS]
    .flatMap((v) => (v ?? '').split(' '))
    .filter(Boolean);
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

/** The order every ingest benchmark request carries (a single order's body; :batch items add a key). */
export const BENCH_ORDER_JSON = JSON.stringify({
  customer_id: 'bench-customer',
  currency: 'EUR',
  items: [
    { sku: 'sku-1', qty: 1, unit_price_cents: 1999 },
    { sku: 'sku-2', qty: 3, unit_price_cents: 250 },
  ],
});
