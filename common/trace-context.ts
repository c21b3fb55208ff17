// The process's OpenTelemetry context manager: AsyncLocalStorage where it is cheap, and where it
// is not, only for the traced work that asks for it.
//
// Node 24 builds AsyncLocalStorage on AsyncContextFrame: every promise already carries its
// frame, and entering a store costs one small map. Node 20 and 22 build it on async hooks: the
// first store entered turns on a promise hook that runs for every promise of the process, and
// it stays on, so at a low sampling ratio the few sampled requests would tax every unsampled one
// (bench/results/HISTORY.md). There, `with` keeps the context for its synchronous call only (a
// stack, as the SDK's StackContextManager), unless traced work holds the manager (`hold`, then
// the returned release once the work is done): then contexts follow async continuations until
// nothing holds it, when the storage is disabled and its hooks go off. The worker's ack holds it;
// ingest's request handlers do not (their synchronous part runs in the span's context).
import { AsyncLocalStorage } from 'node:async_hooks';
import { type Context, type ContextManager, ROOT_CONTEXT } from '@opentelemetry/api';

export class TracedWorkContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();
  /** The hook-based implementation keeps its store on async resources under this property. */
  readonly hooked = 'kResourceStore' in this.storage;
  /** The context of the synchronous `with` running, when it is not in the storage. */
  private current: Context | undefined;
  private holds = 0;
  private depth = 0;

  active(): Context {
    return this.current ?? this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const cb = thisArg == null ? fn : (fn.bind(thisArg) as F);
    if (!this.hooked) return this.storage.run(ctx, cb, ...args);
    const outer = this.current;
    if (this.holds === 0) {
      this.current = ctx;
      try {
        return cb(...args);
      } finally {
        this.current = outer;
      }
    }
    this.current = undefined;
    this.depth++;
    try {
      return this.storage.run(ctx, cb, ...args);
    } finally {
      this.depth--;
      this.current = outer;
      this.settle();
    }
  }

  /** Functions only: nothing here binds an event emitter (the SDK does not either). */
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const manager = this;
    const f = target as (...args: unknown[]) => unknown;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => f.apply(this, args));
    } as T;
  }

  /**
   * Makes the contexts entered from now on follow async continuations, until the returned
   * function is called (idempotent): call it before running traced work that goes on after its
   * `with` returns, and release it when that work is done.
   */
  hold(): () => void {
    if (!this.hooked) return noop;
    this.holds++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.holds--;
      this.settle();
    };
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    return this;
  }

  private settle(): void {
    if (this.holds === 0 && this.depth === 0) this.storage.disable();
  }
}

const noop = (): void => {};
