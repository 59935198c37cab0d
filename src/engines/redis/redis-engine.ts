import { randomBytes } from 'node:crypto';
import { KilnError } from '../../errors/index.js';
import type { CommitAck, CommitRequest, LeaseGrant, SessionEvent, SessionMeta, SessionSnapshot, TouchItem } from '../../session/model.js';
import { defaultReconnect } from '../../util/backoff.js';
import { redactCredentials } from '../../util/log.js';
import { LatencyRecorder } from '../../util/latency.js';
import { StatusStream } from '../../util/status.js';
import { within, withTimeout } from '../../util/deadline.js';
import type { Engine, EngineLimits, EngineStats, EngineStatus, EngineTraffic, LeaseHandler, ListOptions, ListPage, CallOptions } from '../engine.js';
import { readRedisEngineOptions, type RedisEngineOptions, type RedisEngineSettings } from './engine-options.js';
import { ConsoleReports, type ReportedClient } from './console-reports.js';
import { Counters } from './counters.js';
import { ExpirySweep } from './expiry-sweep.js';
import { Heartbeat } from './heartbeat.js';
import { eventChannel, indexKeys, ownerChannel, type IndexKeys } from './keys.js';
import { LeaseAcquirer } from './lease-acquirer.js';
import { handleOwnerMessage, type LeaseMessage, type OwnerMessageHandlers } from './owner-messages.js';
import { Ownership, VALIDITY_MARGIN_MS } from './ownership.js';
import { MIN_REDIS_VERSION, num, redisVersionBelowMinimum, refusalOf, text, toEngineError } from './replies.js';
import { ScriptRunner } from './script-runner.js';
import { ReplicaGuard } from './replica-guard.js';
import { SCRIPTS } from './scripts.js';
import { SessionEvents } from './session-events.js';
import { minTombstoneMsOf, SessionStore } from './session-store.js';
import { describeTopology, type RedisTopology } from './topology.js';
import { createTransport, type RedisTransport } from './transport.js';

// Part of this module's surface since before the engine was split in parts (src/console, tests).
export type { ReportedClient } from './console-reports.js';
export type { RedisEngineOptions } from './engine-options.js';
export type { LeaseMessage } from './owner-messages.js';

/**
 * Kiln on Redis or Valkey: standalone, Sentinel (active/passive) or Cluster (striped);
 * options and the lease rules they shape are described in engine-options.ts.
 *
 * The engine itself is the wiring and the lifecycle (connect, trouble, close); each lease
 * rule lives in one part: script-runner (every command, WAIT and replicaPolicy),
 * lease-acquirer (waiting for a lease), ownership (what is held and trusted), heartbeat
 * (renewals, failovers), owner-messages (recalls, hand-overs, revocations),
 * session-store (data and indexes), expiry-sweep, console-reports, session-events.
 */
export class RedisEngine implements Engine {
  readonly kind = 'redis';
  readonly ownerId: string;
  readonly status = new StatusStream<EngineStatus>();
  readonly topology: RedisTopology;
  readonly replicaPolicy: 'best-effort' | 'strict';
  private readonly transport: RedisTransport;
  private readonly prefix: string;
  private readonly idx: IndexKeys;
  /** The options read, defaults applied. */
  private readonly s: RedisEngineSettings;
  private fixedLimits: EngineLimits | undefined;

  private readonly counters = new Counters();
  private readonly ownership: Ownership;
  private readonly runner: ScriptRunner;
  private readonly acquirer: LeaseAcquirer;
  private readonly heartbeat: Heartbeat;
  private readonly store: SessionStore;
  private readonly sweeper: ExpirySweep;
  private readonly reports: ConsoleReports;
  private readonly events: SessionEvents;
  private readonly onOwnerMessage: (message: string) => void;

  private currentEpoch: string | undefined;
  private connecting: Promise<void> | undefined;
  private connected = false;
  private closed = false;
  private timers: NodeJS.Timeout[] = [];
  private connectedAt = 0;
  private readonly commitLatency = new LatencyRecorder();
  private readonly acquireLatency = new LatencyRecorder();
  private lastTransportError: Error | undefined;
  /** Set while connecting: fails the attempt at once on an error that retrying cannot fix. */
  private refuseConnect: ((err: KilnError) => void) | undefined;

  constructor(options: RedisEngineOptions) {
    const s = (this.s = readRedisEngineOptions(options));
    const { leaseTimeMs, replicaTimeoutMs } = s;
    this.topology = s.topology;
    this.replicaPolicy = s.replicaPolicy;
    this.prefix = s.keyPrefix;
    this.ownerId = `${s.name}-${randomBytes(4).toString('hex')}`;
    this.idx = indexKeys(this.prefix);
    const channel = eventChannel(this.prefix);
    const { tls, sentinelTls } = s;
    this.transport = createTransport(this.topology, {
      ...(tls ? { tls } : {}),
      ...(sentinelTls ? { sentinelTls } : {}),
      connectTimeoutMs: this.s.connectTimeoutMs,
      // node-redis counts attempts from 0.
      reconnectDelayMs: (attempt) => defaultReconnect(attempt + 1),
    });
    this.transport.onTrouble((event) => {
      if (event.type === 'failover') this.failedOver(`failover: ${event.detail}`);
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

    // ---- the parts, each given only what it needs ----
    const count = this.counters.count;
    const isClosed = () => this.closed;
    const giveBack = (sessionId: string, token: number) => void this.runner.runScript(SCRIPTS.release, sessionId, this.ownerId, [String(token)]).catch(() => undefined);
    this.ownership = new Ownership(leaseTimeMs);
    this.runner = new ScriptRunner({
      send: (firstKey, args) => this.transport.send(firstKey, args),
      ensureConnected: (deadline) => this.ensureConnected(deadline),
      address: this.address,
      prefix: this.prefix,
      operationTimeoutMs: this.s.operationTimeoutMs,
      replicas: this.s.replicas,
      replicaTimeoutMs,
      // While replicas are short, ROLE is asked at most this often whether they are back.
      replicaGuard: new ReplicaGuard(s.replicas, s.replicaPolicy, s.replicaGraceMs, Math.min(250, replicaTimeoutMs)),
      // On a cluster every master has its own connection, and so its own WAITs and replicas.
      connectionOf: (key) => this.transport.connectionOf(key),
      generation: () => this.transport.generation,
      namesNodes: s.topology.kind === 'cluster',
      sendTo: (connection, args) => this.transport.sendTo(connection, args),
      // ARGV 3–8 of every script: the same for every call, built once.
      scriptSettings: [ownerChannel(this.prefix, ''), String(leaseTimeMs), String(s.recallTimeoutMs), String(s.pingPongHalfLifeMs), String(s.pingPongThreshold), channel],
      count,
      addScriptStats: (stat) => this.counters.addScriptStats(stat),
    });
    const { send, command, runScript } = this.runner;
    this.acquirer = new LeaseAcquirer({
      address: this.address,
      operationTimeoutMs: this.s.operationTimeoutMs,
      requestLease: (sessionId, waitUntil, timeoutMs) => runScript(SCRIPTS.acquire, sessionId, this.ownerId, [String(waitUntil)], { timeoutMs }),
      giveBack,
      cancelWait: (sessionId) => void runScript(SCRIPTS.cancelWait, sessionId, this.ownerId, []).catch(() => undefined),
      granted: (sessionId, token, recallDeadline, sentAt) => this.ownership.granted(sessionId, token, recallDeadline, sentAt),
      epoch: () => this.currentEpoch ?? '',
      isClosed,
      countError: (code) => this.runner.countError(code),
      observeWait: (ms) => this.acquireLatency.observe(ms),
    });
    this.heartbeat = new Heartbeat({
      heartbeatMs: this.s.heartbeatMs,
      leaseTimeMs,
      replicas: this.s.replicas,
      replicaTimeoutMs,
      ownerId: this.ownerId,
      ownersKey: this.idx.owners,
      epochKey: this.idx.epoch,
      send,
      masterIdentity: () => this.transport.masterIdentity(),
      isClosed,
      isConnected: () => this.connected,
      reconnected: () => this.reconnected(),
      failed: (error) => this.disconnected(error),
      failover: (reason) => this.failedOver(reason),
      takeToRelease: () => this.ownership.takeToRelease(),
      giveBack,
      sawRole: (view, connection) => this.runner.sawRole(view, connection),
      masterConnections: () => this.transport.masterConnections(),
      sendTo: this.runner.sendTo,
      renewAll: (deadline) => this.ownership.renewAll(async (sessionId, token) => num(await runScript(SCRIPTS.renew, sessionId, this.ownerId, [String(token)]).catch(() => -1)), deadline),
    });
    this.store = new SessionStore({
      ownerId: this.ownerId,
      prefix: this.prefix,
      idx: this.idx,
      limits: this.s.limits,
      keySlackMs: s.keySlackMs,
      touchGraceMs: this.s.touchGraceMs,
      maxTombstoneMs: s.maxTombstoneMs,
      minTombstoneMs: minTombstoneMsOf(s),
      runScript,
      command,
      replicatedWrite: this.runner.replicatedWrite,
      count,
      ownership: this.ownership,
      observeCommit: (ms) => this.commitLatency.observe(ms),
      generation: () => this.transport.generation,
      connectionOf: (key) => this.transport.connectionOf(key),
    });
    this.sweeper = new ExpirySweep({
      ownerId: this.ownerId,
      idx: this.idx,
      expirySweepMs: this.s.expirySweepMs,
      touchGraceMs: this.s.touchGraceMs,
      isActive: () => this.connected && !this.closed,
      send,
      command,
      runScript,
      dropFromIndexes: this.store.dropFromIndexes,
      count,
    });
    this.reports = new ConsoleReports({
      ownerId: this.ownerId,
      app: s.app,
      heartbeatMs: this.s.heartbeatMs,
      prefix: this.prefix,
      idx: this.idx,
      describe: { kind: this.kind, topology: this.topology.kind, address: this.address, replicas: this.s.replicas, replicaPolicy: this.replicaPolicy },
      local: () => ({
        connected: this.connected,
        connectedAt: this.connectedAt,
        epoch: this.currentEpoch,
        leases: this.ownership.size,
        leaseWaiters: this.acquirer.waiterCount(),
        replicasOnline: this.runner.replicasOnline,
        requests: this.runner.traffic().requests,
        errors: this.runner.errors(),
      }),
      latency: { commit: this.commitLatency, acquire: this.acquireLatency },
      send,
      command,
      ensureConnected: () => this.ensureConnected(),
      subscribePattern: (pattern, listener) => this.transport.subscribePattern(pattern, listener),
      flushCounters: () => this.flushCounters(),
    });
    const ownerMessages: OwnerMessageHandlers = {
      heldToken: (sessionId) => this.ownership.tokenOf(sessionId),
      isWaiting: (sessionId) => this.acquirer.isWaiting(sessionId),
      isAcquiring: (sessionId) => this.acquirer.isAcquiring(sessionId),
      tryAcquire: (sessionId) => this.acquirer.tryAcquire(sessionId),
      giveBack,
      recall: (sessionId, token, deadline) => this.ownership.recalled(sessionId, token, deadline),
      revoke: (sessionId, token, reason) => this.ownership.revokeLocally(sessionId, token, reason),
    };
    this.onOwnerMessage = (message) => handleOwnerMessage(message, ownerMessages);
    this.events = new SessionEvents(
      (listener) => this.transport.subscribe(channel, listener),
      (error) => this.status.push({ type: 'error', error }),
    );
  }

  get epoch(): string | undefined {
    return this.currentEpoch;
  }

  /** Fixed for the engine's life: one object, since clients read it on every request. */
  get limits(): EngineLimits {
    return (this.fixedLimits ??= Object.freeze({ ...this.s.limits, touchGraceMs: this.s.touchGraceMs }));
  }

  /** Replicas that must confirm each commit (WAIT), 0 for none. */
  get replicasRequired(): number {
    return this.s.replicas;
  }

  /** Replicas the master had online at the last look (equal to replicasRequired when all are). */
  get replicasSeenOnline(): number {
    return this.runner.replicasOnline;
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
    this.ownership.setHandler(handler);
  }

  // ---- the Engine contract, each call handed to its part ----------------------------------

  acquire(sessionId: string, options?: { timeoutMs?: number } & CallOptions): Promise<LeaseGrant> {
    return this.acquirer.acquire(sessionId, within(options?.timeoutMs ?? this.s.acquireTimeoutMs, options?.deadline));
  }

  release(sessionId: string, token: number, lastAccessedAt?: number): Promise<void> {
    return this.store.release(sessionId, token, lastAccessedAt);
  }

  load(sessionId: string, token: number, options?: CallOptions): Promise<SessionSnapshot | null> {
    return this.store.load(sessionId, token, options);
  }

  commit(request: CommitRequest, options?: CallOptions): Promise<CommitAck> {
    return this.store.commit(request, options);
  }

  touch(items: readonly TouchItem[]): Promise<void> {
    return this.store.touch(items);
  }

  destroy(sessionId: string, options?: { reason?: string } & CallOptions): Promise<boolean> {
    return this.store.destroyAs(this.ownerId, sessionId, options?.reason ?? 'request', options?.deadline);
  }

  findByPrincipal(principal: string): Promise<SessionMeta[]> {
    return this.store.findByPrincipal(principal);
  }

  destroyByPrincipal(principal: string): Promise<number> {
    return this.store.destroyByPrincipal(principal);
  }

  /** A page of a principal's sessions, a slice of its set at a time (the console's; see SessionStore.principalPage). */
  principalPage(principal: string, options: { limit: number; after?: string }): Promise<ListPage> {
    return this.store.principalPage(principal, options);
  }

  list(options: ListOptions): Promise<ListPage> {
    return this.store.list(options);
  }

  /** Metadata of one session without its lease (listing, principal index, admin). */
  peek(sessionId: string): Promise<SessionMeta | null> {
    return this.store.peek(sessionId);
  }

  /** A session's data without taking its lease, for the admin console's inspector only. */
  snapshotForAdmin(sessionId: string): Promise<SessionSnapshot | null> {
    return this.store.snapshotForAdmin(sessionId);
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    return this.events.on(listener);
  }

  stats(): Promise<EngineStats> {
    return this.reports.stats();
  }

  /** Stores this process's figures in Redis for `kiln console` (see ConsoleReports.report). */
  reportClientStats(stats: Record<string, unknown>): Promise<void> {
    return this.reports.report(stats);
  }

  /** What every live app server last reported, for the console. */
  reportedClients(): Promise<ReportedClient[]> {
    return this.reports.reportedClients();
  }

  /** Every lease message between processes, for the console's events pane. */
  watchLeases(listener: (event: LeaseMessage) => void): Promise<void> {
    return this.reports.watchLeases(listener);
  }

  traffic(): EngineTraffic {
    return this.runner.traffic();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.acquirer.closeAll();
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    if (this.connected) {
      const { runScript, command } = this.runner;
      // Hand every lease back so waiting processes get them now, not at the time limit.
      await Promise.all(this.ownership.everyToken().map(([id, token]) => runScript(SCRIPTS.release, id, this.ownerId, [String(token)]).catch(() => undefined)));
      await this.flushCounters().catch(() => undefined);
      await command(this.idx.owners, ['ZREM', this.idx.owners, this.ownerId]).catch(() => undefined);
      await command(this.idx.clients, ['HDEL', this.idx.clients, this.ownerId]).catch(() => undefined);
    }
    this.closed = true;
    this.connected = false;
    this.ownership.clear();
    await this.transport.close().catch(() => undefined);
    this.status.push({ type: 'closed' });
    this.status.end();
  }

  // ---- connection -----------------------------------------------------------------------

  private async start(): Promise<void> {
    const { send } = this.runner;
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
        await send(this.idx.epoch, ['SET', this.idx.epoch, randomBytes(8).toString('hex'), 'NX']);
        this.currentEpoch = text(await send(this.idx.epoch, ['GET', this.idx.epoch]));
        // Told, not refused: an older server runs everything but the re-file (see MIN_REDIS_VERSION).
        void send(this.idx.epoch, ['INFO', 'server']).then(warnIfOldRedis, () => undefined);
        this.heartbeat.masters = await this.transport.masterIdentity().catch(() => undefined);
        await send(this.idx.owners, ['ZADD', this.idx.owners, String(Date.now()), this.ownerId]);
      };
      await withTimeout(Promise.race([steps(), refused]), this.s.connectTimeoutMs, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `cannot reach Redis at ${this.address} within ${this.s.connectTimeoutMs} ms${last()}`));
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
    every(this.s.heartbeatMs, () => void this.heartbeat.beat());
    every(this.s.expirySweepMs, () => void this.sweeper.sweep().catch(() => undefined));
    every(Math.min(1000, this.s.heartbeatMs), () => void this.flushCounters().catch(() => undefined));
    every(VALIDITY_MARGIN_MS, () => this.ownership.checkValidity(Date.now()));
  }

  private async ensureConnected(deadline?: number): Promise<void> {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'engine is closed');
    // Once connected the transport reconnects by itself: each command has its own bound.
    if (this.connected) return;
    const ms = within(this.s.operationTimeoutMs, deadline);
    await withTimeout(this.connecting ?? this.connect(), ms, () => new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `cannot reach Redis at ${this.address} within ${ms} ms`));
  }

  /** Another master: every lease may move on, and its replicas are counted afresh. */
  private failedOver(reason: string): void {
    this.runner.newMaster(this.transport.masterConnections());
    this.ownership.loseAll(reason);
  }

  /** Connection trouble: every lease this process holds may move on; the client drops its copies. */
  private disconnected(error?: Error): void {
    if (!this.connected) return;
    this.connected = false;
    this.status.push(error ? { type: 'disconnected', error } : { type: 'disconnected' });
    this.ownership.loseAll('connection to Redis lost');
  }

  /** Redis answers the heartbeat again: connected, and a new epoch (data lost) is announced. */
  private async reconnected(): Promise<void> {
    this.connected = true;
    this.status.push({ type: 'connected', epoch: this.currentEpoch ?? '' });
    const epoch = text(await this.runner.send(this.idx.epoch, ['GET', this.idx.epoch]));
    if (epoch !== this.currentEpoch) {
      this.status.push({ type: 'epochChanged', from: this.currentEpoch ?? '', to: epoch });
      this.currentEpoch = epoch;
    }
  }

  /** Adds this process's counts to the cluster-wide hash (about once a second, and before stats). */
  private async flushCounters(): Promise<void> {
    if (!this.connected) return;
    await this.counters.flush((name, by) => this.runner.send(this.idx.stats, ['HINCRBY', this.idx.stats, name, String(by)]));
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

/** Warned already (once per process, however many engines connect). */
let warnedOldRedis = false;

function warnIfOldRedis(info: unknown): void {
  const version = redisVersionBelowMinimum(info);
  if (version === undefined || warnedOldRedis) return;
  warnedOldRedis = true;
  process.emitWarning(`Redis ${version} is older than ${MIN_REDIS_VERSION.join('.')}, the oldest Kiln's Redis engine supports: a retried commit whose first reply was lost does not file its session in the expiry index again (ZADD LT), so the sweep may miss it until Redis's own TTL frees its keys`, { code: 'KILN_REDIS_VERSION' });
}
