import { pino } from 'pino';

/**
 * Structured logs through pino: one JSON object per line on stderr (level, time, pid,
 * hostname, name, msg, fields), so pino-pretty and log shippers read them as they are.
 * Kiln code logs `log.warn('message', { fields })`; this wraps pino's (fields, message).
 */
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export function createLogger(name: string, level: LogLevel = 'info', destination: NodeJS.WritableStream | number = 2): Logger {
  const log = pino({ name, level }, typeof destination === 'number' ? pino.destination({ fd: destination, sync: true }) : destination);
  return {
    // A line below the level costs nothing: the redaction runs only for lines written.
    debug: (msg, fields) => log.isLevelEnabled('debug') && log.debug(redactFields(fields), redactCredentials(msg)),
    info: (msg, fields) => log.isLevelEnabled('info') && log.info(redactFields(fields), redactCredentials(msg)),
    warn: (msg, fields) => log.isLevelEnabled('warn') && log.warn(redactFields(fields), redactCredentials(msg)),
    error: (msg, fields) => log.isLevelEnabled('error') && log.error(redactFields(fields), redactCredentials(msg)),
  };
}

/**
 * A log line's fields with credentials removed from strings and error messages one
 * level deep (where a URL or an engine's error lands); deeper values are the caller's care.
 */
function redactFields(fields: Record<string, unknown> | undefined): Record<string, unknown> {
  if (fields === undefined) return {};
  let out: Record<string, unknown> | undefined;
  for (const [key, value] of Object.entries(fields)) {
    let clean = value;
    if (typeof value === 'string') clean = redactCredentials(value);
    else if (value instanceof Error) {
      const message = redactCredentials(value.message);
      if (message !== value.message) clean = { type: value.name, message, ...('code' in value ? { code: value.code } : {}) };
    }
    if (clean !== value) (out ??= { ...fields })[key] = clean;
  }
  return out ?? fields;
}

export const silentLogger: Logger = createLogger('silent', 'silent');

/** Query parameters whose values are secrets wherever they appear in a URL. */
const SECRET_PARAMS = /([?&;](?:password|pass|pwd|passwd|token|secret|auth|sentinelPassword|sentinel_password|access_token|api_key|apikey)=)[^&#\s"'`]*/gi;

/** `scheme://` followed by everything up to the end of the URL-ish run of text. */
const URL_IN_TEXT = /([a-z][a-z0-9+.-]*:\/\/)([^\s"'`<>]*)/gi;

/**
 * A text with every credential a URL in it may carry replaced by `***`: whatever lies
 * between `//` and the last `@` (a password may hold `/`, `?`, `@` or `:` unescaped,
 * and the URL need not parse), and the values of password-like query
 * parameters. A URL with no `@` but a non-numeric "port" (`redis://:secret`, the `@host`
 * forgotten) is hidden whole, since what looks like its host may be a password.
 * Every message, log line and status text that may carry a URL goes through this.
 *
 * @example
 * redactCredentials('redis://:hunter2@10.0.0.1:6379/0')   // 'redis://***@10.0.0.1:6379/0'
 */
export function redactCredentials(text: string): string {
  if (!text.includes('//') && !text.includes('=')) return text;
  return text
    .replace(URL_IN_TEXT, (_all, scheme: string, rest: string) => {
      // The last `@` anywhere: a password may hold `/`, `?` or `@`; hiding a host now
      // and then (an `@` in a query value) is the safe mistake.
      const at = rest.lastIndexOf('@');
      if (at >= 0) return `${scheme}***${rest.slice(at)}`;
      // Closing punctuation after a URL in a sentence is not part of it.
      const authority = rest.split(/[/?#]/, 1)[0]!.replace(/[).,;:]+$/, '');
      const suspicious = authority.split(',').some((h) => {
        const port = h.replace(/^\[[^\]]*\]/, '');
        const colon = port.indexOf(':');
        // A port is digits, or the word of a placeholder (`http://host:port` in a help text).
        return colon >= 0 && !/^(\d*|port)$/i.test(port.slice(colon + 1));
      });
      return suspicious ? `${scheme}***` : `${scheme}${rest}`;
    })
    .replace(SECRET_PARAMS, '$1***');
}
