import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { KilnError, isKilnError } from '../../errors/index.js';
import { DEFAULT_LEASE_OPTIONS } from '../../tier/lease-table.js';
import { assertSessionId } from '../../session/id.js';
import { checkAttributeName, checkPrincipal, DEFAULT_SESSION_LIMITS, type SessionLimits } from '../../session/limits.js';
import { deltaBytes, type CommitAck, type CommitRequest, type LeaseGrant, type SessionEvent, type SessionMeta, type SessionSnapshot, type TouchItem } from '../../session/model.js';
import { defaultReconnect } from '../../util/backoff.js';
import { redactCredentials } from '../../util/log.js';
import { OptionReader } from '../../util/options.js';
import { isHistogramSnapshot, LatencyRecorder, type HistogramSnapshot } from '../../util/latency.js';
import { StatusStream } from '../../util/status.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS, DEFAULT_OPERATION_TIMEOUT_MS, MAX_LIST_LIMIT, type Engine, type EngineLimits, type EngineStats, type EngineStatus, type EngineTraffic, type LeaseHandler, type ListOptions, type ListPage, type CallOptions } from '../engine.js';
import { within } from '../../util/deadline.js';
import { ReplicaGuard, type ReplicaPolicy } from './replica-guard.js';
import { eventChannel, indexKeys, ownerChannel, ownerChannelPattern, principalKey, sessionKeyList, type IndexKeys } from './keys.js';
import { SCRIPTS, type RedisScript } from './scripts.js';
import { describeTopology, parseRedisUrl, type RedisTopology } from './topology.js';
import { readTlsOption, type RedisTlsOptions } from './tls.js';
import { createTransport, type RedisTransport } from './transport.js';

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
  /** Longest a tombstone is kept for a session that had no expiry. Default 24 h. */
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

interface HeldLease {
  token: number;
  /** Until when this process may trust the lease without hearing from Redis. */
  validUntil: number;
}

interface AcquireWait {
  resolve: (grant: LeaseGrant) => void;
  reject: (err: KilnError) => void;
  deadline: number;
  timeoutMs: number;
  timer: NodeJS.Timeout;
  /** performance.now() when acquire() was called: the lease-wait figure. */
  startedAt: number;
}

/** What one app server's Redis engine stores for the console (reportClientStats). */
export interface ReportedClient {
  ownerId: string;
  name: string;
  host: string;
  pid: number;
  app: string;
  connectedAt: number;
  reportedAt: number;
  heartbeatMs: number;
  /** Commands sent to Redis. */
  requests: number;
  leases: number;
  leaseWaiters: number;
  errors: Record<string, number>;
  latency: { commit: HistogramSnapshot; acquire: HistogramSnapshot };
  recent: { commit: { count: number; p50Ms: number }; acquire: { count: number; p50Ms: number } };
  /** The SessionClient's own figures (near cache, commits, leases). */
  stats: Record<string, unknown>;
}

/** A lease message seen by watchLeases. */
export interface LeaseMessage {
  type: 'recall' | 'handover' | 'revoke';
  sessionId: string;
  /** The process the message was sent to: the holder (recall, revoke) or the next holder (hand-over). */
  owner: string;
  token: number;
  at: number;
  reason?: string;
}

interface OwnerMessage {
  k: 'g' | 'r' | 'v';
  s: string;
  t: number;
  d?: number;
  why?: string;
}

type Reply = unknown;

const REDIS_ENGINE_OPTIONS = ['url', 'topology', 'replicas', 'replicaTimeoutMs', 'replicaPolicy', 'replicaGraceMs', 'keyPrefix', 'name', 'app', 'connectTimeoutMs', 'operationTimeoutMs', 'acquireTimeoutMs', 'leaseTimeMs', 'recallTimeoutMs', 'touchGraceMs', 'expirySweepMs', 'pingPongThreshold', 'pingPongHalfLifeMs', 'maxTombstoneMs', 'keySlackMs', 'limits', 'heartbeatMs', 'tls', 'sentinelTls'] as const;

const COUNTER_NAMES = ['created', 'commits', 'commitBytes', 'duplicateCommits', 'rejectedCommits', 'touches', 'expired', 'destroyed', 'leaseGrants', 'leaseRecalls', 'leaseHandovers', 'leaseRevocations', 'pingPongGrants', 'underReplicatedCommits', 'sessionBytes'] as const;
type CounterName = (typeof COUNTER_NAMES)[number];

/** Failures of reaching Redis, not refusals: the same call may succeed shortly. */
const TRANSIENT_CODES: ReadonlySet<string> = new Set(['KILN_ERR_TIMEOUT', 'KILN_ERR_ENGINE_UNAVAILABLE', 'KILN_ERR_CONNECTION_LOST']);

/** Small safety margin so this process stops trusting a lease before Redis drops it. */
const VALIDITY_MARGIN_MS = 250;
const SWEEP_BATCH = 256;
/** A client report larger than this is not read (ours are ~2 KB; the kiln server caps ClientStats at 16 KiB). */
const MAX_REPORT_BYTES = 64 * 1024;

export class RedisEngine implements Engine {
  readonly kind = 'redis';
  readonly ownerId: string;
  readonly status = new StatusStream<EngineStatus>();
  readonly topology: RedisTopology;
  private readonly sent: EngineTraffic = { requests: 0, bytes: 0 };
  private readonly transport: RedisTransport;
  private readonly prefix: string;
  private readonly idx: IndexKeys;
  private readonly channel: string;
  private readonly sessionLimits: SessionLimits;
  private readonly replicas: number;
  private readonly replicaTimeoutMs: number;
  /** What replica confirmations mean under replicaPolicy (ROLE at each heartbeat feeds it). */
  private readonly replicaGuard: ReplicaGuard;
  private readonly connectTimeoutMs: number;
  private readonly operationTimeoutMs: number;
  private readonly acquireTimeoutMs: number;
  private readonly leaseTimeMs: number;
  private readonly recallTimeoutMs: number;
  private readonly touchGraceMs: number;
  private fixedLimits: EngineLimits | undefined;
  private readonly expirySweepMs: number;
  private readonly pingPongThreshold: number;
  private readonly pingPongHalfLifeMs: number;
  private readonly maxTombstoneMs: number;
  private readonly keySlackMs: number;
  private readonly heartbeatMs: number;
  /** ARGV 3–8 of every script: the same for every call, built once. */
  private readonly scriptSettings: string[];

  private handler: LeaseHandler | undefined;
  private currentEpoch: string | undefined;
  private masters: string | undefined;
  private connecting: Promise<void> | undefined;
  private connected = false;
  private closed = false;
  private readonly held = new Map<string, HeldLease>();
  /** Leases we stopped trusting (connection trouble) but Redis may still list as ours. */
  private readonly toRelease = new Map<string, number>();
  private readonly waits = new Map<string, AcquireWait[]>();
  private readonly acquiring = new Set<string>();
  private readonly acquireAgain = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private readonly eventListeners = new Set<(event: SessionEvent) => void>();
  private eventsSubscribed: Promise<void> | undefined;
  private readonly unflushed = new Map<CounterName, number>();
  private timers: NodeJS.Timeout[] = [];
  private heartbeatRunning = false;
  private lastRenew = 0;
  private readonly app: string;
  private connectedAt = 0;
  private readonly commitLatency = new LatencyRecorder();
  private readonly acquireLatency = new LatencyRecorder();
  /** Failed calls by error code, reported to the console with the client's figures. */
  private readonly errorCounts: Record<string, number> = {};
  private lastTransportError: Error | undefined;
  /** Set while connecting: fails the attempt at once on an error that retrying cannot fix. */
  private refuseConnect: ((err: KilnError) => void) | undefined;

  constructor(options: RedisEngineOptions) {
    const o = new OptionReader('RedisEngine', options, REDIS_ENGINE_OPTIONS);
    const url = o.string('url', undefined);
    const parsed = url !== undefined ? parseRedisUrl(url) : undefined;
    if (!parsed && !options.topology) throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: give "url" or "topology"', { details: { option: 'url' } });
    this.topology = options.topology ?? parsed!.topology;
    this.replicas = o.int('replicas', parsed?.replicas ?? 0, 0, 16);
    this.replicaTimeoutMs = o.int('replicaTimeoutMs', 1000, 1);
    this.replicaGuard = new ReplicaGuard(this.replicas, o.oneOf('replicaPolicy', ['best-effort', 'strict'], parsed?.replicaPolicy ?? 'strict'), o.int('replicaGraceMs', parsed?.replicaGraceMs ?? 60_000, 0));
    this.prefix = o.string('keyPrefix', parsed?.keyPrefix ?? 'kiln:');
    this.connectTimeoutMs = o.int('connectTimeoutMs', 5000, 1);
    this.operationTimeoutMs = o.int('operationTimeoutMs', DEFAULT_OPERATION_TIMEOUT_MS, 1);
    this.acquireTimeoutMs = o.int('acquireTimeoutMs', DEFAULT_ACQUIRE_TIMEOUT_MS, 1);
    this.leaseTimeMs = o.int('leaseTimeMs', 15_000, 1000);
    this.recallTimeoutMs = o.int('recallTimeoutMs', 3000, 10);
    this.touchGraceMs = o.int('touchGraceMs', 2000, 0);
    this.expirySweepMs = o.int('expirySweepMs', 1000, 10);
    this.pingPongThreshold = o.int('pingPongThreshold', DEFAULT_LEASE_OPTIONS.pingPongThreshold, 1);
    this.pingPongHalfLifeMs = o.int('pingPongHalfLifeMs', DEFAULT_LEASE_OPTIONS.pingPongHalfLifeMs, 1);
    this.maxTombstoneMs = o.int('maxTombstoneMs', 24 * 3600_000, 1000);
    this.keySlackMs = o.int('keySlackMs', 600_000, 0);
    this.heartbeatMs = o.int('heartbeatMs', 1000, 50);
    const name = o.string('name', `${hostname()}-${process.pid}`);
    this.app = o.string('app', process.argv[1]?.split('/').pop() ?? 'node');
    for (const objectOption of ['limits', 'topology'] as const) {
      const value = o.any(objectOption);
      if (value !== undefined && (typeof value !== 'object' || value === null)) throw new KilnError('KILN_ERR_INVALID_OPTION', `RedisEngine: option "${objectOption}" must be an object`, { details: { option: objectOption } });
    }
    this.sessionLimits = { ...DEFAULT_SESSION_LIMITS, ...options.limits };
    this.ownerId = `${name}-${randomBytes(4).toString('hex')}`;
    this.idx = indexKeys(this.prefix);
    this.channel = eventChannel(this.prefix);
    this.scriptSettings = [ownerChannel(this.prefix, ''), String(this.leaseTimeMs), String(this.recallTimeoutMs), String(this.pingPongHalfLifeMs), String(this.pingPongThreshold), this.channel];
    const tls = readTlsOption('tls', o.any('tls') ?? parsed?.tls);
    const sentinelTls = readTlsOption('sentinelTls', o.any('sentinelTls') ?? parsed?.sentinelTls);
    // TLS settings that would be ignored are refused: the operator meant an encrypted link.
    if (tls && !this.topology.tls) throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: option "tls" needs a rediss://, rediss+sentinel:// or rediss+cluster:// URL (or topology.tls: true)', { details: { option: 'tls' } });
    if (sentinelTls && this.topology.kind !== 'sentinel') throw new KilnError('KILN_ERR_INVALID_OPTION', 'RedisEngine: option "sentinelTls" needs a Sentinel topology', { details: { option: 'sentinelTls' } });
    this.transport = createTransport(this.topology, {
      ...(tls ? { tls } : {}),
      ...(sentinelTls ? { sentinelTls } : {}),
      connectTimeoutMs: this.connectTimeoutMs,
      // node-redis counts attempts from 0.
      reconnectDelayMs: (attempt) => defaultReconnect(attempt + 1),
    });
    this.transport.onTrouble((event) => {
      if (event.type === 'failover') this.loseAll(`failover: ${event.detail}`);
      else if (event.type === 'error') {
        this.lastTransportError = event.error;
        if (this.connected) this.disconnected(event.error);
        else if (this.refuseConnect) {
          // node-redis would retry a refused certificate or password until the deadline; neither heals by waiting.
          const refusal = refusalOf(event.error, this.address);
          if (refusal) this.refuseConnect(refusal);
        }
      }
    });
  }

  get epoch(): string | undefined {
    return this.currentEpoch;
  }

  /** Fixed for the engine's life: one object, since clients read it on every request. */
  get limits(): EngineLimits {
    return (this.fixedLimits ??= Object.freeze({ ...this.sessionLimits, touchGraceMs: this.touchGraceMs }));
  }

  /** Replicas that must confirm each commit (WAIT), 0 for none. */
  get replicasRequired(): number {
    return this.replicas;
  }

  /** Replicas the master had online at the last look (equal to replicasRequired when all are). */
  get replicasSeenOnline(): number {
    return this.replicaGuard.seenOnline;
  }

  get replicaPolicy(): ReplicaPolicy {
    return this.replicaGuard.policy;
  }

  /** Where this engine points, without credentials. */
  get address(): string {
    return describeTopology(this.topology);
  }

  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new KilnError('KILN_ERR_CLOSED', 'engine is closed'));
    this.connecting ??= this.start().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    return this.connecting;
  }

  setLeaseHandler(handler: LeaseHandler): void {
    this.handler = handler;
  }

  // ---- leases ---------------------------------------------------------------------------

  acquire(sessionId: string, options?: { timeoutMs?: number } & CallOptions): Promise<LeaseGrant> {
    // The wait has one timer: at the deadline it is abandoned, whatever the attempt in
    // flight is doing (each attempt is bounded by the wait's deadline too).
    const timeoutMs = within(options?.timeoutMs ?? this.acquireTimeoutMs, options?.deadline);
    return new Promise<LeaseGrant>((resolve, reject) => {
      if (this.closed) {
        reject(new KilnError('KILN_ERR_CLOSED', 'engine is closed'));
        return;
      }
      try {
        assertSessionId(sessionId);
      } catch (err) {
        reject(err as KilnError);
        return;
      }
      const wait: AcquireWait = {
        resolve,
        reject,
        deadline: Date.now() + timeoutMs,
        timeoutMs,
        timer: setTimeout(() => this.abandonWait(sessionId, wait), timeoutMs),
        startedAt: performance.now(),
      };
      let list = this.waits.get(sessionId);
      if (!list) this.waits.set(sessionId, (list = []));
      list.push(wait);
      this.tryAcquire(sessionId);
    });
  }

  async release(sessionId: string, token: number, lastAccessedAt?: number): Promise<void> {
    if (this.held.get(sessionId)?.token === token) this.held.delete(sessionId);
    this.toRelease.delete(sessionId);
    const args = lastAccessedAt === undefined ? [String(token)] : [String(token), String(lastAccessedAt), String(this.keySlackMs)];
    const reply = await this.runScript(SCRIPTS.release, sessionId, this.ownerId, args);
    if (Array.isArray(reply) && num(reply[2] as Reply) === 1) this.count('touches', 1);
  }

  async load(sessionId: string, token: number, options?: CallOptions): Promise<SessionSnapshot | null> {
    const reply = await this.runScript(SCRIPTS.load, sessionId, this.ownerId, [String(token)], { deadline: options?.deadline });
    return snapshotFrom(sessionId, reply);
  }

  async commit(request: CommitRequest, options?: CallOptions): Promise<CommitAck> {
    const deadline = options?.deadline;
    const limits = this.sessionLimits;
    // The script checks sizes and counts; names and the principal are checked here,
    // before anything is sent.
    checkPrincipal(request.principal, limits);
    assertSessionId(request.sessionId);
    // The principal index lives on another shard: a session is added to it before a
    // commit names the principal, so "log out everywhere" can never miss it.
    if (typeof request.principal === 'string') {
      await this.command(principalKey(this.prefix, request.principal), ['SADD', principalKey(this.prefix, request.principal), request.sessionId], deadline);
    }
    const args: (string | Buffer)[] = [
      String(request.token),
      request.commitId,
      String(request.baseVersion),
      String(request.lastAccessedAt),
      request.principal === undefined ? 'u' : request.principal === null ? 'n' : 's',
      request.principal ?? '',
      request.idleTimeoutMs === undefined ? '' : String(request.idleTimeoutMs),
      request.absoluteExpiresAt === undefined ? '' : String(request.absoluteExpiresAt),
      request.release ? '1' : '0',
      String(limits.maxAttributeBytes),
      String(limits.maxSessionBytes),
      String(limits.maxAttributes),
      String(this.keySlackMs),
      String(request.set.length),
    ];
    for (const [name, value] of request.set) {
      checkAttributeName(name, limits);
      args.push(name, Buffer.from(value.buffer, value.byteOffset, value.byteLength), String(name.length));
    }
    args.push(String(request.del.length));
    for (const name of request.del) args.push(name, String(name.length));
    const patches = request.patch ?? [];
    args.push(String(patches.length));
    for (const p of patches) {
      checkAttributeName(p.name, limits);
      args.push(p.name, String(p.at), String(p.cut), Buffer.from(p.bytes.buffer, p.bytes.byteOffset, p.bytes.byteLength), String(p.baseLength), String(p.name.length));
    }
    let reply: Reply[];
    const started = performance.now();
    try {
      reply = (await this.runScript(SCRIPTS.commit, request.sessionId, this.ownerId, args, { waitForReplicas: true, deadline })) as Reply[];
      this.commitLatency.observe(performance.now() - started);
    } catch (err) {
      if (isKilnError(err) && !TRANSIENT_CODES.has(err.code)) this.count('rejectedCommits');
      throw err;
    }
    if (request.release && this.held.get(request.sessionId)?.token === request.token) this.held.delete(request.sessionId);
    if (text(reply[0]) === 'D') {
      this.count('duplicateCommits');
      return { version: num(reply[1]), duplicate: true };
    }
    const version = num(reply[1]);
    const oldPrincipal = reply[2] === null ? null : text(reply[2]);
    const created = num(reply[3]) === 1;
    const expiresAt = reply[4] === null ? undefined : num(reply[4]);
    this.count('commits');
    this.count('sessionBytes', num(reply[5]));
    this.count('commitBytes', deltaBytes(request));
    const index: Promise<unknown>[] = [];
    if (created) {
      this.count('created');
      index.push(this.command(this.idx.ids, ['ZADD', this.idx.ids, '0', request.sessionId]));
    }
    if (expiresAt !== undefined) {
      index.push(expiresAt >= 0 ? this.command(this.idx.expiry, ['ZADD', this.idx.expiry, String(expiresAt), request.sessionId]) : this.command(this.idx.expiry, ['ZREM', this.idx.expiry, request.sessionId]));
    }
    if (oldPrincipal !== null && request.principal !== undefined && request.principal !== oldPrincipal) {
      index.push(this.command(principalKey(this.prefix, oldPrincipal), ['SREM', principalKey(this.prefix, oldPrincipal), request.sessionId]));
    }
    // The commit is applied and acknowledged either way; a missed index entry is repaired
    // by readers (stale entries) or by Redis's own TTL on the keys (a missed expiry entry).
    // So the request waits for the index writes only while its time lasts.
    if (index.length > 0) await settleBy(Promise.all(index).catch(() => undefined), deadline);
    return { version, duplicate: false };
  }

  async touch(items: readonly TouchItem[]): Promise<void> {
    for (const item of items) assertSessionId(item.sessionId);
    const replies = await Promise.all(items.map((item) => this.runScript(SCRIPTS.touch, item.sessionId, this.ownerId, [String(item.token), String(item.at), String(this.keySlackMs)]).catch(() => 0)));
    const applied = replies.filter((r) => num(r) === 1).length;
    if (applied > 0) this.count('touches', applied);
  }

  async destroy(sessionId: string, options?: { reason?: string } & CallOptions): Promise<boolean> {
    return this.destroyAs(this.ownerId, sessionId, options?.reason ?? 'request', options?.deadline);
  }

  async findByPrincipal(principal: string): Promise<SessionMeta[]> {
    const key = principalKey(this.prefix, principal);
    const ids = ((await this.command(key, ['SMEMBERS', key])) as Reply[]).map(text);
    const metas = await Promise.all(ids.map((id) => this.peek(id)));
    const stale = ids.filter((_, i) => metas[i]?.principal !== principal);
    if (stale.length > 0) void this.command(key, ['SREM', key, ...stale]).catch(() => undefined);
    return metas.filter((m): m is SessionMeta => m !== null && m.principal === principal);
  }

  async destroyByPrincipal(principal: string): Promise<number> {
    let n = 0;
    // Nobody is excepted: every holder is told, this process included.
    for (const meta of await this.findByPrincipal(principal)) if (await this.destroyAs('', meta.id, 'principal')) n++;
    return n;
  }

  async list(options: ListOptions): Promise<ListPage> {
    const limit = Math.max(1, Math.min(options.limit, MAX_LIST_LIMIT));
    const prefix = options.prefix ?? '';
    let after = options.after !== undefined && options.after >= prefix ? options.after : undefined;
    const sessions: SessionMeta[] = [];
    let more = false;
    for (;;) {
      const from = after !== undefined ? `(${after}` : prefix ? `[${prefix}` : '-';
      const ids = ((await this.command(this.idx.ids, ['ZRANGEBYLEX', this.idx.ids, from, '+', 'LIMIT', '0', String(limit - sessions.length + 1)])) as Reply[]).map(text);
      const wanted = ids.filter((id) => id.startsWith(prefix));
      const reachedEnd = wanted.length < ids.length || ids.length < limit - sessions.length + 1;
      const metas = await Promise.all(wanted.map((id) => this.peek(id)));
      const stale: string[] = [];
      for (let i = 0; i < wanted.length; i++) {
        const meta = metas[i];
        if (!meta) {
          stale.push(wanted[i]!);
          continue;
        }
        if (sessions.length === limit) {
          more = true;
          break;
        }
        sessions.push(meta);
      }
      if (stale.length > 0) void this.command(this.idx.ids, ['ZREM', this.idx.ids, ...stale]).catch(() => undefined);
      if (more || reachedEnd || wanted.length === 0) break;
      after = wanted[wanted.length - 1];
    }
    const total = num(await this.command(this.idx.ids, ['ZCARD', this.idx.ids]));
    return { sessions, next: more && sessions.length > 0 ? sessions[sessions.length - 1]!.id : null, total };
  }

  /** Metadata of one session without its lease (listing, principal index, admin). */
  async peek(sessionId: string): Promise<SessionMeta | null> {
    const flat = (await this.runScript(SCRIPTS.peek, sessionId, '', [])) as Reply[];
    return flat.length === 0 ? null : metaFrom(sessionId, flat);
  }

  /** A session's data without taking its lease, for the admin console's inspector only. */
  async snapshotForAdmin(sessionId: string): Promise<SessionSnapshot | null> {
    return snapshotFrom(sessionId, await this.runScript(SCRIPTS.peekSnapshot, sessionId, '', []));
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    this.eventListeners.add(listener);
    this.eventsSubscribed ??= this.transport.subscribe(this.channel, (message) => this.onEventMessage(message)).catch((err: Error) => {
      this.eventsSubscribed = undefined;
      this.status.push({ type: 'error', error: err });
    });
    return () => {
      this.eventListeners.delete(listener);
    };
  }

  async stats(): Promise<EngineStats> {
    await this.flushCounters();
    const [hash, sessions, owners] = await Promise.all([
      this.command(this.idx.stats, ['HGETALL', this.idx.stats]) as Promise<Reply[]>,
      this.command(this.idx.ids, ['ZCARD', this.idx.ids]),
      this.command(this.idx.owners, ['ZCOUNT', this.idx.owners, String(Date.now() - 3 * this.heartbeatMs), '+inf']),
    ]);
    const counters: Record<string, number> = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]));
    for (let i = 0; i + 1 < hash.length; i += 2) counters[text(hash[i])] = num(hash[i + 1]);
    const sessionBytes = counters['sessionBytes'] ?? 0;
    delete counters['sessionBytes'];
    let leaseWaiters = 0;
    for (const list of this.waits.values()) leaseWaiters += list.length;
    return {
      kind: this.kind,
      epoch: this.currentEpoch,
      sessions: num(sessions),
      sessionBytes,
      // Cluster-wide lease figures would need a scan; these are this process's.
      leases: this.held.size,
      leaseWaiters,
      owners: num(owners),
      counters,
      topology: this.topology.kind,
      address: this.address,
      replicas: this.replicas,
      replicaPolicy: this.replicaPolicy,
      replicasOnline: this.replicaGuard.seenOnline,
    };
  }

  /**
   * Stores this process's figures in Redis for `kiln console` (the SessionClient calls
   * this every statsIntervalMs): who it is, what it sent, its leases, errors by code and
   * latency histograms, plus the client's own figures (near cache, commits).
   */
  async reportClientStats(stats: Record<string, unknown>): Promise<void> {
    if (!this.connected) return;
    let leaseWaiters = 0;
    for (const list of this.waits.values()) leaseWaiters += list.length;
    const report: ReportedClient = {
      ownerId: this.ownerId,
      name: this.ownerId,
      host: hostname(),
      pid: process.pid,
      app: this.app,
      connectedAt: this.connectedAt,
      reportedAt: Date.now(),
      heartbeatMs: this.heartbeatMs,
      requests: this.sent.requests,
      leases: this.held.size,
      leaseWaiters,
      errors: { ...this.errorCounts },
      latency: { commit: this.commitLatency.snapshot(), acquire: this.acquireLatency.snapshot() },
      recent: { commit: this.commitLatency.recent(), acquire: this.acquireLatency.recent() },
      stats,
    };
    await this.send(this.idx.clients, ['HSET', this.idx.clients, this.ownerId, JSON.stringify(report)]);
  }

  /**
   * What every live app server last reported (reportClientStats), for the console. A
   * process is live while its heartbeat is recent; reports of processes gone for a minute
   * (killed, never closed) are removed, as are their heartbeat entries.
   */
  async reportedClients(): Promise<ReportedClient[]> {
    const [hash, owners] = (await Promise.all([
      this.command(this.idx.clients, ['HGETALL', this.idx.clients]),
      this.command(this.idx.owners, ['ZRANGE', this.idx.owners, '0', '-1', 'WITHSCORES']),
    ])) as [Reply[], Reply[]];
    const now = Date.now();
    const lastBeat = new Map<string, number>();
    for (let i = 0; i + 1 < owners.length; i += 2) lastBeat.set(text(owners[i]), num(owners[i + 1]));
    const live: ReportedClient[] = [];
    const gone: string[] = [];
    for (let i = 0; i + 1 < hash.length; i += 2) {
      const ownerId = text(hash[i]);
      const raw = hash[i + 1];
      const report = Buffer.isBuffer(raw) && raw.length > MAX_REPORT_BYTES ? undefined : parseReport(text(raw));
      const beat = lastBeat.get(ownerId) ?? 0;
      if (report && beat >= now - Math.max(3 * report.heartbeatMs, 5000)) live.push(report);
      else if (!report || beat < now - 60_000) gone.push(ownerId);
    }
    if (gone.length > 0) void this.command(this.idx.clients, ['HDEL', this.idx.clients, ...gone]).catch(() => undefined);
    void this.command(this.idx.owners, ['ZREMRANGEBYSCORE', this.idx.owners, '-inf', `(${now - 60_000}`]).catch(() => undefined);
    return live.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Every lease message between processes (recalls, hand-overs, revocations), for the
   * console's events pane. The messages go by pub/sub anyway; watching them costs the
   * app servers nothing.
   */
  async watchLeases(listener: (event: LeaseMessage) => void): Promise<void> {
    await this.ensureConnected();
    const prefix = ownerChannel(this.prefix, '');
    await this.transport.subscribePattern(ownerChannelPattern(this.prefix), (message, channel) => {
      const m = parseOwnerMessage(message);
      if (!m) return;
      const type = m.k === 'r' ? 'recall' : m.k === 'g' ? 'handover' : m.k === 'v' ? 'revoke' : undefined;
      if (!type) return;
      listener({ type, sessionId: m.s, owner: channel.slice(prefix.length), token: m.t, at: Date.now(), ...(m.why ? { reason: m.why } : {}) });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const [sessionId, list] of this.waits) {
      this.waits.delete(sessionId);
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(new KilnError('KILN_ERR_CLOSED', 'engine is closed'));
      }
    }
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.connected) {
      // Hand every lease back so waiting processes get them now, not at the time limit.
      const releases = [...this.held, ...[...this.toRelease].map(([id, token]) => [id, { token }] as const)].map(([id, lease]) =>
        this.runScript(SCRIPTS.release, id, this.ownerId, [String(lease.token)]).catch(() => undefined),
      );
      await Promise.all(releases);
      await this.flushCounters().catch(() => undefined);
      await this.command(this.idx.owners, ['ZREM', this.idx.owners, this.ownerId]).catch(() => undefined);
      await this.command(this.idx.clients, ['HDEL', this.idx.clients, this.ownerId]).catch(() => undefined);
    }
    this.closed = true;
    this.connected = false;
    this.held.clear();
    await this.transport.close().catch(() => undefined);
    this.status.push({ type: 'closed' });
    this.status.end();
  }

  // ---- connection -----------------------------------------------------------------------

  private async start(): Promise<void> {
    try {
      const refused = new Promise<never>((_, reject) => (this.refuseConnect = reject));
      refused.catch(() => undefined);
      const last = () => (this.lastTransportError ? ` (last error: ${redactCredentials(this.lastTransportError.message)})` : '');
      // One deadline for the whole start, and a refusal (a certificate, a password) ends it
      // at any step: with TLS 1.3 a server that wants a client certificate says so only
      // after the client thinks it is connected, and node-redis would queue the first
      // commands across its reconnects for ever.
      const steps = async (): Promise<void> => {
        await this.transport.connect();
        await this.transport.subscribe(ownerChannel(this.prefix, this.ownerId), (message) => this.onOwnerMessage(message));
        await this.send(this.idx.epoch, ['SET', this.idx.epoch, randomBytes(8).toString('hex'), 'NX']);
        this.currentEpoch = text(await this.send(this.idx.epoch, ['GET', this.idx.epoch]));
        this.masters = await this.transport.masterIdentity().catch(() => undefined);
        await this.send(this.idx.owners, ['ZADD', this.idx.owners, String(Date.now()), this.ownerId]);
      };
      await withTimeout(Promise.race([steps(), refused]), this.connectTimeoutMs, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `cannot reach Redis at ${this.address} within ${this.connectTimeoutMs} ms${last()}`));
      this.refuseConnect = undefined;
    } catch (err) {
      this.refuseConnect = undefined;
      await this.transport.close().catch(() => undefined);
      throw toEngineError(err, this.address);
    }
    this.connected = true;
    this.connectedAt = Date.now();
    this.status.push({ type: 'connected', epoch: this.currentEpoch ?? '' });
    const every = (ms: number, fn: () => void) => {
      const timer = setInterval(fn, ms);
      timer.unref();
      this.timers.push(timer);
    };
    every(this.heartbeatMs, () => void this.heartbeat());
    every(this.expirySweepMs, () => void this.sweep().catch(() => undefined));
    every(Math.min(1000, this.heartbeatMs), () => void this.flushCounters().catch(() => undefined));
    every(VALIDITY_MARGIN_MS, () => this.checkValidity());
  }

  /** Connection trouble: every lease this process holds may move on; the client drops its copies. */
  private disconnected(error?: Error): void {
    if (!this.connected) return;
    this.connected = false;
    this.status.push(error ? { type: 'disconnected', error } : { type: 'disconnected' });
    this.loseAll('connection to Redis lost');
  }

  private loseAll(reason: string): void {
    for (const [sessionId, lease] of this.held) this.toRelease.set(sessionId, lease.token);
    this.held.clear();
    this.handler?.lost(reason);
  }

  /** Checks the connection, notices failovers, renews leases, announces this process. */
  private async heartbeat(): Promise<void> {
    if (this.heartbeatRunning || this.closed) return;
    this.heartbeatRunning = true;
    try {
      await this.send(this.idx.owners, ['ZADD', this.idx.owners, String(Date.now()), this.ownerId], this.heartbeatMs * 2);
      const masters = await withTimeout(this.transport.masterIdentity(), this.heartbeatMs * 2, () => new KilnError('KILN_ERR_TIMEOUT', 'master check timed out'));
      if (!this.connected) {
        this.connected = true;
        this.status.push({ type: 'connected', epoch: this.currentEpoch ?? '' });
        const epoch = text(await this.send(this.idx.epoch, ['GET', this.idx.epoch]));
        if (epoch !== this.currentEpoch) {
          this.status.push({ type: 'epochChanged', from: this.currentEpoch ?? '', to: epoch });
          this.currentEpoch = epoch;
        }
      }
      const before = this.masters;
      this.masters = masters;
      if (before !== undefined && masters !== before) {
        this.replicaGuard.reset();
        this.loseAll(`failover (masters ${before} → ${masters})`);
      }
      for (const [sessionId, token] of this.toRelease) {
        this.toRelease.delete(sessionId);
        void this.runScript(SCRIPTS.release, sessionId, this.ownerId, [String(token)]).catch(() => undefined);
      }
      if (this.replicas > 0) await this.countReplicasOnline();
      if (Date.now() - this.lastRenew >= this.leaseTimeMs / 3 - this.heartbeatMs / 2) await this.renewAll();
    } catch (err) {
      this.disconnected(err instanceof Error ? err : undefined);
    } finally {
      this.heartbeatRunning = false;
    }
  }

  /** ROLE on the master: how many replicas it has online now (a replica back is waited for again). */
  private async countReplicasOnline(): Promise<void> {
    const role = (await this.send(this.idx.epoch, ['ROLE'], this.heartbeatMs * 2)) as Reply[];
    if (text(role[0]) !== 'master' || !Array.isArray(role[2])) return;
    this.replicaGuard.observe(role[2].length, Date.now());
  }

  private async renewAll(): Promise<void> {
    this.lastRenew = Date.now();
    const sent = Date.now();
    await Promise.all(
      [...this.held].map(async ([sessionId, lease]) => {
        const reply = num(await this.runScript(SCRIPTS.renew, sessionId, this.ownerId, [String(lease.token)]).catch(() => -1));
        if (this.held.get(sessionId) !== lease) return;
        if (reply === 0) this.revokeLocally(sessionId, lease.token, 'lease-expired');
        else if (reply === 1) lease.validUntil = sent + this.leaseTimeMs - VALIDITY_MARGIN_MS;
        else if (reply > 1) {
          // A recall we may have missed (pub/sub delivers at most once).
          lease.validUntil = Math.min(lease.validUntil, reply - VALIDITY_MARGIN_MS);
          this.handler?.recall(sessionId, lease.token);
        }
      }),
    );
  }

  /** A lease whose time limit may have run out in Redis is no longer trusted here. */
  private checkValidity(): void {
    const now = Date.now();
    for (const [sessionId, lease] of this.held) if (lease.validUntil <= now) this.revokeLocally(sessionId, lease.token, 'lease-expired');
  }

  private revokeLocally(sessionId: string, token: number, reason: string): void {
    const lease = this.held.get(sessionId);
    if (!lease || lease.token !== token) return;
    this.held.delete(sessionId);
    this.handler?.revoked(sessionId, token, reason);
  }

  // ---- acquire machinery ----------------------------------------------------------------

  private tryAcquire(sessionId: string): void {
    const list = this.waits.get(sessionId);
    if (!list || list.length === 0 || this.closed) return;
    if (this.acquiring.has(sessionId)) {
      this.acquireAgain.add(sessionId);
      return;
    }
    const retry = this.retryTimers.get(sessionId);
    if (retry) {
      clearTimeout(retry);
      this.retryTimers.delete(sessionId);
    }
    this.acquiring.add(sessionId);
    const waitUntil = Math.max(...list.map((w) => w.deadline));
    const sent = Date.now();
    this.runScript(SCRIPTS.acquire, sessionId, this.ownerId, [String(waitUntil)], { timeoutMs: Math.max(1, Math.min(this.operationTimeoutMs, waitUntil - sent)) })
      .then(
        (reply) => this.onAcquireReply(sessionId, reply as Reply[], sent),
        (err: unknown) => {
          const error = toEngineError(err, this.address);
          if (TRANSIENT_CODES.has(error.code)) {
            // Redis is failing over or unreachable: ask again shortly, within the caller's time.
            this.scheduleRetry(sessionId, 100 + Math.random() * 150);
          } else {
            const waiting = this.waits.get(sessionId) ?? [];
            this.waits.delete(sessionId);
            for (const w of waiting) {
              clearTimeout(w.timer);
              w.reject(error);
            }
            this.countError(error.code);
          }
        },
      )
      .finally(() => {
        this.acquiring.delete(sessionId);
        if (this.acquireAgain.delete(sessionId)) this.tryAcquire(sessionId);
      });
  }

  private onAcquireReply(sessionId: string, reply: Reply[], sent: number): void {
    if (text(reply[0]) === 'W') {
      // Someone else holds it and has been recalled: the hand-over comes as a message;
      // if that message is lost or the holder is dead, ask again when its time is up.
      const recallDeadline = num(reply[1]);
      this.scheduleRetry(sessionId, Math.max(20, recallDeadline - Date.now() + 20 + Math.random() * 30));
      return;
    }
    const token = num(reply[1]);
    const recallDeadline = num(reply[3]);
    const waiting = this.waits.get(sessionId) ?? [];
    this.waits.delete(sessionId);
    if (waiting.length === 0) {
      // Everyone stopped waiting while the grant was on its way: give it straight back.
      void this.runScript(SCRIPTS.release, sessionId, this.ownerId, [String(token)]).catch(() => undefined);
      return;
    }
    const validUntil = recallDeadline > 0 ? recallDeadline - VALIDITY_MARGIN_MS : sent + this.leaseTimeMs - VALIDITY_MARGIN_MS;
    this.held.set(sessionId, { token, validUntil });
    this.toRelease.delete(sessionId);
    const grant: LeaseGrant = { sessionId, token, epoch: this.currentEpoch ?? '', snapshot: snapshotFrom(sessionId, reply[4]), releaseAfterUse: num(reply[2]) === 1 };
    const now = performance.now();
    for (const w of waiting) {
      clearTimeout(w.timer);
      this.acquireLatency.observe(now - w.startedAt);
      w.resolve(waiting.length === 1 ? grant : { ...grant, snapshot: grant.snapshot && { meta: { ...grant.snapshot.meta }, attributes: new Map(grant.snapshot.attributes) } });
    }
  }

  private scheduleRetry(sessionId: string, delayMs: number): void {
    const list = this.waits.get(sessionId);
    if (!list || list.length === 0) return;
    clearTimeout(this.retryTimers.get(sessionId));
    const latest = Math.max(...list.map((w) => w.deadline));
    const at = Math.min(delayMs, Math.max(0, latest - Date.now() - 5));
    this.retryTimers.set(
      sessionId,
      setTimeout(() => {
        this.retryTimers.delete(sessionId);
        this.tryAcquire(sessionId);
      }, at),
    );
  }

  private abandonWait(sessionId: string, wait: AcquireWait): void {
    const list = this.waits.get(sessionId);
    const at = list?.indexOf(wait) ?? -1;
    if (!list || at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) {
      this.waits.delete(sessionId);
      clearTimeout(this.retryTimers.get(sessionId));
      this.retryTimers.delete(sessionId);
      void this.runScript(SCRIPTS.cancelWait, sessionId, this.ownerId, []).catch(() => undefined);
    }
    this.countError('KILN_ERR_LEASE_TIMEOUT');
    wait.reject(new KilnError('KILN_ERR_LEASE_TIMEOUT', `lease for the session was not granted within ${wait.timeoutMs} ms`, { details: { sessionId, timeoutMs: wait.timeoutMs } }));
  }

  private onOwnerMessage(message: string): void {
    const m = parseOwnerMessage(message);
    if (!m) return;
    switch (m.k) {
      case 'g':
        // A hand-over: our acquire script answers again with the grant and the data.
        if (this.waits.has(m.s)) this.tryAcquire(m.s);
        else void this.runScript(SCRIPTS.release, m.s, this.ownerId, [String(m.t)]).catch(() => undefined);
        return;
      case 'r': {
        const lease = this.held.get(m.s);
        if (lease && lease.token === m.t && typeof m.d === 'number') lease.validUntil = Math.min(lease.validUntil, m.d - VALIDITY_MARGIN_MS);
        if (lease?.token === m.t || this.waits.has(m.s) || this.acquiring.has(m.s)) this.handler?.recall(m.s, m.t);
        else if (!lease) void this.runScript(SCRIPTS.release, m.s, this.ownerId, [String(m.t)]).catch(() => undefined);
        return;
      }
      case 'v':
        this.revokeLocally(m.s, m.t, m.why ?? 'revoked');
        return;
    }
  }

  private onEventMessage(message: string): void {
    let event: SessionEvent;
    try {
      const raw = JSON.parse(message) as Record<string, unknown>;
      event = { type: raw['type'] === 'expired' ? 'expired' : 'destroyed', sessionId: String(raw['sessionId']), principal: typeof raw['principal'] === 'string' ? raw['principal'] : null, at: Number(raw['at']) };
      if (typeof raw['reason'] === 'string') event.reason = raw['reason'];
    } catch {
      return;
    }
    for (const listener of this.eventListeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  // ---- destroy and expiry ---------------------------------------------------------------

  private async destroyAs(except: string, sessionId: string, reason: string, deadline?: number): Promise<boolean> {
    const reply = (await this.runScript(SCRIPTS.destroy, sessionId, except, [reason, String(this.touchGraceMs), String(this.maxTombstoneMs)], { deadline })) as Reply[];
    if (num(reply[0]) !== 1) return false;
    this.count(reason === 'expired' ? 'expired' : 'destroyed');
    this.count('sessionBytes', -num(reply[2]));
    const holder = reply[3] === null ? null : text(reply[3]);
    if (holder === this.ownerId) {
      // Our own lease ends with the session: drop it now rather than when the message comes.
      const lease = this.held.get(sessionId);
      if (except === this.ownerId) this.held.delete(sessionId);
      else if (lease) this.revokeLocally(sessionId, lease.token, 'destroyed');
    }
    await settleBy(this.dropFromIndexes(sessionId, reply[1] === null ? null : text(reply[1])), deadline);
    return true;
  }

  private async dropFromIndexes(sessionId: string, principal: string | null): Promise<void> {
    const ops = [this.command(this.idx.ids, ['ZREM', this.idx.ids, sessionId]), this.command(this.idx.expiry, ['ZREM', this.idx.expiry, sessionId])];
    if (principal !== null) ops.push(this.command(principalKey(this.prefix, principal), ['SREM', principalKey(this.prefix, principal), sessionId]));
    await Promise.all(ops).catch(() => undefined);
  }

  /**
   * One process at a time (a SET NX token with a short life) takes the sessions due in
   * the expiry index and lets the expire script decide: a touch or commit since then
   * only moved the deadline, so most are re-filed, not expired.
   */
  private async sweep(): Promise<void> {
    if (!this.connected || this.closed) return;
    const turn = String(Math.max(this.expirySweepMs * 3, 1000));
    const took = await this.send(this.idx.sweeper, ['SET', this.idx.sweeper, this.ownerId, 'PX', turn, 'NX']);
    if (took === null) {
      if (text(await this.send(this.idx.sweeper, ['GET', this.idx.sweeper])) !== this.ownerId) return;
      await this.send(this.idx.sweeper, ['PEXPIRE', this.idx.sweeper, turn]);
    }
    for (let rounds = 0; rounds < 20; rounds++) {
      const now = Date.now();
      const due = ((await this.send(this.idx.expiry, ['ZRANGEBYSCORE', this.idx.expiry, '-inf', String(now), 'LIMIT', '0', String(SWEEP_BATCH)])) as Reply[]).map(text);
      if (due.length === 0) return;
      await Promise.all(due.map((id) => this.expireOne(id)));
      if (due.length < SWEEP_BATCH) return;
    }
  }

  private async expireOne(sessionId: string): Promise<void> {
    const reply = (await this.runScript(SCRIPTS.expire, sessionId, '', [String(this.touchGraceMs)])) as Reply[];
    const outcome = num(reply[0]);
    if (outcome === 2) {
      const deadline = num(reply[1]);
      if (deadline >= 0) await this.command(this.idx.expiry, ['ZADD', this.idx.expiry, String(deadline), sessionId]);
      else await this.command(this.idx.expiry, ['ZREM', this.idx.expiry, sessionId]);
      return;
    }
    if (outcome === 1) {
      this.count('expired');
      this.count('sessionBytes', -num(reply[2]));
    }
    await this.dropFromIndexes(sessionId, outcome === 1 && reply[1] !== null ? text(reply[1]) : null);
  }

  // ---- counters -------------------------------------------------------------------------

  private count(name: CounterName, by = 1): void {
    if (by !== 0) this.unflushed.set(name, (this.unflushed.get(name) ?? 0) + by);
  }

  private addScriptStats(stat: Reply): void {
    if (!Array.isArray(stat)) return;
    this.count('leaseGrants', num(stat[0]));
    this.count('leaseRecalls', num(stat[1]));
    this.count('leaseHandovers', num(stat[2]));
    this.count('pingPongGrants', num(stat[3]));
    this.count('leaseRevocations', num(stat[4]));
  }

  /** Adds this process's counts to the cluster-wide hash (about once a second, and before stats). */
  private async flushCounters(): Promise<void> {
    if (this.unflushed.size === 0 || !this.connected) return;
    const entries = [...this.unflushed];
    this.unflushed.clear();
    try {
      await Promise.all(entries.map(([name, by]) => this.send(this.idx.stats, ['HINCRBY', this.idx.stats, name, String(by)])));
    } catch (err) {
      for (const [name, by] of entries) this.count(name, by);
      throw err;
    }
  }

  // ---- plumbing -------------------------------------------------------------------------

  traffic(): EngineTraffic {
    return { ...this.sent };
  }

  /** A command outside the session scripts, after connecting if need be. */
  private async command(firstKey: string, args: (string | Buffer)[], deadline?: number): Promise<unknown> {
    await this.ensureConnected(deadline);
    return this.send(firstKey, args, within(this.operationTimeoutMs, deadline));
  }

  private async ensureConnected(deadline?: number): Promise<void> {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'engine is closed');
    // Once connected the transport reconnects by itself: each command has its own bound.
    if (this.connected) return;
    const ms = within(this.operationTimeoutMs, deadline);
    await withTimeout(this.connecting ?? this.connect(), ms, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `cannot reach Redis at ${this.address} within ${ms} ms`));
  }

  private async send(firstKey: string | undefined, args: (string | Buffer)[], timeoutMs = this.operationTimeoutMs): Promise<unknown> {
    this.sent.requests++;
    this.sent.bytes += respBytes(args);
    try {
      return await withTimeout(this.transport.send(firstKey, args), timeoutMs, () => new KilnError('KILN_ERR_TIMEOUT', `Redis did not answer ${String(args[0])} within ${timeoutMs} ms`));
    } catch (err) {
      const error = toEngineError(err, this.address);
      if (!error.message.includes('NOSCRIPT')) this.countError(error.code);
      throw error;
    }
  }

  private countError(code: string): void {
    this.errorCounts[code] = (this.errorCounts[code] ?? 0) + 1;
  }

  /**
   * A commit that fewer than `replicas` replicas confirmed: refused (a retry with the
   * same commit id is acknowledged again once they have it), or, best effort past the
   * grace, acknowledged and counted (see ReplicaGuard).
   */
  private underReplicated(confirmed: number, waitMs: number): void {
    if (this.replicaGuard.verdict(confirmed, Date.now()) === 'under-replicated') {
      this.count('underReplicatedCommits');
      return;
    }
    this.countError('KILN_ERR_ENGINE_UNAVAILABLE');
    throw new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `the commit reached ${confirmed} of ${this.replicas} replicas within ${waitMs} ms; it may or may not survive a failover, so it is not acknowledged (replicaPolicy ${this.replicaGuard.policy}; a retry is safe)`, { details: { replicas: this.replicas, confirmed } });
  }

  /**
   * Runs a session script (EVALSHA, loading it on NOSCRIPT). With `waitForReplicas` and
   * `replicas` > 0, a WAIT follows on the same connection (see underReplicated() for
   * what fewer confirmations mean under each replicaPolicy).
   */
  private async runScript(script: RedisScript, sessionId: string, owner: string, extra: (string | Buffer)[], options: { timeoutMs?: number; waitForReplicas?: boolean; deadline?: number } = {}): Promise<unknown> {
    // The one gate every session key passes: the id becomes a hash tag, so `}` or `{`
    // in it would choose another slot, and an unchecked id could name keys it should not.
    assertSessionId(sessionId);
    const deadline = options.deadline;
    await this.ensureConnected(deadline);
    const keys = sessionKeyList(this.prefix, sessionId);
    const args: (string | Buffer)[] = [
      String(keys.length),
      ...keys,
      String(Date.now()),
      owner,
      ...this.scriptSettings,
      sessionId,
      ...extra,
    ];
    const timeoutMs = within(options.timeoutMs ?? this.operationTimeoutMs, deadline);
    const replicated = options.waitForReplicas === true && this.replicas > 0;
    // Best effort waits for the replicas the master has; strict for all it must have.
    const waitFor = replicated ? this.replicaGuard.waitFor(Date.now()) : 0;
    const waitMs = within(this.replicaTimeoutMs, deadline);
    const run = async (op: 'EVALSHA' | 'EVAL'): Promise<unknown> => {
      const reply = this.send(keys[0], [op, op === 'EVALSHA' ? script.sha : script.source, ...args], timeoutMs);
      // Sent right behind the script on the same connection, so it confirms exactly it.
      const acked = waitFor > 0 ? this.send(keys[0], ['WAIT', String(waitFor), String(waitMs)], within(timeoutMs + waitMs, deadline)) : undefined;
      acked?.catch(() => undefined);
      const result = await reply;
      const n = acked ? num(await acked) : 0;
      if (replicated && n < this.replicas) this.underReplicated(n, waitMs);
      return result;
    };
    let reply: unknown;
    try {
      reply = await run('EVALSHA');
    } catch (err) {
      if (!(err instanceof KilnError && err.message.includes('NOSCRIPT'))) throw err;
      reply = await run('EVAL');
    }
    if (script.countsLeases && Array.isArray(reply)) this.addScriptStats(reply[reply.length - 1]);
    return reply;
  }
}

/**
 * Connects a Redis engine from a URL (see topology.ts for the forms) or options.
 *
 * @example
 * const engine = connectRedis('redis+cluster://127.0.0.1:7000,127.0.0.1:7001?replicas=1');
 * await engine.connect();
 */
export function connectRedis(url: string, options: Omit<RedisEngineOptions, 'url'> = {}): RedisEngine {
  return new RedisEngine({ ...options, url });
}

// ---- reply decoding ---------------------------------------------------------------------

function text(value: unknown): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return value === null || value === undefined ? '' : String(value);
}

function num(value: unknown): number {
  if (typeof value === 'number') return value;
  return Number(text(value));
}

function metaFrom(sessionId: string, flat: Reply[]): SessionMeta {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) fields.set(text(flat[i]), text(flat[i + 1]));
  const n = (k: string) => Number(fields.get(k) ?? '0');
  return {
    id: sessionId,
    createdAt: n('ca'),
    lastAccessedAt: n('la'),
    idleTimeoutMs: n('it'),
    absoluteExpiresAt: n('ae'),
    principal: fields.get('p') ?? null,
    version: n('v'),
  };
}

function snapshotFrom(sessionId: string, reply: unknown): SessionSnapshot | null {
  if (!Array.isArray(reply) || reply.length < 2) return null;
  const meta = metaFrom(sessionId, reply[0] as Reply[]);
  const flat = reply[1] as Reply[];
  const attributes = new Map<string, Uint8Array>();
  // Copied out of node-redis's read buffer so a cached session does not pin it.
  for (let i = 0; i + 1 < flat.length; i += 2) attributes.set(text(flat[i]), Uint8Array.prototype.slice.call(flat[i + 1] as Buffer));
  return { meta, attributes };
}

/**
 * JSON that another process wrote (anyone can publish on a channel or write a key), or
 * undefined when it does not parse or fails `valid`.
 */
function parseUntrusted<T>(json: string, valid: (value: object) => boolean): T | undefined {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return undefined;
  }
  return typeof value === 'object' && value !== null && valid(value) ? (value as T) : undefined;
}

/** A message on an owner's channel, or undefined when it is not one. */
function parseOwnerMessage(message: string): OwnerMessage | undefined {
  return parseUntrusted<OwnerMessage>(message, (m) => typeof (m as OwnerMessage).s === 'string' && typeof (m as OwnerMessage).t === 'number');
}

/** A stored report, checked field by field. */
function parseReport(json: string): ReportedClient | undefined {
  const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  const isRecent = (v: unknown) => typeof v === 'object' && v !== null && isCount((v as { count: unknown }).count) && isCount((v as { p50Ms: unknown }).p50Ms);
  return parseUntrusted<ReportedClient>(json, (value) => {
    const r = value as ReportedClient;
    return (
      ['ownerId', 'name', 'host', 'app'].every((k) => typeof r[k as keyof ReportedClient] === 'string') &&
      ['pid', 'connectedAt', 'reportedAt', 'heartbeatMs', 'requests', 'leases', 'leaseWaiters'].every((k) => isCount(r[k as keyof ReportedClient])) &&
      typeof r.errors === 'object' && r.errors !== null && Object.values(r.errors).every(isCount) &&
      isHistogramSnapshot(r.latency?.commit) && isHistogramSnapshot(r.latency?.acquire) &&
      isRecent(r.recent?.commit) && isRecent(r.recent?.acquire) &&
      typeof r.stats === 'object' && r.stats !== null
    );
  });
}

/** Waits for `promise` until the deadline at most; past it the promise carries on unwatched. */
function settleBy(promise: Promise<unknown>, deadline: number | undefined): Promise<unknown> {
  if (deadline === undefined) return promise;
  return withTimeout(promise, Math.max(0, deadline - Date.now()), () => new KilnError('KILN_ERR_TIMEOUT', 'past the deadline')).catch(() => undefined);
}

function withTimeout<T>(promise: Promise<T>, ms: number, error: () => KilnError): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(error()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

const UNAVAILABLE = /^(READONLY|LOADING|CLUSTERDOWN|TRYAGAIN|MASTERDOWN|NOREPLICAS|BUSY)\b/;

/** node-redis errors and script refusals as KilnErrors with stable codes. */
const TLS_REFUSAL = /^(CERT_|UNABLE_TO_|SELF_SIGNED|DEPTH_ZERO|ERR_TLS_|ERR_SSL_|ERR_OSSL_)/;

/** Errors of connecting that waiting cannot fix: an untrusted certificate, a wrong password. */
function refusalOf(error: Error, address: string): KilnError | undefined {
  const code = String((error as NodeJS.ErrnoException).code ?? '');
  if (TLS_REFUSAL.test(code) || /certificate|handshake failure|alert/i.test(error.message)) {
    return new KilnError('KILN_ERR_TLS', `TLS to Redis at ${address} failed: ${redactCredentials(error.message)}${code ? ` [${code}]` : ''}`, { cause: error });
  }
  if (/^(WRONGPASS|NOAUTH|NOPERM)\b/.test(error.message)) return new KilnError('KILN_ERR_AUTH', `Redis at ${address} refused the credentials: ${error.message}`, { cause: error });
  return undefined;
}

function toEngineError(err: unknown, address: string): KilnError {
  if (err instanceof KilnError) return err;
  const error = err instanceof Error ? err : new Error(String(err));
  const message = error.message ?? '';
  const refusal = /^(KILN_ERR_[A-Z_]+) (.*)$/s.exec(message);
  if (refusal) return new KilnError(refusal[1] as 'KILN_ERR_CONFLICT', refusal[2]!);
  if (message.startsWith('NOSCRIPT')) return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', message, { cause: error });
  if (UNAVAILABLE.test(message)) return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `Redis at ${address}: ${message}`, { cause: error });
  if (/closed|socket|ECONNRESET|ECONNREFUSED|EPIPE|disconnect/i.test(`${error.name} ${message}`)) {
    return new KilnError('KILN_ERR_CONNECTION_LOST', `connection to Redis at ${address} lost: ${message}`, { cause: error });
  }
  return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `Redis at ${address}: ${message}`, { cause: error });
}

/** Size of a command in RESP, as it goes on the wire (for traffic()). */
function respBytes(args: readonly (string | Buffer)[]): number {
  let n = 3 + String(args.length).length;
  for (const a of args) {
    const len = typeof a === 'string' ? Buffer.byteLength(a) : a.length;
    n += 5 + String(len).length + len;
  }
  return n;
}
