import { readFileSync } from 'node:fs';
import { KilnError } from '../errors/index.js';

/**
 * Bearer secrets on disk: the kiln server's client tokens, the admin port's tokens and
 * the balancer's control token are all read and checked here, so every credential has
 * the same floor and the same error.
 */

/** Shorter secrets can be guessed or were typed by hand; a generated one is 32 bytes or more. */
export const MIN_TOKEN_BYTES = 32;

/** Refuses anything but a string of at least MIN_TOKEN_BYTES bytes; `where` names it in the error. */
export function checkTokenStrength(token: unknown, where: string): asserts token is string {
  if (typeof token !== 'string' || Buffer.byteLength(token, 'utf8') < MIN_TOKEN_BYTES) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${where}: a token must be at least ${MIN_TOKEN_BYTES} bytes; generate one with: openssl rand -base64 32`, { details: { option: where } });
  }
}

/** The token in `path` (trimmed), refused when unreadable or shorter than MIN_TOKEN_BYTES. */
export function readTokenFile(path: string, where = `--token-file ${path}`): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${where}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err, details: { option: where } });
  }
  checkTokenStrength(token, where);
  return token;
}
