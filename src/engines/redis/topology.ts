import { KilnError } from '../../errors/index.js';
import { redactCredentials } from '../../util/log.js';

/**
 * Which Redis deployment to talk to, from a URL or spelled out. Pure: parsing and
 * validation only, so every form is unit-tested without a server.
 *
 *   redis://[user:password@]host:6379[/db]            one server (or a managed endpoint)
 *   rediss://…                                         the same over TLS
 *   redis+sentinel://[user:password@]h1:26379,h2:26379/mymaster   Sentinel (active/passive)
 *   redis+cluster://[user:password@]h1:7000,h2:7001   Redis Cluster (striped over shards)
 *
 * `rediss+sentinel://` and `rediss+cluster://` use TLS to the data nodes. Query
 * parameters: `replicas` (acknowledge a commit only once N replicas have it),
 * `prefix` (key prefix, default `kiln:`), `ca`, `cert`, `key`, `servername` (TLS to
 * the data nodes: file paths), `sentinelTls=1` and `sentinelCa`, `sentinelCert`,
 * `sentinelKey`, `sentinelServername` (TLS to the sentinels, which is separate).
 */
export type RedisTopology =
  | ({ kind: 'standalone'; host: string; port: number; db?: number } & RedisAuth)
  | ({ kind: 'sentinel'; sentinels: RedisNodeAddress[]; masterName: string; sentinelPassword?: string } & RedisAuth)
  | ({ kind: 'cluster'; nodes: RedisNodeAddress[] } & RedisAuth);

export interface RedisNodeAddress {
  host: string;
  port: number;
}

export interface RedisAuth {
  username?: string;
  password?: string;
  tls?: boolean;
}

export interface ParsedRedisUrl {
  topology: RedisTopology;
  replicas?: number;
  replicaPolicy?: 'best-effort' | 'strict';
  replicaGraceMs?: number;
  keyPrefix?: string;
  /** From `ca`, `cert`, `key`, `servername` (file paths and a name): checked by the engine like its `tls` option. */
  tls?: Record<string, string>;
  /** From `sentinelTls=1` and `sentinelCa`, `sentinelCert`, `sentinelKey`, `sentinelServername`. */
  sentinelTls?: true | Record<string, string>;
}

const SCHEMES: Record<string, { kind: RedisTopology['kind']; tls: boolean; port: number }> = {
  'redis:': { kind: 'standalone', tls: false, port: 6379 },
  'rediss:': { kind: 'standalone', tls: true, port: 6379 },
  'redis+sentinel:': { kind: 'sentinel', tls: false, port: 26379 },
  'rediss+sentinel:': { kind: 'sentinel', tls: true, port: 26379 },
  'redis+cluster:': { kind: 'cluster', tls: false, port: 6379 },
  'rediss+cluster:': { kind: 'cluster', tls: true, port: 6379 },
};

export function isRedisUrl(url: string): boolean {
  const scheme = /^([a-z+]+:)\/\//i.exec(url)?.[1]?.toLowerCase();
  return scheme !== undefined && scheme in SCHEMES;
}

export function parseRedisUrl(url: string): ParsedRedisUrl {
  // The credentials run to the last `@` (as redactCredentials sees them): passwords hold
  // `/`, `?` or `@` unescaped often enough, and cutting at the first one would leave the
  // rest of the password as the host, echoed by the error below.
  const m = /^([a-z+]+:)\/\/(?:([^]*)@)?([^/?#@]*)(\/[^?#]*)?(\?[^#]*)?$/i.exec(url);
  const scheme = m?.[1]?.toLowerCase();
  const spec = scheme ? SCHEMES[scheme] : undefined;
  if (!m || !spec) throw invalid(url, 'expected redis://, rediss://, redis+sentinel:// or redis+cluster://');
  const auth: RedisAuth = { tls: spec.tls };
  if (m[2]) {
    const at = m[2].indexOf(':');
    const user = decodeURIComponent(at >= 0 ? m[2].slice(0, at) : m[2]);
    const password = at >= 0 ? decodeURIComponent(m[2].slice(at + 1)) : undefined;
    // redis://:password@host (no user) is the usual form for requirepass.
    if (at >= 0) {
      if (user) auth.username = user;
      if (password) auth.password = password;
    } else if (user) {
      auth.password = user;
    }
  }
  const hosts = (m[3] ?? '').split(',').filter((h) => h.length > 0).map((h, i) => hostPort(url, h, i, spec.port));
  if (hosts.length === 0) throw invalid(url, 'no host');
  const path = (m[4] ?? '').replace(/^\//, '');
  const query = new URLSearchParams((m[5] ?? '').slice(1));
  const parsed: ParsedRedisUrl = { topology: undefined as unknown as RedisTopology };
  const replicas = query.get('replicas');
  if (replicas !== null) {
    const n = Number(replicas);
    if (!Number.isInteger(n) || n < 0 || n > 16) throw invalid(url, 'replicas must be an integer from 0 to 16');
    parsed.replicas = n;
  }
  const policy = query.get('replicaPolicy');
  if (policy !== null) {
    if (policy !== 'best-effort' && policy !== 'strict') throw invalid(url, 'replicaPolicy must be best-effort or strict');
    parsed.replicaPolicy = policy;
  }
  const grace = query.get('replicaGraceMs');
  if (grace !== null) {
    const ms = Number(grace);
    if (!Number.isInteger(ms) || ms < 0 || ms > 3_600_000) throw invalid(url, 'replicaGraceMs must be an integer number of milliseconds from 0 to 3600000');
    parsed.replicaGraceMs = ms;
  }
  const prefix = query.get('prefix');
  if (prefix !== null) parsed.keyPrefix = prefix;
  const tls = tlsParams(query, '');
  if (tls) parsed.tls = tls;
  const sentinelTls = tlsParams(query, 'sentinel');
  if (sentinelTls || query.get('sentinelTls') === '1' || query.get('sentinelTls') === 'true') parsed.sentinelTls = sentinelTls ?? true;
  switch (spec.kind) {
    case 'standalone': {
      if (hosts.length > 1) throw invalid(url, 'one host for redis://; use redis+sentinel:// or redis+cluster:// for several');
      const topology: RedisTopology = { kind: 'standalone', ...hosts[0]!, ...auth };
      if (path) {
        const db = Number(path);
        if (!Number.isInteger(db) || db < 0) throw invalid(url, 'the path must be a database number');
        topology.db = db;
      }
      parsed.topology = topology;
      break;
    }
    case 'sentinel':
      if (!path) throw invalid(url, 'name the master group after the hosts: redis+sentinel://host:26379/mymaster');
      parsed.topology = { kind: 'sentinel', sentinels: hosts, masterName: decodeURIComponent(path), ...auth };
      break;
    case 'cluster':
      if (path) throw invalid(url, 'redis+cluster:// takes no path');
      parsed.topology = { kind: 'cluster', nodes: hosts, ...auth };
      break;
  }
  return parsed;
}

function tlsParams(query: URLSearchParams, prefix: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const name of ['ca', 'cert', 'key', 'servername']) {
    const value = query.get(prefix ? prefix + name[0]!.toUpperCase() + name.slice(1) : name);
    if (value !== null) out[name] = value;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

// The host text is not echoed: in a malformed URL it may be part of a password.
function hostPort(url: string, text: string, index: number, defaultPort: number): RedisNodeAddress {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(text);
  if (!m) throw invalid(url, `host ${index + 1} is not host[:port]`);
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (port < 1 || port > 65535) throw invalid(url, `host ${index + 1}: port ${port} is out of range`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** The address to show in logs and the console: no password. */
export function describeTopology(t: RedisTopology): string {
  const scheme = (base: string) => (t.tls ? base.replace('redis', 'rediss') : base);
  switch (t.kind) {
    case 'standalone':
      return `${scheme('redis')}://${t.host}:${t.port}${t.db ? `/${t.db}` : ''}`;
    case 'sentinel':
      return `${scheme('redis+sentinel')}://${t.sentinels.map((n) => `${n.host}:${n.port}`).join(',')}/${t.masterName}`;
    case 'cluster':
      return `${scheme('redis+cluster')}://${t.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
  }
}

function invalid(url: string, why: string): KilnError {
  return new KilnError('KILN_ERR_INVALID_OPTION', `engine URL ${redactCredentials(url)}: ${why}`, { details: { option: 'engine' } });
}
