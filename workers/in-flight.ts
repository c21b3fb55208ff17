// The in-flight limit: how many batches a worker process has handed to the apply step and not
// yet acked. Readers wait for room before they read, so a busy apply side stops reads and the
// entries wait in the stream, where the next batch picks them up (group commit).
//
// A batch that was not full also keeps its slot a while after its ack (pauseAfter): without that,
// the cheaper a transaction, the sooner the next starts and the smaller it is, and the apply side
// spends as much CPU per second on per-batch costs (round trips, planning, COMMIT) at any rate.

/** Longest pause after a batch (ms). */
export const MAX_PAUSE_MS = 100;

/**
 * How long a batch's slot stays taken after it is done: as long again as it was held, scaled by how
 * far from full the batch was — so a batch grows to about twice what has arrived during one
 * transaction, a full batch (a backlog) does not wait, and a light load waits about as long as a
 * transaction of one entry takes, not a fixed linger.
 */
export function pauseAfter(heldMs: number, entries: number, batchSize: number): number {
  return Math.min(MAX_PAUSE_MS, heldMs * Math.max(0, 1 - entries / batchSize));
}

export class InFlightLimit {
  #count = 0;
  #limit: number;
  #waiters: Array<() => void> = [];
  #pauses = new Set<ReturnType<typeof setTimeout>>();
  #closed = false;
  readonly #busy: () => boolean;

  /** `busy`: an extra condition that holds readers back (piscina's needsDrain). */
  constructor(limit: number, busy: () => boolean = () => false) {
    this.#limit = Math.max(1, limit);
    this.#busy = busy;
  }

  get count(): number {
    return this.#count;
  }

  get limit(): number {
    return this.#limit;
  }

  set limit(n: number) {
    this.#limit = Math.max(1, Math.floor(n));
    this.wake();
  }

  hasRoom(): boolean {
    return this.#count < this.#limit && !this.#busy();
  }

  /**
   * Waits until there is room, without taking it: a reader never holds a slot while it blocks on
   * an empty stream (that starved busy shards), so after a wake-up each waiting reader may take
   * one — the overshoot is bounded by the number of readers.
   */
  async room(): Promise<void> {
    while (!this.hasRoom()) await new Promise<void>((r) => this.#waiters.push(r));
  }

  /**
   * Waits for room and takes it, strictly: the limit is never passed. Returns whether it had to
   * wait (entries accumulated meanwhile: worth topping the batch up).
   */
  async acquire(): Promise<boolean> {
    let waited = false;
    while (!this.hasRoom()) {
      waited = true;
      await new Promise<void>((r) => this.#waiters.push(r));
    }
    this.#count++;
    return waited;
  }

  /** One batch handed over, room or not (reclaim and pending reads, bounded by the readers). */
  take(): void {
    this.#count++;
  }

  /**
   * One batch done (acked or given up); wakes the waiting readers — after `pauseMs` when given: the
   * slot stays taken that long (close() ends such pauses at once).
   */
  release(pauseMs = 0): void {
    if (pauseMs >= 1 && !this.#closed) {
      const timer = setTimeout(() => {
        this.#pauses.delete(timer);
        this.release();
      }, pauseMs);
      this.#pauses.add(timer);
      return;
    }
    this.#count--;
    this.wake();
  }

  /** On stop: slots held by a pause are released now, and no release pauses from now on. */
  close(): void {
    this.#closed = true;
    for (const timer of this.#pauses) {
      clearTimeout(timer);
      this.#count--;
    }
    this.#pauses.clear();
    this.wake();
  }

  /** Lets waiting readers re-check (also on stop, and when `busy` may have changed). */
  wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}
