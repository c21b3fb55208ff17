// Overload control at the door (SEMANTICS §10): when requests arrive faster than the process can
// answer within its latency budget, the excess is answered 503 + Retry-After at once, before its
// body is read, instead of waiting in sockets and queues. Two signals, as @fastify/under-pressure
// and concurrency-limit libraries use: requests in flight (the writes being served now) and
// event-loop delay (how late the loop runs what is ready: every request waits at least that long).
// A third signal reads lateness inside a turn: under a burst one poll phase of the loop reads
// every request waiting on every connection (thousands), and no timer runs until it ends, so the
// delay sampler is blind in the very turn that makes the loop late. The first request of a turn
// stamps when it began; a write arriving once the turn has run longer than its budget is shed,
// and its connection is not read again until the turn ends: what it sends meanwhile waits for the
// next turn instead of lengthening this one.
// Retry-After hands out return times like tickets: each shed request is told to come back after
// the ones shed before it, at the rate the door has been accepting, so the clients waiting come
// back about as fast as they can be let in — not as one wave, and not every second again.
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Config } from '../common/config.js';
import type { ShedReason } from '../metrics/definitions.js';

export type DoorReason = Extract<ShedReason, 'in_flight' | 'event_loop_delay' | 'turn'>;

/** Event-loop delay sampling: resolution of the histogram and how often it is read and reset. */
const RESOLUTION_MS = 10;
const SAMPLE_MS = 100;
/** The accepted count is averaged over about this long. */
const RATE_WINDOW_MS = 2000;
/**
 * The event-loop delay and a long turn shed only while at least this many writes are in flight: a
 * loop made late by something else (start-up, a GC pause, a neighbour taking the CPU) with few
 * requests waiting is no reason to refuse the few.
 */
const DELAY_MIN_IN_FLIGHT = 16;
/** libuv's read switch of a connection: node:net keeps no public one for a socket node:http reads. */
interface ReadingHandle {
  reading: boolean;
  readStart(): number;
  readStop(): number;
}
const handleOf = (socket: Socket) => (socket as unknown as { _handle?: ReadingHandle | null })._handle;

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
  /** Whether a turn's first request was read and the turn has not ended yet, and when it was read (ms). */
  private inTurn = false;
  private turnStartedAt = 0;
  /** Connections not read since they were shed late in this turn. */
  private held: Socket[] = [];
  private readonly turnEnded = (): void => {
    this.inTurn = false;
    if (this.held.length === 0) return;
    const held = this.held;
    this.held = [];
    for (const socket of held) {
      const handle = handleOf(socket);
      if (handle && !handle.reading && !socket.destroyed) {
        handle.reading = true;
        handle.readStart();
      }
    }
  };
  private readonly left = (res: ServerResponse): void => {
    this.inFlight--;
    if (res.statusCode === 202) this.accepted++;
  };

  constructor(
    private readonly limits: Pick<Config, 'ingestMaxInFlight' | 'ingestMaxEventLoopDelayMs' | 'ingestMaxTurnMs'>,
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

  /**
   * A request read at `now` (performance.now ms), any route: the first of a loop turn stamps the
   * turn's start, and one setImmediate, which runs once the turn's I/O callbacks are done, ends it.
   * (Never an immediate that reschedules itself: the loop would then never block waiting for I/O.)
   */
  arrived(now: number): void {
    if (this.inTurn) return;
    this.inTurn = true;
    this.turnStartedAt = now;
    setImmediate(this.turnEnded);
  }

  /** How long (ms) the turn running at `now` has run since its first request; 0 between turns. */
  turnAge(now: number): number {
    return this.inTurn ? now - this.turnStartedAt : 0;
  }

  /** Why a write arriving at `now` (performance.now ms) must be shed, or undefined. */
  check(now: number): DoorReason | undefined {
    const { ingestMaxInFlight, ingestMaxEventLoopDelayMs, ingestMaxTurnMs } = this.limits;
    if (ingestMaxInFlight > 0 && this.inFlight >= ingestMaxInFlight) return 'in_flight';
    if (this.inFlight < DELAY_MIN_IN_FLIGHT) return undefined;
    if (ingestMaxEventLoopDelayMs > 0 && this.delayMs > ingestMaxEventLoopDelayMs) return 'event_loop_delay';
    if (ingestMaxTurnMs > 0 && this.turnAge(now) > ingestMaxTurnMs) return 'turn';
    return undefined;
  }

  /** A write let in: it counts as in flight until its response is done or its connection closed. */
  enter(res: ServerResponse): void {
    this.inFlight++;
    res.once('close', () => this.left(res));
  }

  /**
   * A write shed at `now`; the Retry-After (s) to send with it. When the turn has run past its
   * budget, its connection (`socket`) is not read again until the turn ends, so each connection
   * adds at most one request to a turn already too long.
   */
  shedOne(now: number, socket?: Socket): number {
    const { ingestMaxTurnMs } = this.limits;
    if (socket && ingestMaxTurnMs > 0 && this.turnAge(now) > ingestMaxTurnMs) {
      const handle = handleOf(socket);
      if (handle?.reading) {
        handle.reading = false;
        handle.readStop();
        this.held.push(socket);
      }
    }
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
