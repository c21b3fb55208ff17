// Where an answer's latency went, attempt by attempt, from two records of the same run on the
// host's monotonic clock: the load generator's (bench/loadgen.ts, `attemptsFile`: when each attempt
// was due, got a connection, was written, and when its answer was parsed) and ingest's timeline
// (ingest/timeline.ts: when each request was read, in which loop turn, and when its answer was
// handed to the kernel). The generator stamps each request with its send time (`x-bench-sent`),
// which joins the two. Bench-only: ingest records nothing of it unless its timeline is on.
import type { TimelineRecord } from '../ingest/timeline.js';

/** One generator's attempts: [due, ready, conn, sent, received, answered, status, attempt], performance.now ms. */
export interface AttemptsRecord {
  /** The host's monotonic clock minus the generator's performance.now() (ms). */
  clockOffsetMs: number;
  attempts: number[][];
}

/** The parts of an answer's latency (ms), in the order they happen; they add up to `total`. */
export const PARTS = [
  ['generatorLate', "the generator's own lateness (timer, loop) before sending"],
  ['connectionWait', 'waiting for a free connection in the generator'],
  ['beforeTurn', "sent, waiting in the kernel until ingest's loop turn that read it began"],
  ['inTurn', 'in its turn, behind the requests read before it'],
  ['ingest', 'read by ingest until its answer was written'],
  ['back', "written until the generator parsed it (kernel and the generator's loop)"],
] as const;

export type Part = (typeof PARTS)[number][0];

export interface ClassParts {
  /** Answer class: '202', '503', … */
  status: string;
  /** Attempts joined with ingest's record. */
  count: number;
  /** Per part and for the total: p50, p99 and mean (ms). */
  parts: Record<Part | 'total', { p50: number; p99: number; mean: number }>;
  /** Means of the parts over the slowest 1 % (total ≥ its p99): where the tail's time went. */
  tail: Record<Part | 'total', number>;
  /** Length (ms) and requests read of the turn each attempt was read in, median. */
  turnMs: number;
  turnRequests: number;
}

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;
const mean = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
const r2 = (n: number) => Math.round(n * 100) / 100;

/** Joins the generators' attempts with ingest's traces and splits each class's latency into PARTS. */
export function decompose(timeline: TimelineRecord, generators: readonly AttemptsRecord[]): ClassParts[] {
  const bySent = new Map<string, TimelineRecord['requestTraces'][number]>();
  for (const t of timeline.requestTraces) if (t[0] >= 0) bySent.set(t[0].toFixed(3), t);
  const rows = new Map<string, Array<Record<Part | 'total', number> & { turnMs: number; turnN: number }>>();
  for (const g of generators) {
    for (const [due = 0, ready = 0, conn = 0, sent = 0, received = 0, answered = 0, status = 0] of g.attempts) {
      if (sent === 0 || status === 0) continue;
      const trace = bySent.get((sent + g.clockOffsetMs).toFixed(3));
      if (trace === undefined) continue;
      const [sentMono, read, turnIndex, done] = trace;
      const turn = timeline.turns[turnIndex];
      if (turn === undefined || done === 0) continue;
      const turnStart = Math.max(turn[0], sentMono);
      const list = rows.get(String(status)) ?? [];
      rows.set(String(status), list);
      list.push({
        generatorLate: ready - due + (sent - conn),
        connectionWait: conn - ready,
        beforeTurn: turnStart - sentMono,
        inTurn: read - turnStart,
        ingest: done - read,
        back: received + g.clockOffsetMs - done,
        total: answered - due,
        turnMs: turn[1] - turn[0],
        turnN: turn[2],
      });
    }
  }
  const keys = [...PARTS.map(([k]) => k), 'total'] as const;
  return [...rows.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([status, list]) => {
      const totals = list.map((r) => r.total).sort((a, b) => a - b);
      const slow = list.filter((r) => r.total >= pct(totals, 99));
      const parts = {} as ClassParts['parts'];
      const tail = {} as ClassParts['tail'];
      for (const k of keys) {
        const xs = list.map((r) => r[k]).sort((a, b) => a - b);
        parts[k] = { p50: r2(pct(xs, 50)), p99: r2(pct(xs, 99)), mean: r2(mean(xs)) };
        tail[k] = r2(mean(slow.map((r) => r[k])));
      }
      return {
        status,
        count: list.length,
        parts,
        tail,
        turnMs: r2(
          pct(
            list.map((r) => r.turnMs).sort((a, b) => a - b),
            50,
          ),
        ),
        turnRequests: pct(
          list.map((r) => r.turnN).sort((a, b) => a - b),
          50,
        ),
      };
    });
}
