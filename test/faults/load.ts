// The fault suite's client: steady load of orders, each with its own Idempotency-Key, spread over
// the live ingest processes, submitted with the reference client (surge/client), so its retries
// are what the faults are run against: a key that got no answer (connection refused/reset,
// timeout), a 5xx or a 409 is retried with the same key and body after Retry-After and jitter,
// until a 202 or its deadline. Every attempt's answer is recorded per key. Keys and bodies are
// never reused across orders, so the checker can tell exactly what the client was promised.
import { SurgeClient, SurgeError } from '../../client/index.js';
import type { Order } from '../../common/order.js';
import { defined } from '../support/defined.js';

export interface KeyRecord {
  key: string;
  order: Order;
  /** Phase label when the key was first sent. */
  phase: string;
  attempts: number;
  /** Status per attempt; 0 = no answer (connection error or timeout). */
  answers: number[];
  /** Time of the first 202 (ms since epoch), if any. */
  acceptedAt?: number;
  firstSentAt: number;
}

export interface LoadOptions {
  /** Base URLs of the live ingest processes (read before every request: processes come and go). */
  targets: () => string[];
  apiKey: string;
  /** Concurrent senders. Default 4. */
  concurrency?: number;
  /** Pause between one sender's new orders, ms. Default 20: at most 50 new orders a second per sender. */
  pauseMs?: number;
  /** SKUs with stock (a share of orders take from them); the rest are unstocked. */
  stockedSkus: readonly string[];
  /** Per-request timeout, ms. Default 5000. */
  requestTimeoutMs?: number;
  keyPrefix: string;
}

/** How long one order may be retried: longer than any fault of the suite lasts. */
const SETTLE_DEADLINE_MS = 120_000;

export class LoadClient {
  readonly records = new Map<string, KeyRecord>();
  private phase = 'warm-up';
  private producing = false;
  private senders: Array<Promise<void>> = [];
  private seq = 0;
  private next = 0;
  private readonly stop = new AbortController();
  /** The reference client: its retries (same key, Retry-After, jitter, deadline) are what is under test. */
  private readonly surge: SurgeClient;

  constructor(private readonly options: LoadOptions) {
    this.surge = new SurgeClient({
      // Each attempt goes to the next live ingest: processes come and go.
      baseUrl: () => {
        const targets = this.options.targets();
        return targets[this.next++ % Math.max(1, targets.length)] ?? 'http://127.0.0.1:9';
      },
      apiKey: options.apiKey,
      attemptTimeoutMs: options.requestTimeoutMs ?? 5000,
      deadlineMs: SETTLE_DEADLINE_MS,
      retry: { baseDelayMs: 50, maxDelayMs: 1000 },
      onAttempt: ({ key, status }) => {
        const rec = this.records.get(key);
        if (!rec) return;
        rec.attempts++;
        rec.answers.push(status);
      },
    });
  }

  setPhase(phase: string): void {
    this.phase = phase;
  }

  /** Starts (or resumes) sending new orders. */
  start(): void {
    if (this.producing) return;
    this.producing = true;
    const n = this.options.concurrency ?? 4;
    this.senders = Array.from({ length: n }, (_, i) => this.sender(i));
  }

  /** Stops new orders; resolves once every key sent so far got a 202 or its client gave up (deadline). */
  async stopAndSettle(): Promise<{ unresolved: KeyRecord[] }> {
    this.producing = false;
    await Promise.all(this.senders);
    return { unresolved: [...this.records.values()].filter((r) => r.acceptedAt === undefined) };
  }

  close(): void {
    this.producing = false;
    this.stop.abort();
  }

  private newOrder(n: number): Order {
    const stocked = this.options.stockedSkus;
    // One order in four takes 1–3 units of a stocked SKU (stock runs out: rejections), the rest
    // buy unstocked SKUs. Items and prices vary so totals are checkable.
    const items = [{ sku: `free-${n % 7}`, qty: 1 + (n % 3), unit_price_cents: 100 + (n % 97) }];
    if (n % 4 === 0 && stocked.length > 0)
      items.push({
        sku: defined(stocked[n % stocked.length], 'a stocked SKU'),
        qty: 1 + (n % 3),
        unit_price_cents: 999,
      });
    return {
      customer_id: `cust-${n % 50}`,
      currency: 'EUR',
      items,
      order_id: `o-${n}`,
      metadata: { tab: 'a\tb', nl: 'x\ny', bs: 'c:\\N', emoji: '🛒' },
    };
  }

  /** One sender: a new order, submitted until the client settles it, then a pause. */
  private async sender(i: number): Promise<void> {
    while (this.producing && !this.stop.signal.aborted) {
      const n = ++this.seq;
      const rec: KeyRecord = {
        key: `${this.options.keyPrefix}-${n}`,
        order: this.newOrder(n),
        phase: this.phase,
        attempts: 0,
        answers: [],
        firstSentAt: Date.now(),
      };
      this.records.set(rec.key, rec);
      try {
        await this.surge.submit(rec.order, { key: rec.key, signal: this.stop.signal });
        rec.acceptedAt = Date.now();
      } catch (err) {
        // A 4xx (a client bug, never expected here), the deadline, or close(): left unaccepted.
        if (!(err instanceof SurgeError) && !this.stop.signal.aborted) throw err;
      }
      await new Promise((r) => setTimeout(r, (this.options.pauseMs ?? 20) + i));
    }
  }

  /** Answers other than 202 so far (0 = no answer, 5xx, 409). */
  failures(): number {
    let n = 0;
    for (const r of this.records.values()) for (const a of r.answers) if (a !== 202) n++;
    return n;
  }

  /** Summary counts for a phase (or all phases). */
  counts(phase?: string): { sent: number; requests: number; accepted: number; retried: number; unresolved: number } {
    let sent = 0;
    let requests = 0;
    let accepted = 0;
    let retried = 0;
    let unresolved = 0;
    for (const r of this.records.values()) {
      if (phase !== undefined && r.phase !== phase) continue;
      sent++;
      requests += r.attempts;
      if (r.acceptedAt !== undefined) accepted++;
      else unresolved++;
      if (r.attempts > 1) retried++;
    }
    return { sent, requests, accepted, retried, unresolved };
  }
}
