// The consumer loops' shared shape: run a step again and again until stop, and never die of an
// error — log it, back off (jittered, doubling), try again.
import type { Logger } from '../common/log.js';

export interface LoopControl {
  stopped(): boolean;
  /** A wait that stop cuts short. */
  pause(ms: number): Promise<void>;
  logger: Logger;
}

/** Jittered exponential backoff: base doubling per attempt up to max, times 0.5–1. */
export function backoffMs(attempt: number, baseMs = 100, maxMs = 5000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 16)) * (0.5 + Math.random() / 2);
}

/**
 * Runs `step` until stop or until it returns `'done'`. An error is logged as `<what> failed`,
 * passed to `onError` (e.g. to recreate a deleted group), and the step retried after a backoff.
 */
export async function runUntilStopped(
  control: LoopControl,
  what: () => string,
  step: () => Promise<'done' | undefined>,
  onError?: (e: unknown) => Promise<void>,
): Promise<void> {
  let errors = 0;
  while (!control.stopped()) {
    try {
      if ((await step()) === 'done') return;
      errors = 0;
    } catch (e) {
      control.logger.error({ err: e }, `${what()} failed; retrying`);
      await onError?.(e).catch(() => {});
      await control.pause(backoffMs(errors++));
    }
  }
}
