// The in-flight limit: how many batches a worker process has handed to the apply step and not
// yet acked. Readers wait for room before they read, so a busy apply side stops reads and the
// entries wait in the stream, where the next batch picks them up (group commit).

export class InFlightLimit {
  #count = 0;
  #limit: number;
  #waiters: Array<() => void> = [];
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

  /** One batch done (acked or given up); wakes the waiting readers. */
  release(): void {
    this.#count--;
    this.wake();
  }

  /** Lets waiting readers re-check (also on stop, and when `busy` may have changed). */
  wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}
