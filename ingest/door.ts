// Overload control at the door (SEMANTICS §10): when requests arrive faster than the process can
// answer within its latency budget, the excess is answered 503 + Retry-After at once, before its
// body is read, instead of waiting in sockets and queues. Two signals, as @fastify/under-pressure
// and concurrency-limit libraries use: requests in flight (the writes being served now) and
// event-loop delay (how late the loop runs what is ready: every request waits at least that long).
// Retry-After spreads the retries: over as many seconds as there were shed requests per accepted
// one lately (the door's drain rate), with jitter, so they do not come back as one wave.
import type { ServerResponse } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Config } from '../common/config.js';

export type DoorReason = 'in_flight' | 'event_loop_delay';

/** Event-loop delay sampling: resolution of the histogram and how often it is read and reset. */
const RESOLUTION_MS = 10;
const SAMPLE_MS = 100;
/** The accepted and shed counts are averaged over about this long. */
const RATE_WINDOW_MS = 2000;
/**
 * The event-loop delay sheds only while at least this many writes are in flight: a loop made late
 * by something else (start-up, a GC pause, a neighbour taking the CPU) with few requests waiting
 * is no reason to refuse the few.
 */
const DELAY_MIN_IN_FLIGHT = 16;
/** Longest Retry-After the door asks for (s). */
const MAX_RETRY_AFTER = 30;

export class Door {
  /** Writes being served now (admitted, not yet answered or closed). */
  inFlight = 0;
  /** Event-loop delay over the last sample (ms), beyond the histogram's resolution. */
  delayMs = 0;
  private histogram: ReturnType<typeof monitorEventLoopDelay> | undefined;
  private timer: NodeJS.Timeout | undefined;
  // Accepted (202) and shed answers: counts of the current sample, and their moving averages.
  private accepted = 0;
  private shed = 0;
  private acceptedRate = 0;
  private shedRate = 0;
  private readonly left = (res: ServerResponse): void => {
    this.inFlight--;
    if (res.statusCode === 202) this.accepted++;
  };

  constructor(
    private readonly limits: Pick<Config, 'ingestMaxInFlight' | 'ingestMaxEventLoopDelayMs'>,
    private readonly random: () => number = Math.random,
  ) {}

  start(): void {
    if (this.timer) return;
    if (this.limits.ingestMaxEventLoopDelayMs > 0) {
      this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
      this.histogram.enable();
    }
    const alpha = SAMPLE_MS / RATE_WINDOW_MS;
    this.timer = setInterval(() => {
      if (this.histogram) {
        this.delayMs = Math.max(0, this.histogram.mean / 1e6 - RESOLUTION_MS);
        this.histogram.reset();
      }
      this.acceptedRate += alpha * (this.accepted - this.acceptedRate);
      this.shedRate += alpha * (this.shed - this.shedRate);
      this.accepted = 0;
      this.shed = 0;
    }, SAMPLE_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.histogram?.disable();
    this.histogram = undefined;
  }

  /** Why a write arriving now must be shed, or undefined. */
  check(): DoorReason | undefined {
    const { ingestMaxInFlight, ingestMaxEventLoopDelayMs } = this.limits;
    if (ingestMaxInFlight > 0 && this.inFlight >= ingestMaxInFlight) return 'in_flight';
    if (
      ingestMaxEventLoopDelayMs > 0 &&
      this.delayMs > ingestMaxEventLoopDelayMs &&
      this.inFlight >= DELAY_MIN_IN_FLIGHT
    )
      return 'event_loop_delay';
    return undefined;
  }

  /** A write let in: it counts as in flight until its response is done or its connection closed. */
  enter(res: ServerResponse): void {
    this.inFlight++;
    res.once('close', () => this.left(res));
  }

  /** A write shed; the Retry-After (s) to send with it. */
  shedOne(): number {
    this.shed++;
    return this.retryAfter();
  }

  /**
   * Retry-After for a request the door shed: spread over as many seconds as requests were shed
   * per accepted one lately (the door lets through about `acceptedRate` per sample), at least 1.
   */
  retryAfter(): number {
    const spread = Math.min(
      MAX_RETRY_AFTER,
      Math.max(1, Math.ceil(this.shedRate / Math.max(this.acceptedRate, 1e-3 * this.shedRate, 1e-9))),
    );
    return 1 + Math.floor(this.random() * spread);
  }
}
