import { readFileSync } from 'node:fs';
import { KilnError } from '../errors/index.js';
import { checkTokenStrength, readTokenFile, warnIfOthersCanRead } from '../util/secret-file.js';
import type { SessionEvent, SessionMeta, SessionSnapshot } from '../session/model.js';

/**
 * Namespaces of the kiln server: which token reaches which sessions. A token is bound
 * to one namespace (an app or a tenant); its clients see only that namespace's
 * sessions, principals and events. The tier knows nothing of them: the connection maps
 * a client's (namespace, id) to a tier key on the way in and back on the way out.
 *
 * Keys. The default namespace (the single `--token-file`/KILN_TOKEN) keeps ids and
 * principals as they are, so data directories written before namespaces load into it.
 * Another namespace's session key is `~<namespace>~<id>`: `~` is outside the id
 * alphabet, so no default id looks like one, and it sorts after every id character,
 * so a default listing ends where the namespaced keys begin. A principal becomes
 * `\0<namespace>\0<principal>`; clients may not send a principal holding `\0`, so no
 * principal of one namespace can land in another's index.
 */
export const DEFAULT_NAMESPACE = 'default';
export const NAMESPACE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** What a principal key may add to a principal (`\0` + 64 characters + `\0`). */
export const PRINCIPAL_KEY_EXTRA = 66;

export class Namespace {
  readonly isDefault: boolean;
  private readonly idPrefix: string;
  private readonly principalPrefix: string;

  constructor(readonly name: string) {
    this.isDefault = name === DEFAULT_NAMESPACE;
    this.idPrefix = this.isDefault ? '' : `~${name}~`;
    this.principalPrefix = this.isDefault ? '' : `\u0000${name}\u0000`;
  }

  /** The tier's key for one of this namespace's session ids (or an id prefix). */
  key(id: string): string {
    return this.idPrefix + id;
  }

  owns(key: string): boolean {
    return this.isDefault ? !key.startsWith('~') : key.startsWith(this.idPrefix);
  }

  /** The client's id of a key this namespace owns. */
  idOf(key: string): string {
    return this.isDefault ? key : key.slice(this.idPrefix.length);
  }

  principalKey(principal: string): string {
    return this.principalPrefix + principal;
  }

  principalOf(key: string | null): string | null {
    return key === null || this.isDefault ? key : key.slice(this.principalPrefix.length);
  }

  meta(m: SessionMeta): SessionMeta {
    return this.isDefault ? m : { ...m, id: this.idOf(m.id), principal: this.principalOf(m.principal) };
  }

  snapshot(s: SessionSnapshot | null): SessionSnapshot | null {
    return s === null || this.isDefault ? s : { meta: this.meta(s.meta), attributes: s.attributes };
  }

  event(e: SessionEvent): SessionEvent {
    return this.isDefault ? e : { ...e, sessionId: this.idOf(e.sessionId), principal: this.principalOf(e.principal) };
  }
}

/** The namespace of any tier key. */
export function namespaceOfKey(key: string): string {
  if (!key.startsWith('~')) return DEFAULT_NAMESPACE;
  const end = key.indexOf('~', 1);
  return end < 0 ? DEFAULT_NAMESPACE : key.slice(1, end);
}

export function checkNamespaceName(name: string, where: string): void {
  if (!NAMESPACE_PATTERN.test(name)) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${where}: namespace ${JSON.stringify(name.slice(0, 80))} must be 1 to 64 characters of A-Z a-z 0-9 _ -`, { details: { option: where } });
  }
}

/**
 * Reads a tokens file: one namespace a line, `<namespace> <token>` (the token may
 * instead be `@<path>`, a file holding it alone); blank lines and lines starting with
 * `#` are skipped. Every problem names the file and line.
 */
export function readTokensFile(path: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `--tokens-file ${path}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { details: { option: 'tokens-file' } });
  }
  warnIfOthersCanRead(path, '--tokens-file');
  const tokens: Record<string, string> = {};
  const seen = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `--tokens-file ${path} line ${i + 1}`;
    const parts = line.split(/\s+/);
    if (parts.length !== 2) throw new KilnError('KILN_ERR_INVALID_OPTION', `${where}: expected "<namespace> <token>" (or "<namespace> @<token file>")`, { details: { option: 'tokens-file' } });
    const [name, value] = parts as [string, string];
    checkNamespaceName(name, where);
    if (Object.hasOwn(tokens, name)) throw new KilnError('KILN_ERR_INVALID_OPTION', `${where}: namespace "${name}" is listed twice`, { details: { option: 'tokens-file' } });
    const token = value.startsWith('@') ? readTokenFile(value.slice(1), where) : value;
    checkTokenStrength(token, value.startsWith('@') ? `${where} (${value.slice(1)})` : where);
    if (seen.has(token)) throw new KilnError('KILN_ERR_INVALID_OPTION', `${where}: this token is already another namespace's; each namespace needs its own`, { details: { option: 'tokens-file' } });
    seen.add(token);
    tokens[name] = token;
  });
  if (Object.keys(tokens).length === 0) throw new KilnError('KILN_ERR_INVALID_OPTION', `--tokens-file ${path}: no namespace listed`, { details: { option: 'tokens-file' } });
  return tokens;
}

