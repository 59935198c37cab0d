import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KilnError } from '../errors/index.js';

/**
 * The admin port's credentials on disk. An admin token is never the client token: when
 * the operator names no token file, the admin port makes its own, writes it to a file
 * only its user can read and says where (never the token itself, which would then sit
 * in every log collector).
 */

/** Shorter tokens are refused: a guessable admin token opens every session. */
export const MIN_ADMIN_TOKEN_BYTES = 32;

export const ADMIN_TOKEN_FILE = 'admin.token';

/** Reads a token file (trimmed), refusing one shorter than MIN_ADMIN_TOKEN_BYTES; `flag` names it in errors. */
export function readAdminTokenFile(path: string, flag: string): string {
  let token: string;
  try {
    token = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${flag}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err, details: { option: flag } });
  }
  assertAdminToken(token, flag);
  return token;
}

export function assertAdminToken(token: unknown, name: string): asserts token is string {
  if (typeof token !== 'string' || Buffer.byteLength(token) < MIN_ADMIN_TOKEN_BYTES) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${name}: an admin token must be at least ${MIN_ADMIN_TOKEN_BYTES} bytes (make one with: openssl rand -base64 32)`, { details: { option: name } });
  }
}

/**
 * The token in `<dir>/admin.token`, made (0600) if missing; without `dir`, in a new
 * private directory under the OS temp dir. A file left by an earlier run is kept, so
 * scripts holding its path keep working across restarts, unless others could read it or
 * it is too short: then it is replaced.
 */
export function generatedAdminToken(dir: string | undefined): { token: string; file: string } {
  const file = join(dir ?? mkdtempSync(join(tmpdir(), 'kiln-admin-')), ADMIN_TOKEN_FILE);
  try {
    const st = statSync(file);
    const token = readFileSync(file, 'utf8').trim();
    if ((st.mode & 0o077) === 0 && Buffer.byteLength(token) >= MIN_ADMIN_TOKEN_BYTES) return { token, file };
  } catch {
    // none yet: made below
  }
  // A new file, never a rewrite: writing into a readable one would show the new token to others until a chmod.
  rmSync(file, { force: true });
  const token = randomBytes(32).toString('base64url');
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, file };
}
