import { redactCredentials } from '../util/log.js';
import { readFileSync } from 'node:fs';
import { KilnError, errorFromWire } from '../errors/index.js';

/**
 * What the operator commands (status, sessions, top) share: where the admin API is, the
 * token, and one JSON call with a timeout and a clear error.
 */
export const ADMIN_FLAGS = {
  admin: { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean' },
} as const;

export const ADMIN_HELP = `  --admin <url>            the kiln server's admin API (default KILN_ADMIN_URL or http://127.0.0.1:9511)
  --token-file <file>      bearer token (default KILN_ADMIN_TOKEN, then KILN_TOKEN)
  --json                   machine-readable output`;

export interface AdminTarget {
  url: string;
  token: string;
}

export function adminTarget(values: { admin?: string; 'token-file'?: string }): AdminTarget {
  const url = (values.admin ?? process.env['KILN_ADMIN_URL'] ?? 'http://127.0.0.1:9511').replace(/\/$/, '');
  const token = values['token-file'] ? readFileSync(values['token-file'], 'utf8').trim() : (process.env['KILN_ADMIN_TOKEN'] ?? process.env['KILN_TOKEN'] ?? '');
  if (!token) throw new KilnError('KILN_ERR_INVALID_OPTION', 'no admin token: pass --token-file F or set KILN_ADMIN_TOKEN');
  return { url, token };
}

export async function adminCall<T>(target: AdminTarget, method: string, path: string): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${target.url}${path}`, { method, headers: { authorization: `Bearer ${target.token}` }, signal: AbortSignal.timeout(5000) });
  } catch (err) {
    throw new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `admin API at ${redactCredentials(target.url)} not reachable: ${redactCredentials((err as Error).message)}`, { cause: err });
  }
  const body = (await res.json().catch(() => ({}))) as unknown;
  if (!res.ok) throw errorFromWire(body);
  return body as T;
}

export interface Overview {
  server: { role: string; version: string; host: string; pid: number; address: string; epoch: string; uptimeMs: number; tls: boolean };
  storage: { kind: 'kiln-log' | 'memory' | 'redis'; dataDir: string | null; fsync: string | null; bytesOnDisk: number | null; replicas?: number };
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

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function columns(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

/** One screen: server, storage, sessions, leases, rates, clients, health. */
export function renderStatus(o: Overview, rates?: { commitsPerSecond: number; requestsPerSecond: number; recallsPerSecond: number }): string {
  const warnings: string[] = [];
  if (o.leases.waiting > 0) warnings.push(`${o.leases.waiting} lease waits`);
  if (o.connections === 0) warnings.push('no app server connected');
  const lines = [
    o.storage.kind === 'redis'
      ? `redis       ${o.server.address}  ${o.server.role}  console v${o.server.version} pid ${o.server.pid}  up ${duration(o.server.uptimeMs)}  epoch ${o.server.epoch}`
      : `kiln server ${o.server.address}  ${o.server.role}  v${o.server.version}  pid ${o.server.pid}  up ${duration(o.server.uptimeMs)}  epoch ${o.server.epoch}`,
    o.storage.kind === 'redis'
      ? `storage     Redis${o.storage.replicas ? `, ${o.storage.replicas} replica confirmation(s) per commit` : ''}`
      : `storage     ${o.storage.dataDir ?? 'memory only'}${o.storage.fsync ? `  fsync ${o.storage.fsync}` : ''}  log ${bytes(o.storage.bytesOnDisk ?? 0)}`,
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
