// Structured JSON logs (pino). One logger per process; components take a child.
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

/**
 * `mixin` adds fields to every line: with tracing on, the active span's trace_id and span_id
 * (common/tracing.ts). Without it pino calls nothing per line.
 */
export function createLogger(level: LogLevel, component: string, mixin?: () => Record<string, string>): Logger {
  return pino({ level, base: { component, pid: process.pid }, ...(mixin ? { mixin } : {}) });
}
