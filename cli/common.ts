// Helpers shared by the CLI commands: load config with a clear failure, run an action and turn
// errors into a message and an exit code, run a long-lived role until a signal stops it.
import { type Config, ConfigError, loadConfig } from '../common/config.js';
import { type Stoppable, stopOnSignals } from '../common/lifecycle.js';
import { createLogger, type Logger } from '../common/log.js';
import { assertMigrated, explainSchemaError } from '../common/migrate.js';
import type { Role } from '../common/roles.js';
import { startTracing, TracingConfigError } from '../common/tracing.js';

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

/** Tracing as the OTEL_* variables ask (off unless they do); exit code 2 when they are invalid. */
function tracingOrExit(serviceName: string) {
  try {
    return startTracing(serviceName);
  } catch (e) {
    if (e instanceof TracingConfigError) {
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
      const explained = explainSchemaError(e);
      process.stderr.write(`surge: ${explained instanceof Error ? explained.message : String(explained)}\n`);
      process.exit(1);
    }
  };
}

/**
 * Runs a long-lived role: its own logger, then a graceful stop on SIGTERM/SIGINT. A role that
 * works on PostgreSQL refuses to start on a database that was never migrated, with the command
 * that fixes it, instead of failing on its first query. Every served role is listed in
 * common/roles.ts, which the deployment tests read.
 */
export function serve(
  name: Role,
  component: string,
  start: (config: Config, logger: Logger) => Promise<Stoppable>,
  options: { database?: boolean } = {},
): () => Promise<void> {
  return action(async () => {
    const config = configOrExit();
    if (options.database) await assertMigrated(config.databaseUrl);
    // Before the role starts, so its parts find the tracer (activeTracing) and every log line
    // can carry the active span's ids.
    const tracing = tracingOrExit(`surge-${component}`);
    const logger = createLogger(config.logLevel, component, tracing?.logMixin);
    // A role answers its probes before start() has returned (ingest adds listeners after its
    // first one is up): a signal in that window is held and stops the role once it has started,
    // rather than killing it with Node's default action.
    let early: string | undefined;
    const hold = (signal: string) => {
      early ??= signal;
    };
    process.on('SIGTERM', hold);
    process.on('SIGINT', hold);
    const handle = await start(config, logger).finally(() => {
      process.off('SIGTERM', hold);
      process.off('SIGINT', hold);
    });
    if (tracing)
      logger.info({ service: tracing.settings.serviceName, exporter: tracing.settings.exporter }, 'tracing on');
    let stopped: Promise<void> | undefined;
    const stoppable: Stoppable = tracing
      ? {
          // Spans of the last batches are sent before the process exits.
          stop: () => {
            stopped ??= handle.stop().finally(() => tracing.shutdown().catch(() => {}));
            return stopped;
          },
        }
      : handle;
    const stop = stopOnSignals(name, stoppable, { timeoutMs: config.shutdownTimeoutMs, logger });
    if (early !== undefined) stop(early);
    stopWithParent(logger, stop);
  });
}

/**
 * A child of `surge up` runs in its own process group (stack/up.ts), so when `surge up` dies
 * without stopping it (SIGKILL, a crash) nothing else would: it then stops itself, gracefully.
 */
function stopWithParent(logger: Logger, stop: (reason: string) => void): void {
  const parent = Number(process.env.SURGE_UP_PID);
  if (!Number.isInteger(parent) || parent <= 0) return;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    logger.warn({ parent }, 'surge up exited');
    stop('parent exited');
  }, 1000);
  timer.unref();
}
