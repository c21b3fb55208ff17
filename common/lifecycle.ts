// Signal handling shared by every long-running command: the first SIGTERM/SIGINT starts a
// graceful stop; if it has not finished within the timeout (keep it below Kubernetes' grace
// period) or a second signal arrives, the process exits at once (exit code 1 on force).
import type { Logger } from './log.js';

export interface Stoppable {
  /** Graceful stop. Must be safe to call twice (return the same promise). */
  stop(): Promise<void>;
}

export interface RunOptions {
  timeoutMs: number;
  logger: Logger;
  /** For tests: don't call process.exit, just resolve. */
  exit?: (code: number) => void;
}

/**
 * Returns the graceful stop the first signal starts, for a caller with another reason to stop;
 * calling it while a stop is under way does nothing (only a signal forces the exit).
 */
export function stopOnSignals(name: string, service: Stoppable, options: RunOptions): (reason: string) => void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const onSignal = (signal: string) => {
    if (stopping) {
      options.logger.warn({ signal }, `${name}: second signal, exiting now`);
      exit(1);
      return;
    }
    gracefully(signal);
  };
  const gracefully = (signal: string) => {
    if (stopping) return;
    stopping = true;
    options.logger.info({ signal, timeoutMs: options.timeoutMs }, `${name}: stopping gracefully`);
    const timer = setTimeout(() => {
      options.logger.error({ timeoutMs: options.timeoutMs }, `${name}: graceful stop timed out, exiting`);
      exit(1);
    }, options.timeoutMs);
    timer.unref();
    service.stop().then(
      () => {
        clearTimeout(timer);
        options.logger.info(`${name}: stopped`);
        exit(0);
      },
      (err: unknown) => {
        clearTimeout(timer);
        options.logger.error({ err }, `${name}: error while stopping`);
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return gracefully;
}
