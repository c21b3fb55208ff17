// What the apply step did, recorded as plain data for tracing: the SQL steps with their times
// and errors, and the retries and splits as events. Recorded where the batch runs (a piscina
// thread or the main thread) without OpenTelemetry; the main thread turns it into spans
// (workers/batch-trace.ts), so one exporter per process sends them. Only traced batches record.

/** One SQL step of a transaction (epoch milliseconds, fractional). */
export interface StepRecord {
  name: string;
  start: number;
  end: number;
  /** Orders in the transaction. */
  orders: number;
  /** The error that ended the step, if any. */
  error?: string;
}

/** Something that happened to the batch: a retry, a split, a dead letter. */
export interface StepEvent {
  name: string;
  at: number;
  attributes: Record<string, string | number>;
}

export interface BatchSteps {
  start: number;
  end: number;
  steps: StepRecord[];
  events: StepEvent[];
  /** Entry ids of the inserted orders, in ApplyStats.endToEndMs order (for the exemplars). */
  committed: string[];
}

/** Wall-clock time in epoch ms: a thread's performance.now() has its own origin. */
const now = (): number => performance.timeOrigin + performance.now();

/** Steps run one after the other: starting one ends the one before. */
export class StepRecorder {
  private readonly data: BatchSteps = { start: now(), end: 0, steps: [], events: [], committed: [] };
  private open: StepRecord | undefined;

  /** Starts a step (and ends the open one). */
  step(name: string, orders: number): void {
    this.done();
    this.open = { name, start: now(), end: 0, orders };
    this.data.steps.push(this.open);
  }

  /** Ends the open step. */
  done(): void {
    if (this.open) this.open.end = now();
    this.open = undefined;
  }

  /** Ends the open step with the error that ended it. */
  fail(error: unknown): void {
    if (this.open) this.open.error = error instanceof Error ? error.message : String(error);
    this.done();
  }

  /** The orders a COMMIT inserted, in the order their end-to-end times were recorded. */
  committed(entryIds: Iterable<string>): void {
    for (const id of entryIds) this.data.committed.push(id);
  }

  event(name: string, attributes: Record<string, string | number>): void {
    this.data.events.push({ name, at: now(), attributes });
  }

  finish(): BatchSteps {
    this.done();
    this.data.end = now();
    return this.data;
  }
}
