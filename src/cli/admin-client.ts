import { redactCredentials } from '../util/log.js';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { KilnError, errorFromWire, toKilnError } from '../errors/index.js';
import { readDemoState, readDemoToken, type DemoState } from './demo-state.js';
import { formatBytes } from '../util/bytes.js';
import { balancerStatusFrom, type BalancerStatus } from '../console/balancer-watch.js';

export type { BalancerStatus };

/**
 * What the operator commands (status, sessions, top) share: where the admin API is, the
 * token, and one JSON call with a total deadline and a clear error.
 */
export const ADMIN_FLAGS = {
  admin: { type: 'string' },
  'token-file': { type: 'string' },
  'ca-file': { type: 'string' },
  json: { type: 'boolean' },
} as const;

export const ADMIN_HELP = `  --admin <url>            the kiln server's admin API (default KILN_ADMIN_URL or http://127.0.0.1:9511)
  --token-file <file>      admin or read-only bearer token (default KILN_ADMIN_TOKEN; the server
                           writes a generated one to <data dir>/admin.token)
                           With neither --admin/KILN_ADMIN_URL nor a token, a running
                           \`kiln demo\` of this user is used
  --ca-file <file>         PEM CA certificate to trust for an https:// admin API (default KILN_ADMIN_CA)
  --json                   machine-readable output`;

/** status and top also show a balancer: the demo's, or one named here. */
export const BALANCER_FLAGS = {
  balancer: { type: 'string' },
  'balancer-token-file': { type: 'string' },
} as const;

export const BALANCER_HELP = `  --balancer <url>         also show this kiln balancer's nodes (a running demo's balancer is
                           shown without it)
  --balancer-token-file <file>  the balancer's admin token (needed with --balancer; a running
                           demo's balancer takes the demo's admin token)`;

export interface AdminTarget {
  url: string;
  token: string;
  ca?: string;
  /** What answers there, for errors: the admin API (default) or a balancer. */
  kind?: 'admin' | 'balancer';
  /** The running `kiln demo` this target was read from (neither URL nor token given). */
  demo?: DemoState;
}

export function adminTarget(values: { admin?: string; 'token-file'?: string; 'ca-file'?: string }): AdminTarget {
  // An empty variable counts as unset, so `KILN_ADMIN_TOKEN=` left in a shell does not block the fallbacks.
  const env = (name: string): string | undefined => process.env[name] || undefined;
  const explicitUrl = values.admin ?? env('KILN_ADMIN_URL');
  const explicitToken = values['token-file'] ? readOptionFile(values['token-file'], '--token-file', 'the server writes <data dir>/admin.token only when started with --admin-port') : env('KILN_ADMIN_TOKEN');
  // Named neither where nor how: a `kiln demo` of this user that is running answers both.
  const demo = explicitUrl === undefined && explicitToken === undefined ? readDemoState() : undefined;
  const url = (explicitUrl ?? demo?.adminUrl ?? 'http://127.0.0.1:9511').replace(/\/$/, '');
  if (!/^https?:\/\//.test(url)) throw new KilnError('KILN_ERR_INVALID_OPTION', '--admin must be an http:// or https:// URL', { details: { option: '--admin' } });
  // Not KILN_TOKEN: the client token opens no admin port.
  // The demo's token file must be ours and private (a planted state could name another one).
  const token = explicitToken ?? (demo ? readDemoToken(demo) : '');
  // Named neither, and no demo runs: say that first (a newcomer ran it after the demo stopped).
  const noDemo = explicitUrl === undefined && explicitToken === undefined ? 'no running kiln demo of this user was found, and ' : '';
  if (!token) throw new KilnError('KILN_ERR_INVALID_OPTION', `${noDemo}no admin token: pass --token-file F (a kiln server writes one to <data dir>/admin.token) or set KILN_ADMIN_TOKEN`, { details: { option: '--token-file' } });
  const caFile = values['ca-file'] ?? process.env['KILN_ADMIN_CA'];
  return { url, token, ca: caFile ? readOptionFile(caFile, '--ca-file') : undefined, kind: 'admin', demo };
}

/**
 * The balancer to show beside the kiln server, if any is known: --balancer, or the
 * running demo's (whose balancer takes the demo's admin token).
 */
export function balancerTarget(values: { balancer?: string; 'balancer-token-file'?: string }, admin: AdminTarget): AdminTarget | undefined {
  const url = (values.balancer ?? admin.demo?.balancerUrl)?.replace(/\/$/, '');
  if (url === undefined) {
    if (values['balancer-token-file']) throw new KilnError('KILN_ERR_INVALID_OPTION', '--balancer-token-file goes with --balancer <url>', { details: { option: '--balancer-token-file' } });
    return undefined;
  }
  if (!/^https?:\/\//.test(url)) throw new KilnError('KILN_ERR_INVALID_OPTION', '--balancer must be an http:// or https:// URL', { details: { option: '--balancer' } });
  // The kiln server's admin token goes only to the demo's own balancer (which takes it):
  // sent to any --balancer URL it would hand every session to whoever runs that address.
  if (values.balancer !== undefined && !values['balancer-token-file']) throw new KilnError('KILN_ERR_INVALID_OPTION', '--balancer needs --balancer-token-file (the balancer\'s own admin token; kiln balancer names its file in its ready line)', { details: { option: '--balancer-token-file' } });
  const token = values['balancer-token-file'] ? readOptionFile(values['balancer-token-file'], '--balancer-token-file', 'kiln balancer names its generated token file in its ready line') : admin.token;
  return { url, token, ca: admin.ca, kind: 'balancer' };
}

/** A file an option names, or a clear error naming the option (not a stack trace). */
function readOptionFile(path: string, option: string, hint?: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${option} ${path}: ${why}${hint ? ` (${hint})` : ''}`, { cause: err, details: { option } });
  }
}

/** How long one call may take in all (connect, wait, and the whole answer), by default. */
export const CALL_TIMEOUT_MS = 5000;

/** The largest admin answer read (a page of 1,000 sessions is well under 1 MiB). */
export const MAX_ANSWER_CHARS = 16 * 1024 * 1024;

/**
 * One JSON call; node:http(s) rather than fetch, which cannot be given a CA. The deadline
 * is total: an answer that trickles in, byte by byte, is cut there too. A target that
 * cannot be reached, or does not answer in time, is KILN_ERR_ENGINE_UNAVAILABLE with
 * `details.reason` (the network error alone, for one-line displays).
 */
export async function adminCall<T>(target: AdminTarget, method: string, path: string, options: { timeoutMs?: number } = {}): Promise<T> {
  const url = new URL(`${target.url}${path}`);
  const timeoutMs = options.timeoutMs ?? CALL_TIMEOUT_MS;
  let deadline: NodeJS.Timeout | undefined;
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const requestOptions = { method, headers: { authorization: `Bearer ${target.token}` }, ...(target.ca ? { ca: target.ca } : {}) };
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, requestOptions, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        // The target is named on the command line, and need not be ours: its answer is bounded.
        if (text.length > MAX_ANSWER_CHARS) req.destroy(new Error(`an answer above ${MAX_ANSWER_CHARS} characters`));
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    deadline = setTimeout(() => {
      const late = new Error(`no whole answer within ${timeoutMs} ms`);
      reject(late);
      req.destroy(late);
    }, timeoutMs);
    req.on('error', reject);
    req.end();
  })
    .finally(() => clearTimeout(deadline))
    .catch((err: NodeJS.ErrnoException) => {
    const what = target.kind === 'balancer' ? 'balancer' : 'admin API';
    const reason = redactCredentials(err.message);
    throw new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `${what} at ${redactCredentials(target.url)} not reachable: ${reason}${unreachableHint(err, target)}`, { cause: err, details: { reason } });
  });
  let body: unknown = {};
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: errorFromWire names what it can
  }
  if (status < 200 || status >= 300) throw errorFromWire(body);
  return body as T;
}

// A kiln server opens no admin port unless asked, so a refused connection is most often
// a server started without --admin-port: say so, with the two ways out. A demo's server
// has one: it is down (and the demo restarts it), which is what to say then.
function unreachableHint(err: NodeJS.ErrnoException, target: AdminTarget): string {
  if (err.code !== 'ECONNREFUSED' || target.kind === 'balancer') return '';
  if (target.demo) return `\n  the kiln server of your kiln demo (pid ${target.demo.pid}) is down; ${demoRestartNote(target.demo)}`;
  return '\n  is its admin port open? A kiln server serves the admin API only when started with --admin-port <n> (e.g. --admin-port 9511);\n  pass --admin http://host:port (or set KILN_ADMIN_URL) when it listens elsewhere';
}

/** What happens next to a demo's kiln server that is down. */
function demoRestartNote(demo: DemoState): string {
  return demo.restarts === false ? 'the demo runs with --no-restart: it stays down' : 'the demo restarts it a second after it dies (`kiln top` follows it back)';
}

/** What status and top show: the kiln server's overview and the balancer's status, each read on its own. */
export interface ClusterView {
  overview?: Overview;
  balancer?: BalancerStatus;
  /** Why a part is missing (each part is asked with its own deadline). */
  errors: { server?: KilnError; balancer?: KilnError };
}

/** Asks the kiln server and (when known) the balancer at once, each within timeoutMs. Never throws. */
export async function readCluster(admin: AdminTarget, balancer: AdminTarget | undefined, timeoutMs = CALL_TIMEOUT_MS): Promise<ClusterView> {
  const [server, lb] = await Promise.allSettled([adminCall<Overview>(admin, 'GET', '/api/overview', { timeoutMs }), balancer ? adminCall<unknown>(balancer, 'GET', '/_kiln/balancer', { timeoutMs }).then(checkedBalancerStatus) : Promise.resolve(undefined)]);
  const view: ClusterView = { errors: {} };
  if (server.status === 'fulfilled') view.overview = server.value;
  else view.errors.server = toKilnError(server.reason);
  if (lb.status === 'fulfilled') view.balancer = lb.value;
  else view.errors.balancer = toKilnError(lb.reason);
  return view;
}

/** The view as JSON: the overview's own fields (as `kiln status --json` always gave), plus `balancer` and `errors` when there are. */
export function clusterJson(view: ClusterView): Record<string, unknown> {
  const errors = Object.fromEntries(Object.entries(view.errors).map(([part, err]) => [part, { code: err.code, message: err.message }]));
  return { ...(view.overview ?? {}), ...(view.balancer ? { balancer: view.balancer } : {}), ...(Object.keys(errors).length ? { errors } : {}) };
}

/** One line for a part that did not answer: UNREACHABLE (down, or no answer in time) or the error it gave. */
function failedPart(label: string, target: AdminTarget, err: KilnError): string {
  const reachable = err.code !== 'KILN_ERR_ENGINE_UNAVAILABLE';
  const reason = reachable ? `${err.message} [${err.code}]` : String(err.details?.['reason'] ?? err.message);
  const lines = [`${label.padEnd(11)} ${redactCredentials(target.url)}  ${reachable ? 'ERROR' : 'UNREACHABLE'}: ${reason}`];
  if (!reachable && target.kind !== 'balancer' && target.demo) lines.push(`            the kiln server of your kiln demo (pid ${target.demo.pid}) is down; ${demoRestartNote(target.demo)}`);
  return lines.join('\n');
}

/**
 * The balancer's answer checked as the console checks it (balancerStatusFrom): `--balancer`
 * may name anything, and what answers there is not trusted to be a kiln balancer.
 */
function checkedBalancerStatus(body: unknown): BalancerStatus {
  const status = balancerStatusFrom(body);
  if (status === undefined) throw new KilnError('KILN_ERR_PROTOCOL', 'the answer at /_kiln/balancer is not a kiln balancer\'s status');
  return status;
}

/** The balancer's part of the screen: its totals and one row per app server. */
export function renderBalancer(url: string, b: BalancerStatus): string {
  const inRotation = b.nodes.filter((n) => n.healthy && !n.draining).length;
  const rows = [['NODE', 'URL', 'STATE', 'ACTIVE', 'REQUESTS', 'FAILURES', 'LAST ERROR']];
  const figure = (v: unknown): string => (typeof v === 'number' ? String(v) : '-');
  for (const n of b.nodes) rows.push([n.name, n.url, `${n.healthy ? 'up' : 'DOWN'}${n.draining ? ', draining' : ''}`, figure(n.active), figure(n.requests), figure(n.failures), n.lastError ?? '-']);
  return [
    `balancer    ${url}  affinity ${b.affinity}  pid ${figure(b['pid'])}  up ${typeof b['uptimeMs'] === 'number' ? duration(b['uptimeMs']) : '-'}  ${figure(b['requests'])} requests, ${figure(b['retries'])} retries, ${figure(b['failovers'])} failovers, ${figure(b['errors'])} errors`,
    `nodes       ${inRotation} of ${b.nodes.length} in rotation${inRotation === 0 ? '  WARN: no app server takes requests' : ''}`,
    columns(rows),
    '',
  ].join('\n');
}

/** One screen: the kiln server (or why it is missing), then the balancer (or why it is missing) when one is known. */
export function renderCluster(view: ClusterView, admin: AdminTarget, balancer: AdminTarget | undefined, rates?: Parameters<typeof renderStatus>[1]): string {
  const parts = [view.overview ? renderStatus(view.overview, rates) : `${failedPart('kiln server', admin, view.errors.server!)}\n`];
  if (balancer) parts.push(view.balancer ? renderBalancer(balancer.url, view.balancer) : `${failedPart('balancer', balancer, view.errors.balancer!)}\n`);
  return parts.join('\n');
}

export interface Overview {
  server: { role: string; version: string; host: string; pid: number; address: string; epoch: string; uptimeMs: number; tls: boolean };
  storage: { kind: 'kiln-log' | 'memory' | 'redis'; dataDir: string | null; fsync: string | null; bytesOnDisk: number | null; replicas?: number; backlog?: { bytes: number; stalledMs: number; compactingMs?: number; refusing: string | null } };
  sessions: { count: number; bytes: number; tombstones: number | null };
  leases: { held: number; waiting: number };
  counters: Record<string, number>;
  connections: number;
  recent: { leaseWaitMsP50: number };
  clients: { name: string; host: string; pid: number; app: string; address: string; leases: number; requests: number; connectedAt: number; stats: { cache?: { hits: number; misses: number; entries: number } } | null }[];
}

export function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

/** A byte count for people (the CLI's name for formatBytes). */
export const bytes = formatBytes;

export function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

/** A compaction running this long is worth a line on the storage row; this long, a health warning (a snapshot waiting on a hung disk). */
const COMPACTION_NOTE_MS = 5000;
const COMPACTION_WARNING_MS = 5 * 60_000;

/** The log's backlog, when there is one worth a look: bytes not yet written, the oldest write's wait, a long compaction. */
function backlogNote(backlog: { bytes: number; stalledMs: number; compactingMs?: number } | undefined): string {
  if (!backlog) return '';
  const compacting = (backlog.compactingMs ?? 0) >= COMPACTION_NOTE_MS ? `  compacting for ${duration(backlog.compactingMs!)}` : '';
  if (backlog.bytes < 1024 * 1024 && backlog.stalledMs < 1000) return compacting;
  return `  backlog ${bytes(backlog.bytes)}${backlog.stalledMs >= 1000 ? `, a write waiting ${(backlog.stalledMs / 1000).toFixed(1)} s` : ''}${compacting}`;
}

/** One screen: server, storage, sessions, leases, rates, clients, health. */
export function renderStatus(o: Overview, rates?: { commitsPerSecond: number; requestsPerSecond: number; recallsPerSecond: number }): string {
  const warnings: string[] = [];
  if (o.leases.waiting > 0) warnings.push(`${o.leases.waiting} lease waits`);
  if (o.connections === 0) warnings.push('no app server connected');
  if (o.storage.backlog?.refusing) warnings.push(`commits refused: ${o.storage.backlog.refusing}`);
  if ((o.storage.backlog?.compactingMs ?? 0) >= COMPACTION_WARNING_MS) warnings.push(`a compaction has run for ${duration(o.storage.backlog!.compactingMs!)}: its snapshot may be waiting on a hung disk`);
  const lines = [
    o.storage.kind === 'redis'
      ? `redis       ${o.server.address}  ${o.server.role}  console v${o.server.version} pid ${o.server.pid}  up ${duration(o.server.uptimeMs)}  epoch ${o.server.epoch}`
      : `kiln server ${o.server.address}  ${o.server.role}  v${o.server.version}  pid ${o.server.pid}  up ${duration(o.server.uptimeMs)}  epoch ${o.server.epoch}`,
    o.storage.kind === 'redis'
      ? `storage     Redis${o.storage.replicas ? `, ${o.storage.replicas} replica confirmation(s) per commit` : ''}`
      : `storage     ${o.storage.dataDir ?? 'memory only'}${o.storage.fsync ? `  fsync ${o.storage.fsync}` : ''}  log ${bytes(o.storage.bytesOnDisk ?? 0)}${backlogNote(o.storage.backlog)}`,
    `sessions    ${o.sessions.count}  (${bytes(o.sessions.bytes)}${o.sessions.tombstones === null ? '' : `, ${o.sessions.tombstones} tombstones`})   leases ${o.leases.held} held, ${o.leases.waiting} waiting`,
    `totals      ${o.counters['commits'] ?? 0} commits, ${o.counters['created'] ?? 0} created, ${o.counters['expired'] ?? 0} expired, ${o.counters['destroyed'] ?? 0} destroyed, ${o.counters['leaseHandovers'] ?? 0} hand-overs`,
  ];
  if (rates) lines.push(`rates       ${rates.requestsPerSecond.toFixed(0)} req/s, ${rates.commitsPerSecond.toFixed(0)} commits/s, ${rates.recallsPerSecond.toFixed(1)} recalls/s, lease wait p50 ${o.recent.leaseWaitMsP50} ms`);
  lines.push(`health      ${warnings.length ? `WARN: ${warnings.join(', ')}` : 'ok'}`, '');
  const rows = [['CLIENT', 'HOST', 'PID', 'LEASES', 'REQUESTS', 'CACHE HIT', 'CONNECTED']];
  for (const c of o.clients) {
    const cache = c.stats?.cache;
    const ratio = cache && cache.hits + cache.misses > 0 ? `${((100 * cache.hits) / (cache.hits + cache.misses)).toFixed(1)}%` : '-';
    rows.push([c.name, c.host, String(c.pid), String(c.leases), String(c.requests), ratio, duration(Date.now() - c.connectedAt)]);
  }
  lines.push(rows.length > 1 ? columns(rows) : '(no app servers connected)');
  return `${lines.join('\n')}\n`;
}
