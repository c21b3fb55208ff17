// CPU per process, read from /proc (Linux): one implementation for every benchmark. A process's
// /proc/<pid>/stat counts all of its threads; its live descendants are added; /proc/<pid>/task/<pid>
// is the main thread alone, which is what bounds a Node process (one event loop) or a
// single-threaded server (redis-server, a PostgreSQL backend).
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

const CLOCK_TICKS = 100;

function statFields(path: string): string[] | undefined {
  try {
    const stat = readFileSync(path, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU seconds (user, system) a process — or one of its threads — used so far; NaN when it is gone. */
export function processCpu(pid: number | undefined, thread?: number): { user: number; system: number } {
  const f = statFields(thread === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${thread}/stat`);
  if (f === undefined || pid === undefined) return { user: Number.NaN, system: Number.NaN };
  return { user: Number(f[11]) / CLOCK_TICKS, system: Number(f[12]) / CLOCK_TICKS };
}

/** user + system seconds of a process (all its threads); NaN when it is gone or not readable. */
export function cpuSeconds(pid: number | undefined): number {
  const c = processCpu(pid);
  return c.user + c.system;
}

/** Clock ticks since boot at which the process started (NaN when it is gone). */
function startTicks(pid: number): number {
  return Number(statFields(`/proc/${pid}/stat`)?.[19] ?? Number.NaN);
}

function uptimeTicks(): number {
  try {
    return Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

/** Live descendants of `pid` (children, grandchildren…), from the parent pid in /proc/<n>/stat. */
export function descendants(pid: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return [];
  }
  const children = new Map<number, number[]>();
  for (const d of entries) {
    const ppid = Number(statFields(`/proc/${d}/stat`)?.[1]);
    if (!Number.isFinite(ppid)) continue;
    const list = children.get(ppid) ?? [];
    list.push(Number(d));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const stack = [...(children.get(pid) ?? [])];
  for (let p = stack.pop(); p !== undefined; p = stack.pop()) {
    out.push(p);
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Busy and total CPU seconds of the whole machine so far (/proc/stat). */
function machineCpu(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

export type ProcessKind = 'generator' | 'ingest' | 'worker' | 'postgres' | 'redis' | 'baseline' | 'other';

/** A set of processes reported as one row (e.g. every worker process, every PostgreSQL backend). */
export interface ProcessGroup {
  name: string;
  kind: ProcessKind;
  /** The processes now; called every sample (a restarted process or a new backend is picked up). */
  pids(): number[] | Promise<number[]>;
  /** Count the live descendants of each pid too. */
  descendants?: boolean;
  /** Shared with work outside the benchmark (a shared Redis): its CPU is an upper bound. */
  shared?: string;
}

/** One sample interval of one group. */
export interface GroupSecond {
  /** Cores used over the interval (all processes, all threads). */
  cores: number;
  /** The busiest single process's main thread, cores: what bounds a single event loop. */
  mainCores: number;
  processes: number;
}

export interface CpuSample {
  /** Seconds since the sampler started (end of the interval). */
  t: number;
  dt: number;
  /** Cores busy on the whole machine over the interval. */
  machineCores: number | null;
  groups: Record<string, GroupSecond>;
}

export interface GroupUsage {
  name: string;
  kind: ProcessKind;
  /** CPU seconds over the sampler's life (processes started meanwhile: from their start). */
  seconds: number;
  /** Distinct processes seen. */
  pids: number[];
  /** false when no process of the group could be read (another PID namespace, another host). */
  measured: boolean;
  shared?: string;
}

export interface CpuUsage {
  cpus: number;
  wallSeconds: number;
  machineBusySeconds: number | null;
  groups: GroupUsage[];
  samples: CpuSample[];
}

export interface CpuSampler {
  /** Seconds since the sampler started. */
  now(): number;
  stop(): Promise<CpuUsage>;
}

/** Samples each group's CPU every `intervalMs` until stop(). */
export function startCpuSampler(groups: readonly ProcessGroup[], intervalMs = 1000): CpuSampler {
  const t0 = performance.now();
  const startTick = uptimeTicks();
  const m0 = machineCpu();
  let mLast = m0;
  let tLast = 0;
  const last = new Map<number, { total: number; main: number }>();
  const usage = groups.map((g) => ({
    name: g.name,
    kind: g.kind,
    seconds: 0,
    pids: new Set<number>(),
    measured: false,
    shared: g.shared,
  }));
  const samples: CpuSample[] = [];
  let busy = false;

  const sample = async (): Promise<void> => {
    const t = (performance.now() - t0) / 1000;
    const dt = t - tLast;
    const groupSeconds: Record<string, GroupSecond> = {};
    for (const [i, g] of groups.entries()) {
      const u = usage[i] as (typeof usage)[number];
      let pids: number[];
      try {
        pids = [...(await g.pids())];
      } catch {
        pids = [];
      }
      if (g.descendants) pids = [...new Set([...pids, ...pids.flatMap(descendants)])];
      let delta = 0;
      let mainMax = 0;
      let live = 0;
      for (const pid of pids) {
        const total = cpuSeconds(pid);
        if (Number.isNaN(total)) continue;
        const mt = processCpu(pid, pid);
        const main = mt.user + mt.system;
        live++;
        u.measured = true;
        u.pids.add(pid);
        let prev = last.get(pid);
        if (prev === undefined) {
          // Started after the sampler: all of its CPU is the run's. Otherwise from now on.
          prev = startTicks(pid) > startTick ? { total: 0, main: 0 } : { total, main };
        }
        last.set(pid, { total, main });
        const d = Math.max(0, total - prev.total);
        delta += d;
        if (dt > 0) mainMax = Math.max(mainMax, Math.max(0, main - prev.main) / dt);
      }
      u.seconds += delta;
      groupSeconds[g.name] = { cores: dt > 0 ? delta / dt : 0, mainCores: mainMax, processes: live };
    }
    const m = machineCpu();
    const machineCores = m && mLast && dt > 0 ? (m.busy - mLast.busy) / dt : null;
    mLast = m;
    tLast = t;
    // The first reading (baselines) and a last one just after a tick cover too little time to plot.
    if (dt >= 0.2) samples.push({ t: Math.round(t * 100) / 100, dt, machineCores, groups: groupSeconds });
  };

  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void sample().finally(() => {
      busy = false;
    });
  }, intervalMs);
  void sample();
  return {
    now: () => (performance.now() - t0) / 1000,
    async stop() {
      clearInterval(timer);
      while (busy) await new Promise((r) => setTimeout(r, 10));
      await sample();
      const m1 = machineCpu();
      return {
        cpus: os.cpus().length,
        wallSeconds: (performance.now() - t0) / 1000,
        machineBusySeconds: m0 && m1 ? m1.busy - m0.busy : null,
        groups: usage.map((u) => ({ ...u, pids: [...u.pids] })),
        samples,
      };
    },
  };
}

/** Mean cores of each group (and the machine) over the samples ending in (from, to]. */
export function windowMeans(
  u: CpuUsage,
  from: number,
  to: number,
): { seconds: number; machineCores: number | null; groups: Record<string, { cores: number; mainCores: number }> } {
  const inWindow = u.samples.filter((s) => s.t > from && s.t <= to + 0.5);
  const seconds = inWindow.reduce((a, s) => a + s.dt, 0);
  const groups: Record<string, { cores: number; mainCores: number }> = {};
  for (const g of u.groups) {
    let cores = 0;
    let main = 0;
    for (const s of inWindow) {
      cores += (s.groups[g.name]?.cores ?? 0) * s.dt;
      main += (s.groups[g.name]?.mainCores ?? 0) * s.dt;
    }
    groups[g.name] = { cores: seconds > 0 ? cores / seconds : 0, mainCores: seconds > 0 ? main / seconds : 0 };
  }
  const withMachine = inWindow.filter((s) => s.machineCores !== null);
  const machineCores =
    withMachine.length > 0
      ? withMachine.reduce((a, s) => a + (s.machineCores ?? 0) * s.dt, 0) / withMachine.reduce((a, s) => a + s.dt, 0)
      : null;
  return { seconds, machineCores, groups };
}

/** A single thread at or above this share of a core is CPU-bound. */
export const THREAD_BOUND = 0.85;
/** The machine at or above this share of its cores is CPU-bound. */
export const MACHINE_BOUND = 0.9;

export interface Bottleneck {
  /** The limiting process group, or 'machine' when every core is busy and no single thread is the limit. */
  process: string;
  kind: ProcessKind | 'machine' | 'none';
  resource: 'CPU (one thread)' | 'CPU (all cores)' | 'not CPU';
  cores: number;
  of: number;
  sentence: string;
}

const c2 = (x: number) => x.toFixed(2);

/**
 * What limited the run, from the CPU over a window (the loaded seconds, or the step where a ramp
 * failed): a single thread near a full core names its process; else all cores busy names the
 * machine and its largest consumer; else no CPU limit was reached.
 */
export function findBottleneck(u: CpuUsage, from: number, to: number): Bottleneck {
  const w = windowMeans(u, from, to);
  const measured = u.groups.filter((g) => g.measured);
  const [thread] = [...measured].sort(
    (a, b) => (w.groups[b.name]?.mainCores ?? 0) - (w.groups[a.name]?.mainCores ?? 0),
  );
  const [largest] = [...measured].sort((a, b) => (w.groups[b.name]?.cores ?? 0) - (w.groups[a.name]?.cores ?? 0));
  if (!thread || !largest || w.seconds === 0)
    return {
      process: 'unknown',
      kind: 'none',
      resource: 'not CPU',
      cores: 0,
      of: u.cpus,
      sentence: 'What limited it: not known (no process CPU could be read from /proc).',
    };
  const threadCores = w.groups[thread.name]?.mainCores ?? 0;
  const largestCores = w.groups[largest.name]?.cores ?? 0;
  const machine = w.machineCores ?? measured.reduce((a, g) => a + (w.groups[g.name]?.cores ?? 0), 0);
  const span = `over ${Math.round(w.seconds)} s of load`;
  const ours = measured.reduce((a, g) => a + (w.groups[g.name]?.cores ?? 0), 0);
  if (threadCores >= THREAD_BOUND)
    return {
      process: thread.name,
      kind: thread.kind,
      resource: 'CPU (one thread)',
      cores: threadCores,
      of: 1,
      sentence:
        `What limited it: ${thread.name}, CPU-bound: its busiest process's main thread used ` +
        `${c2(threadCores)} cores of 1 ${span} (machine ${c2(machine)} of ${u.cpus} cores busy).`,
    };
  if (machine >= MACHINE_BOUND * u.cpus)
    return {
      process: 'machine',
      kind: 'machine',
      resource: 'CPU (all cores)',
      cores: machine,
      of: u.cpus,
      sentence:
        `What limited it: the machine's CPU: ${c2(machine)} of ${u.cpus} cores busy ${span}` +
        `, ${c2(ours)} of them by this benchmark's processes` +
        (ours < machine / 2 ? ' (most of it was work outside the benchmark); ' : '; ') +
        `the largest user was ${largest.name} (${c2(largestCores)} cores), ` +
        `no single thread was bound (busiest: ${thread.name}, ${c2(threadCores)} of 1).`,
    };
  return {
    process: 'none',
    kind: 'none',
    resource: 'not CPU',
    cores: machine,
    of: u.cpus,
    sentence:
      `What limited it: not CPU: ${c2(machine)} of ${u.cpus} cores busy ${span}, ${c2(ours)} of them by this ` +
      `benchmark's processes; the busiest thread: ${thread.name}, at ${c2(threadCores)} of 1 (the limit is ` +
      'elsewhere: latency bounds, I/O, or the offered rate).',
  };
}
