import { readFileSync, statSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
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
  warnIfOthersCanRead(path, where);
  return token;
}

/**
 * Says so on stderr when a secret's file may be read by its group or others. A warning,
 * not a refusal (the encryption key file is refused): mounted secrets are often 0644
 * by default, and a server that stopped starting after an upgrade would be worse.
 */
export function warnIfOthersCanRead(path: string, where: string, write: (line: string) => void = (line) => process.stderr.write(line)): void {
  try {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o044) !== 0) write(`kiln: warning: ${where}: ${path} may be read by its group or others (mode ${mode.toString(8).padStart(4, '0')}); chmod 600 ${path}\n`);
  } catch {
    // read a moment ago: a file gone since is not this check's to report
  }
}

/**
 * A TLS certificate and key, each PEM text or a path to it, read and checked up front:
 * a file that cannot be read, a PEM OpenSSL refuses or a key that is not the
 * certificate's is KILN_ERR_INVALID_OPTION naming the option (and the flag that sets
 * it), not OpenSSL's own error as the server starts.
 *
 * @example
 * const { cert, key } = tlsCredentials({ cert: 'server.crt', key: 'server.key' }, 'KilnServer');
 */
export function tlsCredentials(tls: { cert: string; key: string }, scope: string): { cert: string; key: string } {
  const read = (value: string, part: 'cert' | 'key'): string => {
    if (value.includes('-----BEGIN')) return value;
    try {
      return readFileSync(value, 'utf8');
    } catch (err) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `${scope}: option "tls.${part}" (--tls-${part}): cannot read ${value} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err, details: { option: `tls.${part}` } });
    }
  };
  const credentials = { cert: read(tls.cert, 'cert'), key: read(tls.key, 'key') };
  try {
    createSecureContext(credentials);
  } catch (err) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${scope}: option "tls" (--tls-cert, --tls-key): the certificate and key are not usable together (${(err as Error).message})`, { cause: err, details: { option: 'tls' } });
  }
  return credentials;
}
