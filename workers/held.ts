// The entries a worker process has in flight, per shard, with the time each was handed over:
// the heartbeat refreshes them, the reclaim and the own-pending read skip them.

export class HeldEntries {
  readonly #byShard: Array<Map<string, number>>;

  constructor(shards: number) {
    this.#byShard = Array.from({ length: shards }, () => new Map<string, number>());
  }

  #of(shard: number): Map<string, number> {
    const held = this.#byShard[shard];
    if (held === undefined) throw new Error(`no shard ${shard} (${this.#byShard.length} shards)`);
    return held;
  }

  add(shard: number, ids: Iterable<string>, at = Date.now()): void {
    const held = this.#of(shard);
    for (const id of ids) held.set(id, at);
  }

  delete(shard: number, ids: Iterable<string>): void {
    const held = this.#of(shard);
    for (const id of ids) held.delete(id);
  }

  has(shard: number, id: string): boolean {
    return this.#of(shard).has(id);
  }

  /** Per shard that holds any, the IDs handed over after `since` (ms epoch). */
  *heldSince(since: number): Generator<[shard: number, ids: string[]]> {
    for (const [shard, held] of this.#byShard.entries()) {
      if (held.size === 0) continue;
      const ids: string[] = [];
      for (const [id, at] of held) if (at > since) ids.push(id);
      if (ids.length > 0) yield [shard, ids];
    }
  }
}
