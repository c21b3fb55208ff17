// Surge processes as the operator runs them: `node dist/cli/surge.js <role>` children with an
// environment, for tests that kill, stop and restart them (fault suite, fuzz, Redis Cluster).
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../common/paths.js';
import { waitFor } from '../../devkit/wait.js';

export type SurgeRole = 'ingest' | 'work';

export interface SurgeProcess {
  role: SurgeRole;
  /** A label for reports (`ingest-1`, `work-2`). */
  name: string;
  child: ChildProcess;
  pid: number;
  /** A worker's consumer name in the group (from its start line). */
  consumer?: string;
  /** HTTP port: the API for ingest, /metrics for a worker. */
  port: number;
  /** http://127.0.0.1:port */
  url: string;
  /** Where /metrics is: ingest's own metrics port, a worker's `url`. */
  metricsUrl: string;
  /** True while the child has not exited. */
  alive(): boolean;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** The last lines of stdout+stderr (for failure messages). */
  tail(): string;
  /** Every line of stdout+stderr so far (the first LOG_LINES_KEPT). */
  logLines(): readonly string[];
  /** Sends a signal (SIGKILL, SIGSTOP, SIGCONT, SIGTERM). */
  signal(sig: NodeJS.Signals): void;
  /** SIGKILL and wait for the exit (no-op when already gone). */
  kill(): Promise<void>;
}

/** Lines logLines() keeps: enough for a test's few requests at debug level. */
const LOG_LINES_KEPT = 20_000;

const READY_LINE: Record<SurgeRole, string> = { ingest: 'ingest listening on', work: 'worker started' };

/** Starts one surge process and waits for its "listening"/"started" log line (which carries the port). */
export async function startSurge(
  role: SurgeRole,
  env: Record<string, string>,
  name: string = role,
  timeoutMs = 30_000,
): Promise<SurgeProcess> {
  const child = spawn(process.execPath, [join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js'), role], {
    env: { ...process.env, ...env, SURGE_LOG_LEVEL: env.SURGE_LOG_LEVEL === 'debug' ? 'debug' : 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const all: string[] = [];
  let port = 0;
  let metricsUrl: string | undefined;
  let consumer: string | undefined;
  let buffered = '';
  const onData = (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      lines.push(line.length > 600 ? `${line.slice(0, 600)}…` : line);
      if (all.length < LOG_LINES_KEPT) all.push(line);
      if (lines.length > 60) lines.shift();
      if (port === 0 && line.includes(READY_LINE[role])) {
        try {
          const parsed = JSON.parse(line) as { port?: number; consumer?: string; metricsUrl?: string };
          port = Number(parsed.port ?? 0);
          metricsUrl = parsed.metricsUrl;
          consumer = parsed.consumer;
        } catch {
          // not JSON: ignore
        }
      }
      nl = buffered.indexOf('\n');
    }
    if (buffered.length > 10_000) buffered = '';
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const alive = () => child.exitCode === null && child.signalCode === null;
  try {
    await waitFor(
      `${name} to start`,
      () => {
        if (!alive()) throw new Error(`${name} exited: ${lines.slice(-10).join('\n')}`);
        return port > 0;
      },
      { timeoutMs, intervalMs: 20 },
    );
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return {
    role,
    name,
    child,
    pid: child.pid as number,
    ...(consumer !== undefined ? { consumer } : {}),
    port,
    url: `http://127.0.0.1:${port}`,
    metricsUrl: metricsUrl ?? `http://127.0.0.1:${port}`,
    alive,
    exited,
    tail: () => lines.slice(-20).join('\n'),
    logLines: () => all,
    signal(sig) {
      if (alive()) child.kill(sig);
    },
    async kill() {
      if (alive()) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Reads one counter/gauge family from Prometheus text: label set → value, summed when `sum`. */
export function metricValues(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    out.set(m[2] ?? '', Number(m[3]));
  }
  return out;
}

/** A `surge <args>` child whose stdout and stderr are collected as they come. */
export interface CliRun {
  child: ChildProcess;
  /** Everything the child wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code, or the signal that ended the child. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node dist/cli/surge.js <args>` with `env` over this process's environment. */
export function spawnCli(args: string[], env: Record<string, string>): CliRun {
  const child = spawn(process.execPath, [join(PACKAGE_ROOT, 'dist', 'cli', 'surge.js'), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const collect = (d: Buffer) => {
    out += d.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return { child, output: () => out, exited };
}
