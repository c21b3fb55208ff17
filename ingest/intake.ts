// Single orders (POST /v1/orders), checked and prepared once per event-loop turn: the handler
// hands over the body, and when the turn's I/O callbacks are done (setImmediate) every body of
// the turn is decoded, parsed, validated and prepared, one after the other, and the valid ones
// go to Redis in the writer's calls right away. Each order is still checked on its own and
// answered with its own outcome; a bad one costs no other its place.
//
// Why per turn: in the server, each step that runs between two requests' HTTP work runs with its
// code and data gone cold, and JSON.parse, validation and SHA-256 each take several times as long
// as they do back to back in a loop. Doing a turn's orders together keeps them warm and lowers
// the main thread's CPU per request (`npm run bench:ingest-ab`; figures in
// bench/results/HISTORY.md).
//
// A turn can be long: under a burst one poll phase of the loop reads thousands of requests before
// any setImmediate runs, and orders left for the end of it would hold their places in flight (the
// door's limit) the whole time while the door sheds the rest. So a turn's orders are also sent
// every full accept call's worth, without waiting for the turn to end.
import { checkOrderBody, type Problem } from './requests.js';
import { ORDERS_PER_SCRIPT_CALL, type OrderWriter, type PreparedOrder, type WriteOutcome } from './writer.js';

/** What became of a single order: refused as invalid (400), or its write's outcome. */
export type IntakeOutcome = WriteOutcome | { kind: 'invalid'; problem: Problem };

interface Submitted {
  body: Uint8Array;
  clientId: string;
  idempotencyKey: string;
  /** The accepting request's `traceparent` (tracing on and sampled only). */
  traceparent: string | undefined;
  resolve: (outcome: IntakeOutcome) => void;
  reject: (err: unknown) => void;
}

export class OrderIntake {
  private pending: Submitted[] = [];
  private scheduled = false;

  constructor(private readonly writer: OrderWriter) {}

  /**
   * Checks and writes one order's body at the end of this turn. Resolves with the order's
   * outcome; rejects only when checking or preparing it threw (a bug: the route answers 500).
   */
  submit(
    body: Uint8Array,
    clientId: string,
    idempotencyKey: string,
    traceparent?: string | undefined,
  ): Promise<IntakeOutcome> {
    return new Promise((resolve, reject) => {
      this.pending.push({ body, clientId, idempotencyKey, traceparent, resolve, reject });
      // A full call's worth: sent now (the setImmediate still runs, for what comes after).
      if (this.pending.length >= ORDERS_PER_SCRIPT_CALL) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.run);
      }
    });
  }

  /** The turn's end (setImmediate). */
  private readonly run = (): void => {
    this.scheduled = false;
    this.flush();
  };

  /** Checks, prepares and writes the orders waiting; the scheduled turn's end keeps its place. */
  private flush(): void {
    if (this.pending.length === 0) return;
    const turn = this.pending;
    this.pending = [];
    for (const s of turn) {
      // A throw here is a bug; it fails its own request (500), not the turn's others.
      let prepared: PreparedOrder;
      try {
        const checked = checkOrderBody(s.body);
        if (!checked.ok) {
          s.resolve({ kind: 'invalid', problem: checked.problem });
          continue;
        }
        prepared = this.writer.prepare(s.clientId, s.idempotencyKey, checked.order);
        if (s.traceparent) prepared.traceparent = s.traceparent;
      } catch (err) {
        s.reject(err);
        continue;
      }
      this.writer.submit(prepared, s.resolve);
    }
    // Sent now: the writer's own setImmediate, scheduled from inside this one, would run a loop
    // iteration later.
    this.writer.flushNow();
  }
}
