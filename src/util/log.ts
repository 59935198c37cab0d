import { pino } from 'pino';

/**
 * Structured logs through pino: one JSON object per line on stderr (level, time, pid,
 * hostname, name, msg, fields), so pino-pretty and log shippers read them as they are.
 * Kiln code logs `log.warn('message', { fields })`; this wraps pino's (fields, message).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(name: string, level: LogLevel = 'info', destination: NodeJS.WritableStream | number = 2): Logger {
  const log = pino({ name, level }, typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : destination);
  return {
    debug: (msg, fields) => log.debug(fields ?? {}, msg),
    info: (msg, fields) => log.info(fields ?? {}, msg),
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
    error: (msg, fields) => log.error(fields ?? {}, msg),
  };
}

export const silentLogger: Logger = createLogger('silent', 'silent');
