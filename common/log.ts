// Structured JSON logs (pino). One logger per process; components take a child.
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export function createLogger(level: LogLevel, component: string): Logger {
  return pino({ level, base: { component, pid: process.pid } });
}
