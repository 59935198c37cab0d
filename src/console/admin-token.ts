import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MIN_TOKEN_BYTES } from '../util/secret-file.js';

/**
 * The admin port's credentials on disk. An admin token is never the client token: when
 * the operator names no token file, the admin port makes its own, writes it to a file
 * only its user can read and says where (never the token itself, which would then sit
 * in every log collector).
 */

export const ADMIN_TOKEN_FILE = 'admin.token';

/**
 * The token in `<dir>/admin.token`, made (0600) if missing; without `dir`, in a new
 * private directory under the OS temp dir, removed when the process exits (a token of a
 * process that is gone opens nothing, and a directory per run would pile up). A file
 * left by an earlier run in `dir` is kept, so scripts holding its path keep working
 * across restarts, unless others could read it or it is too short: then it is replaced.
 */
export function generatedAdminToken(dir: string | undefined): { token: string; file: string } {
  const own = dir === undefined ? mkdtempSync(join(tmpdir(), 'kiln-admin-')) : undefined;
  if (own !== undefined) process.once('exit', () => rmSync(own, { recursive: true, force: true }));
  const file = join(dir ?? own!, ADMIN_TOKEN_FILE);
  try {
    const st = statSync(file);
    const token = readFileSync(file, 'utf8').trim();
    if ((st.mode & 0o077) === 0 && Buffer.byteLength(token) >= MIN_TOKEN_BYTES) return { token, file };
  } catch {
    // none yet: made below
  }
  // A new file, never a rewrite: writing into a readable one would show the new token to others until a chmod.
  rmSync(file, { force: true });
  const token = randomBytes(32).toString('base64url');
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, file };
}
