// Helpers shared by the CLI commands: load config with a clear failure, run an action and turn
// errors into a message and an exit code.
import { type Config, ConfigError, loadConfig } from '../common/config.js';

export function configOrExit(overrides: Partial<Config> = {}): Config {
  try {
    return loadConfig(process.env, overrides);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`surge: invalid configuration: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
}

/** Runs a one-shot command: prints the error message (not a stack) and exits 1 on failure. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      process.stderr.write(`surge: ${(e as Error).message}\n`);
      process.exit(1);
    }
  };
}
