// The fault suite's client: steady load of orders, each with its own Idempotency-Key, spread over
// the live ingest processes. Every answer is recorded per key. A key that got no answer
// (connection refused/reset, timeout), a 5xx or a 409 is retried with the same key and the same
// body — what a correct upstream does — until it gets a 202. Keys and bodies are never reused
// across orders, so the checker can tell exactly what the client was promised.
import { Agent } from 'node:http';
import type { Order } from '../../common/order.js';
import { http } from '../support/http.js';
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

/** How a status is handled: final success, retry, or a client bug (never expected here). */
function disposition(status: number): 'accepted' | 'retry' | 'refused' {
  if (status === 202) return 'accepted';
  if (status === 0 || status === 409 || status >= 500) return 'retry';
  return 'refused';
}

export class LoadClient {
  readonly records = new Map<string, KeyRecord>();
  private phase = 'warm-up';
  private producing = false;
  private senders: Array<Promise<void>> = [];
  private seq = 0;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });
  /** Keys waiting for a retry. */
  private readonly retryQueue: KeyRecord[] = [];
  private closed = false;

  constructor(private readonly options: LoadOptions) {}

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

  /** Stops new orders; resolves once every key sent so far got a 202 (or the deadline passed). */
  async stopAndSettle(deadlineMs = 120_000): Promise<{ unresolved: KeyRecord[] }> {
    this.producing = false;
    await Promise.all(this.senders);
    const deadline = Date.now() + deadlineMs;
    while (this.retryQueue.length > 0 && Date.now() < deadline) {
      const batch = this.retryQueue.splice(0, this.retryQueue.length);
      await Promise.all(batch.map((r) => this.sendUntilSettled(r, deadline)));
    }
    return { unresolved: [...this.records.values()].filter((r) => r.acceptedAt === undefined) };
  }

  close(): void {
    this.closed = true;
    this.agent.destroy();
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

  private async sender(i: number): Promise<void> {
    while (this.producing && !this.closed) {
      // Retries first (same key, same body), then a new order.
      const retry = this.retryQueue.shift();
      if (retry) {
        await this.attempt(retry);
        continue;
      }
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
      await this.attempt(rec);
      await new Promise((r) => setTimeout(r, (this.options.pauseMs ?? 20) + i));
    }
  }

  private async sendUntilSettled(rec: KeyRecord, deadline: number): Promise<void> {
    for (let tries = 0; rec.acceptedAt === undefined && Date.now() < deadline && !this.closed; tries++) {
      const d = await this.attempt(rec, false);
      if (d !== 'retry') return;
      await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** Math.min(tries, 5))));
    }
  }

  /** One request for a key; on a retryable answer the key goes back to the retry queue (unless told not to). */
  private async attempt(rec: KeyRecord, requeue = true): Promise<'accepted' | 'retry' | 'refused'> {
    const targets = this.options.targets();
    const target = targets[(rec.attempts + rec.key.length) % Math.max(1, targets.length)];
    rec.attempts++;
    let status = 0;
    if (target) {
      try {
        const res = await Promise.race([
          http(target, {
            method: 'POST',
            path: '/v1/orders',
            headers: {
              authorization: `Bearer ${this.options.apiKey}`,
              'content-type': 'application/json',
              'idempotency-key': rec.key,
            },
            body: JSON.stringify(rec.order),
            agent: this.agent,
          }),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error('timeout')), this.options.requestTimeoutMs ?? 5000).unref(),
          ),
        ]);
        status = res.status;
      } catch {
        status = 0;
      }
    }
    rec.answers.push(status);
    const d = disposition(status);
    if (d === 'accepted') rec.acceptedAt ??= Date.now();
    else if (d === 'retry' && requeue) {
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 50));
      this.retryQueue.push(rec);
    }
    return d;
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
