// The long poll of `GET /v1/orders/:key?wait=`, built to be held by the thousand: during its wait
// a request holds one small record here and one in the waiter map (ingest/outcomes.ts), no
// promise, timer or closure of its own. The waiter registers first; the order is looked up once
// the outcome streams are followed (so an outcome published in between still wakes it); a final
// or unknown order is answered at once, and a queued one by its waiter — with the published
// outcome, or when the wait ends with the state then. From the next event-loop turn on, the
// request is out of node:http (held.ts): while it waits it holds its socket and these records, and
// its connection closes after the answer.
import type { ServerResponse } from 'node:http';
import type { Outcome, OrderState } from '../common/outcome.js';
import { detach, type HeldListener } from './held.js';
import type { OutcomeWaiters, WaitListener, Waiter } from './outcomes.js';
import type { Answerable, Exchange } from './pipeline.js';

/** What the long polls of one app share. */
export interface LongPollDeps {
  outcomes: Pick<OutcomeWaiters, 'wait' | 'whenReady'>;
  /** The order's state now (PostgreSQL first, then Redis); undefined when there is no such order. */
  lookup(clientId: string, key: string): Promise<OrderState | undefined>;
  /** Answers the state (200), or 404 for undefined. */
  answer(x: Answerable, state: OrderState | undefined): void;
  /** Answers 503: the lookup failed. */
  unavailable(x: Answerable, err: unknown): void;
  /** A throw outside the handler's promise: fails this request alone. */
  failed(x: Answerable, err: unknown): void;
}

/** The state a published outcome answers with, as the lookup would read it. */
function outcomeState(o: Outcome): OrderState {
  return {
    idempotency_key: o.idempotencyKey,
    status: o.status,
    ...(o.orderRef !== undefined ? { order_ref: o.orderRef } : {}),
    ...(o.reason !== undefined ? { reason: o.reason } : {}),
    ...(o.appliedAt !== undefined ? { applied_at: o.appliedAt } : {}),
  };
}

/** The long poll of each waiting response, for the one 'close' listener all of them share. */
const polls = new WeakMap<ServerResponse, LongPoll>();

function onClose(this: ServerResponse): void {
  polls.get(this)?.waiter.cancel();
}

enum Phase {
  /** Until the outcome streams are followed. */
  Pinning,
  /** The first lookup runs. */
  Looking,
  /** The first lookup found the order not yet final: its waiter answers. */
  Queued,
}

/** Long polls started this turn, held at the next (node:http is still parsing their request now). */
const toHold: LongPoll[] = [];

function holdAll(): void {
  for (const p of toHold.splice(0)) p.hold();
}

class LongPoll implements WaitListener, HeldListener {
  phase = Phase.Pinning;
  readonly waiter: Waiter;
  /** The request until it is held (then undefined). */
  private exchange: Exchange | undefined;
  /** What answers it: the exchange, then its held socket's answer. */
  private x: Answerable;

  constructor(
    private readonly deps: LongPollDeps,
    x: Exchange,
    private readonly clientId: string,
    private readonly key: string,
    ms: number,
  ) {
    this.exchange = x;
    this.x = x;
    this.waiter = deps.outcomes.wait(clientId, key, ms, this);
  }

  start(): void {
    const res = this.exchange?.res;
    if (res) {
      polls.set(res, this);
      res.on('close', onClose);
    }
    this.deps.outcomes.whenReady(() => {
      if (this.phase === Phase.Pinning && !this.x.answered) this.lookup();
    });
    if (toHold.push(this) === 1) setImmediate(holdAll);
  }

  /** The request waits out of node:http, when it can (held.ts). */
  hold(): void {
    const x = this.exchange;
    if (!x || x.answered) return;
    const held = detach(x.req, x.res, this);
    if (!held) return;
    this.exchange = undefined;
    polls.delete(x.res);
    x.res.removeListener('close', onClose);
    this.x = { res: held, reqId: x.reqId, route: x.route, started: x.started, answered: x.answered, trace: x.trace };
  }

  /** The held socket closed before the answer: the client went away. */
  closed(): void {
    this.waiter.cancel();
  }

  private lookup(): void {
    this.phase = Phase.Looking;
    this.guarded(
      this.deps.lookup(this.clientId, this.key).then(
        (state) => {
          if (this.x.answered) return;
          // The lookup may queue for a pool connection behind many others: when the waiter woke
          // meanwhile with the outcome, it answered (a published outcome is final).
          if (state?.status === 'queued' && this.waiter.waiting) this.phase = Phase.Queued;
          else {
            this.waiter.cancel();
            this.deps.answer(this.x, state);
          }
        },
        (err: unknown) => {
          this.waiter.cancel();
          this.deps.unavailable(this.x, err);
        },
      ),
    );
  }

  /** The waiter's end: the outcome, or undefined when the wait ran out (or ingest stops). */
  ended(outcome: Outcome | undefined): void {
    const { x, deps } = this;
    if (outcome) deps.answer(x, outcomeState(outcome));
    else if (this.phase === Phase.Queued) {
      // The state now: it may have become final without a notice reaching us.
      if (!x.res.destroyed)
        this.guarded(
          deps.lookup(this.clientId, this.key).then(
            (state) => deps.answer(x, state),
            (err: unknown) => deps.unavailable(x, err),
          ),
        );
    }
    // Never followed (Redis down): the lookup goes ahead now, and answers what it finds.
    else if (this.phase === Phase.Pinning) this.lookup();
  }

  private guarded(p: Promise<void>): void {
    p.catch((err: unknown) => this.deps.failed(this.x, err));
  }
}

/** Answers `x` with its order's outcome once final, or its state when `ms` ran out. */
export function longPoll(deps: LongPollDeps, x: Exchange, clientId: string, key: string, ms: number): void {
  new LongPoll(deps, x, clientId, key, ms).start();
}
