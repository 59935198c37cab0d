import { parseArgs } from 'node:util';
import { KilnError } from '../../errors/index.js';
import type { SessionMeta } from '../../session/model.js';
import { ADMIN_FLAGS, ADMIN_HELP, adminCall, adminTarget, bytes, columns, duration } from '../admin-client.js';
import { dashSafeArgs, intFlag } from '../args.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln sessions ls [--principal P | --prefix X] [--namespace NS] [--limit N] [--after NEXT]
       kiln sessions show <id | handle> [--namespace NS]
       kiln sessions rm <id> [--namespace NS] | rm --principal P [--namespace NS]

Lists, inspects and invalidates sessions through the kiln server's admin API. With the
read-only token, ids come shortened (abcdefgh…) with a handle (~…) to show one by, and
no values; values whose names match the server's redaction list are hidden from all.
A kiln server with token namespaces (--tokens-file) may hold the same id in several:
ls shows each session's namespace, and show/rm of such an id need --namespace.

Options:
${ADMIN_HELP}
  --principal <p>          the sessions of one user (on a kiln server: newest login first)
  --prefix <x>             ids starting with x (at most 8 characters with the read-only token)
  --namespace <ns>         one token namespace of a kiln server (ls: only its sessions;
                           show, rm: the session of that id in it; rm --principal: only in it)
  --limit <n>              page size (default 50, at most 1000)
  --after <next>           the next page: what the last page printed after --after
  -h, --help

Ids, principals and cursors may begin with a dash; a value that is itself one of these
options takes the = form (--principal=--json).
`;

interface Page {
  sessions: (SessionMeta & { ref: string; namespace?: string })[];
  next: string | null;
  total: number;
}

export const sessionsCommand: Command = {
  name: 'sessions',
  summary: 'list, show and invalidate sessions (ls | show | rm)',
  outputOnly: true,
  help: HELP,
  async run(argv) {
    const options = { ...ADMIN_FLAGS, principal: { type: 'string' }, prefix: { type: 'string' }, namespace: { type: 'string' }, limit: { type: 'string' }, after: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;
    // Ids, handles, cursors, principals and prefixes may begin with '-'.
    const { values, positionals } = parseArgs({ args: dashSafeArgs(argv, options, ['show', 'rm']), options, strict: true, allowPositionals: true });
    const [verb, id] = positionals;
    if (values.help || !verb) {
      process.stdout.write(HELP);
      return values.help ? 0 : 2;
    }
    const target = adminTarget(values);
    const out = (human: string, json: unknown): void => void process.stdout.write(values.json ? `${JSON.stringify(json)}\n` : human);
    // The session of an id in one namespace; the server refuses an id several hold without one.
    const inNamespace = values.namespace === undefined ? '' : `?namespace=${encodeURIComponent(values.namespace)}`;
    switch (verb) {
      case 'ls': {
        const q = new URLSearchParams();
        if (values.principal) q.set('principal', values.principal);
        if (values.prefix) q.set('prefix', values.prefix);
        if (values.after) q.set('after', values.after);
        if (values.namespace !== undefined) q.set('namespace', values.namespace);
        q.set('limit', String(intFlag(values.limit, 'limit', 1, 1000) ?? 50));
        const page = await adminCall<Page>(target, 'GET', `/api/sessions?${q}`);
        // The read-only role gets shortened ids and a handle to show each by.
        const handles = page.sessions.some((s) => s.ref !== s.id);
        // Namespaces are worth a column once one other than the default holds a session.
        const namespaces = page.sessions.some((s) => s.namespace !== undefined && s.namespace !== 'default');
        const rows = [['ID', ...(namespaces ? ['NAMESPACE'] : []), 'PRINCIPAL', 'VERSION', 'IDLE FOR', 'AGE', ...(handles ? ['HANDLE'] : [])], ...page.sessions.map((s) => [s.id, ...(namespaces ? [s.namespace ?? '-'] : []), s.principal ?? '-', String(s.version), duration(Date.now() - s.lastAccessedAt), duration(Date.now() - s.createdAt), ...(handles ? [s.ref] : [])])];
        out(`${columns(rows)}\n${page.sessions.length} of ${page.total} sessions${page.next ? `; next page: --after ${page.next}` : ''}\n`, page);
        return 0;
      }
      case 'show': {
        if (!id) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'kiln sessions show <id>');
        const s = await adminCall<{ meta: SessionMeta & { namespace?: string }; attributes: { name: string; type: string; bytes: number; preview?: string }[]; bytes: number }>(target, 'GET', `/api/sessions/${encodeURIComponent(id)}${inNamespace}`);
        const m = s.meta;
        const rows = [['ATTRIBUTE', 'TYPE', 'SIZE', 'VALUE'], ...s.attributes.map((a) => [a.name, a.type, bytes(a.bytes), a.preview ?? '(hidden from the read-only token)'])];
        out(`session    ${m.id}\n${m.namespace !== undefined ? `namespace  ${m.namespace}\n` : ''}principal  ${m.principal ?? '-'}\nversion    ${m.version}\ncreated    ${new Date(m.createdAt).toISOString()}\naccessed   ${new Date(m.lastAccessedAt).toISOString()}\nidle limit ${m.idleTimeoutMs ? duration(m.idleTimeoutMs) : 'none'}   absolute ${m.absoluteExpiresAt ? new Date(m.absoluteExpiresAt).toISOString() : 'none'}\nsize       ${bytes(s.bytes)}\n\n${columns(rows)}\n`, s);
        return 0;
      }
      case 'rm': {
        // Both named: which one was meant? Logging out every session of a user by mistake is not undone.
        if (values.principal && id) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'kiln sessions rm takes a session id or --principal P, not both');
        if (values.principal) {
          const r = await adminCall<{ destroyed: number }>(target, 'DELETE', `/api/principals/${encodeURIComponent(values.principal)}/sessions${inNamespace}`);
          out(`invalidated ${r.destroyed} sessions of ${values.principal}\n`, r);
          return 0;
        }
        if (!id) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'kiln sessions rm <id> | rm --principal P');
        const r = await adminCall<{ destroyed: boolean }>(target, 'DELETE', `/api/sessions/${encodeURIComponent(id)}${inNamespace}`);
        out(r.destroyed ? `invalidated ${id}\n` : `no session ${id}\n`, r);
        return r.destroyed ? 0 : 1;
      }
      default:
        throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `unknown sessions command "${verb}" (ls, show, rm)`);
    }
  },
};
