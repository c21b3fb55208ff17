// The latency probe of `surge bench wait`'s steady step, a process of its own: it submits the
// sampled orders one by one, each followed at once by a `?wait=30`, and times the answers. The
// generator's other orders (its :batch requests, most of the load) run in the parent process, so
// their work does not delay this process's reading of an answer: the probe's own event-loop delay
// is reported with its figures. Started by bench/wait.ts with one JSON argument; prints one JSON
// line, its result.
import { Agent } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SurgeClient } from '../client/index.js';
import { type Answer, longPoll } from './long-polls.js';

interface ProbeArgs {
  url: string;
  apiKey: string;
  /** The first order's due time (ms since the epoch); order i is due at start + i * 1000 / rate. */
  start: number;
  rate: number;
  total: number;
  /** The orders sampled: i % every === 0. */
  every: number;
}

export interface ProbeResult {
  answers: Answer[];
  failures: string[];
  loopP99Ms: number;
  loopMaxMs: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as ProbeArgs;
const surge = new SurgeClient({ baseUrl: args.url, apiKey: args.apiKey });
const order = { customer_id: 'c', currency: 'EUR', items: [{ sku: 'free', qty: 1, unit_price_cents: 100 }] };
// No socket limit: a long poll holds its connection, and a request queued in the agent behind one
// would count the queueing as answer delay.
const agent = new Agent({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY });
const loop = monitorEventLoopDelay({ resolution: 10 });
loop.enable();
const answers: Answer[] = [];
const failures: string[] = [];
const pending: Array<Promise<void>> = [];
for (let i = 0; i < args.total; i += args.every) {
  const ahead = args.start + (i * 1000) / args.rate - Date.now();
  if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
  const key = `steady-${i}`;
  pending.push(
    surge.submit(order, { key }).then(
      async () => {
        const r = await longPoll(agent, args.url, args.apiKey, key, 30);
        if (typeof r === 'string') failures.push(r);
        else answers.push(r);
      },
      (e: Error) => {
        failures.push(`submit: ${e.message}`);
      },
    ),
  );
}
await Promise.all(pending);
loop.disable();
agent.destroy();
const result: ProbeResult = { answers, failures, loopP99Ms: loop.percentile(99) / 1e6, loopMaxMs: loop.max / 1e6 };
process.stdout.write(`${JSON.stringify(result)}\n`);
