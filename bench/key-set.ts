// A set of order keys for a load generator that remembers every key of a run (a million and
// more). One JavaScript Set that large stalls the event loop each time it grows: V8 rehashes the
// whole table in one step, tens of ms at a million strings, and a generator late by that much
// queues its own requests and reports the wait as the server's latency. Spread over many small
// Sets, each growth moves a small table.

const PARTS = 256;

export class KeySet {
  private readonly parts: Set<string>[] = Array.from({ length: PARTS }, () => new Set<string>());
  private count = 0;

  private part(key: string): Set<string> {
    // The keys of a run differ mostly in their last characters (a sequence number).
    let h = 0;
    for (let i = Math.max(0, key.length - 3); i < key.length; i++) h = h * 31 + key.charCodeAt(i);
    return this.parts[h % PARTS] as Set<string>;
  }

  get size(): number {
    return this.count;
  }

  has(key: string): boolean {
    return this.part(key).has(key);
  }

  add(key: string): void {
    const part = this.part(key);
    if (part.has(key)) return;
    part.add(key);
    this.count++;
  }

  /** Every key, in no particular order. */
  values(): string[] {
    const out: string[] = [];
    for (const part of this.parts) for (const key of part) out.push(key);
    return out;
  }
}
