// How a worker yields the cores to a co-located ingest (SURGE_WORKER_NICE). Nice ranks threads
// only within one scheduling group: with the kernel's autogroups on (sched_autogroup_enabled, the
// default of most distributions), the scheduler first shares the cores between sessions, each
// weighted by its autogroup's own nice value, and only then between the threads of a session.
// `surge up` starts every role in a session of its own (so a terminal's Ctrl-C reaches only it),
// so a worker that lowered only its threads' priority still got a session's full share against
// ingest's. When the worker leads its session its autogroup is its alone, and it lowers that too.
import { readFileSync, writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import type { Logger } from '../common/log.js';

/**
 * The nice value to write to /proc/self/autogroup to lower it by `by`, from /proc/self/stat and
 * /proc/self/autogroup (`/autogroup-<n> nice <v>`); undefined when the process does not lead its
 * session (its autogroup is shared: lowering it would lower the others) or the files say nothing.
 */
export function autogroupNiceAfter(stat: string, pid: number, autogroup: string, by: number): number | undefined {
  // The command name (field 2) is in parentheses and may hold anything: count from the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const session = Number(fields[3]);
  if (session !== pid) return undefined;
  const nice = /nice (-?\d+)/.exec(autogroup)?.[1];
  return nice === undefined ? undefined : Math.min(19, Number(nice) + by);
}

/** Adds `by` to this thread's nice value and, when it leads its session, to its autogroup's (lowering is always allowed). */
export function lowerPriority(by: number, logger: Logger): void {
  try {
    setPriority(Math.min(19, getPriority() + by));
  } catch (e) {
    logger.warn({ err: e }, 'could not lower the worker priority');
  }
  let stat: string;
  let autogroup: string;
  try {
    stat = readFileSync('/proc/self/stat', 'utf8');
    autogroup = readFileSync('/proc/self/autogroup', 'utf8');
  } catch {
    return; // not Linux, or a kernel without autogroups: nice alone ranks the threads
  }
  const nice = autogroupNiceAfter(stat, process.pid, autogroup, by);
  if (nice === undefined) return;
  try {
    writeFileSync('/proc/self/autogroup', String(nice));
  } catch (e) {
    logger.warn({ err: e }, "could not lower the worker's autogroup priority");
  }
}
