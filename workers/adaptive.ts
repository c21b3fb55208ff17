// How many transactions a worker process keeps in flight, adapted to what PostgreSQL can use
// (SEMANTICS 8.1). Each batch that comes back is a sample: its size and how long its PostgreSQL
// work took. A full batch means entries wait beyond it — more transactions at once may help, as
// long as commit latency holds; a batch well short of full means the apply side keeps up, and
// fewer transactions at once let the next batches grow (group commit: while one transaction
// commits, the next batch accumulates in the stream). Latency rising far above its floor means
// PostgreSQL (or the cores it shares) is saturated: back off multiplicatively.

export interface AdaptiveOptions {
  /** Lowest and highest limit (the connections available). */
  min: number;
  max: number;
  /** Entries of a full batch (SURGE_BATCH_SIZE). */
  batchSize: number;
  /** Latency above this multiple of its floor counts as saturation. Default 2. */
  tolerance?: number;
}

export class AdaptiveLimit {
  #limit: number;
  #credit = 0;
  /** Floor of the latency per entry of full batches, slowly forgetting (ms per entry). */
  #floor = Number.POSITIVE_INFINITY;
  readonly #o: Required<AdaptiveOptions>;

  constructor(options: AdaptiveOptions) {
    this.#o = { tolerance: 2, ...options };
    this.#o.max = Math.max(this.#o.min, this.#o.max);
    this.#limit = this.#o.min;
  }

  get limit(): number {
    return this.#limit;
  }

  /** One batch came back: `entries` in it, `ms` of PostgreSQL work. Returns the new limit. */
  sample(entries: number, ms: number): number {
    const { min, max, batchSize, tolerance } = this.#o;
    if (entries >= batchSize) {
      const perEntry = ms / entries;
      // The floor follows decreases at once and increases slowly, so a changed machine is learnt.
      this.#floor = perEntry < this.#floor ? perEntry : this.#floor + (perEntry - this.#floor) / 64;
      if (perEntry > tolerance * this.#floor) {
        this.#limit = Math.max(min, Math.floor(this.#limit * 0.75));
        this.#credit = 0;
      } else if (++this.#credit >= this.#limit) {
        // Additive increase: one more after a limit's worth of full batches.
        this.#limit = Math.min(max, this.#limit + 1);
        this.#credit = 0;
      }
    } else if (entries < batchSize / 2) {
      this.#limit = Math.max(min, this.#limit - 1);
      this.#credit = 0;
    }
    return this.#limit;
  }
}
