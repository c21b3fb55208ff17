// Overload control at the door (SEMANTICS §10): when requests arrive faster than the process can
// answer within its latency budget, the excess is answered 503 + Retry-After at once, before its
// body is read, instead of waiting in sockets and queues. Two signals, as @fastify/under-pressure
// and concurrency-limit libraries use: requests in flight (the writes being served now) and
// event-loop delay (how late the loop runs what is ready: every request waits at least that long).
// Retry-After hands out return times like tickets: each shed request is told to come back after
// the ones shed before it, at the rate the door has been accepting, so the clients waiting come
// back about as fast as they can be let in — not as one wave, and not every second again.
import type { ServerResponse } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Config } from '../common/config.js';

export type DoorReason = 'in_flight' | 'event_loop_delay';

/** Event-loop delay sampling: resolution of the histogram and how often it is read and reset. */
const RESOLUTION_MS = 10;
const SAMPLE_MS = 100;
/** The accepted count is averaged over about this long. */
const RATE_WINDOW_MS = 2000;
/**
 * The event-loop delay sheds only while at least this many writes are in flight: a loop made late
 * by something else (start-up, a GC pause, a neighbour taking the CPU) with few requests waiting
 * is no reason to refuse the few.
 */
const DELAY_MIN_IN_FLIGHT = 16;
/** Longest Retry-After the door asks for (s). */
const MAX_RETRY_AFTER = 30;
/** The return rate the door assumes when it has accepted less than this lately (per second). */
const MIN_RETURN_RATE_PER_S = 100;

export class Door {
  /** Writes being served now (admitted, not yet answered or closed). */
  inFlight = 0;
  /** Event-loop delay over the last sample (ms), beyond the histogram's resolution. */
  delayMs = 0;
  private histogram: ReturnType<typeof monitorEventLoopDelay> | undefined;
  private timer: NodeJS.Timeout | undefined;
  // Accepted (202) answers: the count of the current sample, and its moving average.
  private accepted = 0;
  private acceptedRate = 0;
  /** Until when (performance.now ms) the return times handed out so far are taken. */
  private horizon = 0;
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
      this.accepted = 0;
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
  shedOne(now = performance.now()): number {
    return this.retryAfter(now);
  }

  /**
   * Retry-After for a request the door shed: the next return time after those already handed out,
   * one per accepted request at the rate the door accepted lately (`acceptedRate` per sample), in
   * whole seconds with up to one more at random, at least 1 and at most MAX_RETRY_AFTER.
   */
  retryAfter(now: number): number {
    const perMs = Math.max(this.acceptedRate / SAMPLE_MS, MIN_RETURN_RATE_PER_S / 1000);
    this.horizon = Math.min(Math.max(this.horizon, now) + 1 / perMs, now + MAX_RETRY_AFTER * 1000);
    const seconds = Math.ceil((this.horizon - now) / 1000) + (this.random() < 0.5 ? 0 : 1);
    return Math.min(MAX_RETRY_AFTER, Math.max(1, seconds));
  }
}
