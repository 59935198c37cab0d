/**
 * The Redis engine's options: what each means, and reading them into settings, checked
 * up front (OptionReader), so that a typo fails at start-up instead of as odd behaviour
 * under load. The rule it keeps: settings that would be silently ignored are refused
 * (TLS options without a TLS URL): the operator meant them. Those that shape the lease
 * rules and limits must be the same in every process sharing the data.
 */
import { hostname } from 'node:os';
import type { ConnectionOptions } from 'node:tls';
import { KilnError } from '../../errors/index.js';
import { sessionLimitsOption, type SessionLimits } from '../../session/limits.js';
import { DEFAULT_LEASE_OPTIONS } from '../../tier/lease-table.js';
import { OptionReader } from '../../util/options.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS, DEFAULT_OPERATION_TIMEOUT_MS } from '../engine.js';
import { readTlsOption, type RedisTlsOptions } from './tls.js';
import { parseRedisUrl, type RedisTopology } from './topology.js';

/**
 * Kiln on Redis or Valkey: standalone, Sentinel (active/passive) or Cluster (striped).
 * There is no Kiln process in between: the lease rules run as Lua scripts on the shard
 * that owns each session (scripts.ts), recalls and hand-overs travel over pub/sub to
 * the owner's channel, and this engine keeps its own expiry index and sweeps it, so
 * nothing depends on keyspace notifications or CONFIG.
 *
 * Every process (engine) is one lease owner. Its leases carry a time limit in Redis
 * (`leaseTimeMs`) that it renews while it lives; a recall shortens the limit to the
 * recall deadline, so a dead or stuck holder's lease lapses within `recallTimeoutMs`
 * of being wanted, and within `leaseTimeMs` otherwise. The settings below that shape
 * the lease rules and limits must be the same in every process sharing the data.
 *
 * @example
 * const engine = connectRedis('redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/kiln?replicas=1');
 * const kiln = createSessionClient({ engine });
 */
export interface RedisEngineOptions {
  /** Where Redis is; or spell it out with `topology`. */
  url?: string;
  topology?: RedisTopology;
  /** Acknowledge a commit only once this many replicas have it (WAIT). Default 0. */
  replicas?: number;
  /** How long a commit waits for its replicas. Default 1000 ms. */
  replicaTimeoutMs?: number;
  /**
   * What a commit does when fewer than `replicas` replicas confirm it (a replica is down,
   * or the failover that made this master left it without one). Either way it is first
   * refused (KILN_ERR_ENGINE_UNAVAILABLE, 503; the client retries within the request's
   * bound, same commit id), because a replica that stops confirming may be one being
   * promoted (see replica-guard.ts). Then:
   * - 'strict' (default): refused until the replicas are back: no acknowledged write is
   *   ever on one node only.
   * - 'best-effort': once the master has shown fewer replicas for `replicaGraceMs`, a
   *   commit waits for those it has and is acknowledged with fewer, counted as
   *   `underReplicatedCommits` and shown by the console: writes carry on, as
   *   Terracotta's active server does when its mirror dies.
   */
  replicaPolicy?: 'best-effort' | 'strict';
  /**
   * Best effort: how long the master must show fewer replicas before commits go on
   * without them. Longer than a failover takes (Sentinel's down-after-milliseconds plus
   * the election; Cluster's node timeout), so a replica being promoted is never taken
   * for a dead one. Default 60,000 ms.
   */
  replicaGraceMs?: number;
  /** Prefix of every key and channel. Default `kiln:`. */
  keyPrefix?: string;
  /** Shown in the owner id (console, logs). */
  name?: string;
  /** The application's name, shown by the console (default: the main script's file name). */
  app?: string;
  connectTimeoutMs?: number;
  operationTimeoutMs?: number;
  acquireTimeoutMs?: number;
  /** Time limit of a lease in Redis, renewed at a third of it while held. Default 15 s. */
  leaseTimeMs?: number;
  /** How long a recalled holder has to hand the session over. Default 3 s. */
  recallTimeoutMs?: number;
  /** Slack given to a lease holder's batched touches before expiry. Default 2 s. */
  touchGraceMs?: number;
  /** How often this process looks for expired sessions (processes take turns). Default 1 s. */
  expirySweepMs?: number;
  pingPongThreshold?: number;
  pingPongHalfLifeMs?: number;
  /** Longest a tombstone is kept, whatever the session's expiry (it lasts until then, at most this). Default 24 h. */
  maxTombstoneMs?: number;
  /** Redis's own TTL on a session's keys runs this long past its deadline: memory is reclaimed even if no process sweeps. Default 10 min. */
  keySlackMs?: number;
  limits?: Partial<SessionLimits>;
  /** How often failover, renewals and the connection are checked. Default 1 s. */
  heartbeatMs?: number;
  /** TLS to the data nodes (with `rediss…://` or `topology.tls`): a private CA, a client certificate. */
  tls?: RedisTlsOptions;
  /** TLS to the sentinels, which is separate: `true` (system CAs) or the same settings as `tls`. Default plaintext. */
  sentinelTls?: boolean | RedisTlsOptions;
}


const REDIS_ENGINE_OPTIONS = ['url', 'topology', 'replicas', 'replicaTimeoutMs', 'replicaPolicy', 'replicaGraceMs', 'keyPrefix', 'name', 'app', 'connectTimeoutMs', 'operationTimeoutMs', 'acquireTimeoutMs', 'leaseTimeMs', 'recallTimeoutMs', 'touchGraceMs', 'expirySweepMs', 'pingPongThreshold', 'pingPongHalfLifeMs', 'maxTombstoneMs', 'keySlackMs', 'limits', 'heartbeatMs', 'tls', 'sentinelTls'] as const;

/** The options read, defaults applied: every setting the engine and its parts use. */
export interface RedisEngineSettings {
  topology: RedisTopology;
  replicas: number;
  replicaTimeoutMs: number;
  replicaPolicy: 'best-effort' | 'strict';
  replicaGraceMs: number;
  keyPrefix: string;
  connectTimeoutMs: number;
  operationTimeoutMs: number;
  acquireTimeoutMs: number;
  leaseTimeMs: number;
  recallTimeoutMs: number;
  touchGraceMs: number;
  expirySweepMs: number;
  pingPongThreshold: number;
  pingPongHalfLifeMs: number;
  maxTombstoneMs: number;
  keySlackMs: number;
  heartbeatMs: number;
  name: string;
  app: string;
  limits: SessionLimits;
  tls: ConnectionOptions | undefined;
  sentinelTls: ConnectionOptions | undefined;
}

export function readRedisEngineOptions(options: RedisEngineOptions): RedisEngineSettings {
  const o = new OptionReader('RedisEngine', options, REDIS_ENGINE_OPTIONS);
  const url = o.string('url', undefined);
  const parsed = url !== undefined ? parseRedisUrl(url) : undefined;
  if (!parsed && !options.topology) throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: give "url" or "topology"', { details: { option: 'url' } });
  const topology = options.topology ?? parsed!.topology;
  // Read in this order, so that of several bad options the same one is named as before.
  const s = {
    topology,
    replicas: o.int('replicas', parsed?.replicas ?? 0, 0, 16),
    replicaTimeoutMs: o.int('replicaTimeoutMs', 1000, 1),
    replicaPolicy: o.oneOf('replicaPolicy', ['best-effort', 'strict'], parsed?.replicaPolicy ?? 'strict'),
    replicaGraceMs: o.int('replicaGraceMs', parsed?.replicaGraceMs ?? 60_000, 0),
    keyPrefix: o.string('keyPrefix', parsed?.keyPrefix ?? 'kiln:'),
    connectTimeoutMs: o.int('connectTimeoutMs', 5000, 1),
    operationTimeoutMs: o.int('operationTimeoutMs', DEFAULT_OPERATION_TIMEOUT_MS, 1),
    acquireTimeoutMs: o.int('acquireTimeoutMs', DEFAULT_ACQUIRE_TIMEOUT_MS, 1),
    leaseTimeMs: o.int('leaseTimeMs', 15_000, 1000),
    recallTimeoutMs: o.int('recallTimeoutMs', 3000, 10),
    touchGraceMs: o.int('touchGraceMs', 2000, 0),
    expirySweepMs: o.int('expirySweepMs', 1000, 10),
    pingPongThreshold: o.int('pingPongThreshold', DEFAULT_LEASE_OPTIONS.pingPongThreshold, 1),
    pingPongHalfLifeMs: o.int('pingPongHalfLifeMs', DEFAULT_LEASE_OPTIONS.pingPongHalfLifeMs, 1),
    maxTombstoneMs: o.int('maxTombstoneMs', 24 * 3600_000, 1000),
    keySlackMs: o.int('keySlackMs', 600_000, 0),
    heartbeatMs: o.int('heartbeatMs', 1000, 50),
    name: o.string('name', `${hostname()}-${process.pid}`),
    app: o.string('app', process.argv[1]?.split('/').pop() ?? 'node'),
  };
  // Leases are renewed every third of their time; a WAIT holds the connection the
  // renewals take (and the heartbeat's checks) for up to replicaTimeoutMs, so a longer one
  // could let held leases lapse while no replica answers.
  if (s.replicas > 0 && s.replicaTimeoutMs > s.leaseTimeMs / 3) {
    throw new KilnError('KILN_ERR_INVALID_OPTION', `RedisEngine: option "replicaTimeoutMs" (${s.replicaTimeoutMs} ms) must be at most a third of "leaseTimeMs" (${s.leaseTimeMs} ms): a WAIT holds the connection lease renewals take`, { details: { option: 'replicaTimeoutMs' } });
  }
  const topologyOption = o.any('topology');
  if (topologyOption !== undefined && (typeof topologyOption !== 'object' || topologyOption === null)) throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: option "topology" must be an object', { details: { option: 'topology' } });
  const limits = sessionLimitsOption(o.any('limits'), 'RedisEngine');
  const tls = readTlsOption('tls', o.any('tls') ?? parsed?.tls);
  const sentinelTls = readTlsOption('sentinelTls', o.any('sentinelTls') ?? parsed?.sentinelTls);
  // TLS settings that would be ignored are refused: the operator meant an encrypted link.
  if (tls && !topology.tls) throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: option "tls" needs a rediss://, rediss+sentinel:// or rediss+cluster:// URL (or topology.tls: true)', { details: { option: 'tls' } });
  if (sentinelTls && topology.kind !== 'sentinel') throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: option "sentinelTls" needs a Sentinel topology', { details: { option: 'sentinelTls' } });
  return { ...s, limits, tls, sentinelTls };
}
