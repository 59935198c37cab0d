/**
 * What the Redis engine tells `kiln console`, which has no process of its own to ask:
 * engine stats (the cluster-wide counters plus this process's leases), each app server's
 * report in the `{idx}:clients` hash, and the lease messages between processes. The rule
 * it keeps: a report is another process's writing, so it is size-capped and checked
 * field by field before the console sees it, and a process is shown only while its
 * heartbeat is recent; the leftovers of processes killed without closing are removed.
 */
import { hostname } from 'node:os';
import { isHistogramSnapshot, type HistogramSnapshot, type LatencyRecorder } from '../../util/latency.js';
import type { EngineStats } from '../engine.js';
import { countersFrom } from './counters.js';
import { ownerChannel, ownerChannelPattern, type IndexKeys } from './keys.js';
import { leaseMessageFrom, parseOwnerMessage, type LeaseMessage } from './owner-messages.js';
import { num, parseUntrusted, text, type Reply } from './replies.js';

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

/** A client report larger than this is not read (ours are ~2 KB; the kiln server caps ClientStats at 16 KiB). */
export const MAX_REPORT_BYTES = 64 * 1024;
/** Reports and heartbeat entries of processes silent this long are removed. */
const GONE_AFTER_MS = 60_000;

/** A stored report, checked field by field. */
export function parseReport(json: string): ReportedClient | undefined {
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

/**
 * The clients hash and the owners index (ZRANGE WITHSCORES, both flat) read at `now`: the
 * reports of live processes, sorted by name, and the owners whose report is to go
 * (unreadable, or silent for a minute).
 */
export function sortReports(hash: Reply[], owners: Reply[], now: number): { live: ReportedClient[]; gone: string[] } {
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
    else if (!report || beat < now - GONE_AFTER_MS) gone.push(ownerId);
  }
  live.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { live, gone };
}

/** This process's own figures at the moment of asking. */
export interface LocalFigures {
  connected: boolean;
  connectedAt: number;
  epoch: string | undefined;
  leases: number;
  leaseWaiters: number;
  replicasOnline: number;
  requests: number;
  errors: Record<string, number>;
}

export interface ConsoleReportsOptions {
  ownerId: string;
  app: string;
  heartbeatMs: number;
  prefix: string;
  idx: Pick<IndexKeys, 'stats' | 'ids' | 'owners' | 'clients'>;
  /** What stats() says of the engine beyond the figures (kind, topology, address, replicas, policy). */
  describe: { kind: string; topology: string; address: string; replicas: number; replicaPolicy: string };
  local: () => LocalFigures;
  latency: { commit: LatencyRecorder; acquire: LatencyRecorder };
  send: (firstKey: string, args: string[]) => Promise<unknown>;
  command: (firstKey: string, args: string[]) => Promise<unknown>;
  ensureConnected: () => Promise<void>;
  subscribePattern: (pattern: string, listener: (message: string, channel: string) => void) => Promise<void>;
  flushCounters: () => Promise<void>;
}

export class ConsoleReports {
  constructor(private readonly o: ConsoleReportsOptions) {}

  async stats(): Promise<EngineStats> {
    const { idx, command } = this.o;
    await this.o.flushCounters();
    const [hash, sessions, owners] = await Promise.all([
      command(idx.stats, ['HGETALL', idx.stats]) as Promise<Reply[]>,
      command(idx.ids, ['ZCARD', idx.ids]),
      command(idx.owners, ['ZCOUNT', idx.owners, String(Date.now() - 3 * this.o.heartbeatMs), '+inf']),
    ]);
    const { counters, sessionBytes } = countersFrom(hash);
    const local = this.o.local();
    const d = this.o.describe;
    return {
      kind: d.kind,
      epoch: local.epoch,
      sessions: num(sessions),
      sessionBytes,
      // Cluster-wide lease figures would need a scan; these are this process's.
      leases: local.leases,
      leaseWaiters: local.leaseWaiters,
      owners: num(owners),
      counters,
      topology: d.topology,
      address: d.address,
      replicas: d.replicas,
      replicaPolicy: d.replicaPolicy,
      replicasOnline: local.replicasOnline,
    };
  }

  /**
   * Stores this process's figures in Redis for `kiln console` (the SessionClient calls
   * this every statsIntervalMs): who it is, what it sent, its leases, errors by code and
   * latency histograms, plus the client's own figures (near cache, commits).
   */
  async report(stats: Record<string, unknown>): Promise<void> {
    const local = this.o.local();
    if (!local.connected) return;
    const report: ReportedClient = {
      ownerId: this.o.ownerId,
      name: this.o.ownerId,
      host: hostname(),
      pid: process.pid,
      app: this.o.app,
      connectedAt: local.connectedAt,
      reportedAt: Date.now(),
      heartbeatMs: this.o.heartbeatMs,
      requests: local.requests,
      leases: local.leases,
      leaseWaiters: local.leaseWaiters,
      errors: local.errors,
      latency: { commit: this.o.latency.commit.snapshot(), acquire: this.o.latency.acquire.snapshot() },
      recent: { commit: this.o.latency.commit.recent(), acquire: this.o.latency.acquire.recent() },
      stats,
    };
    await this.o.send(this.o.idx.clients, ['HSET', this.o.idx.clients, this.o.ownerId, JSON.stringify(report)]);
  }

  /**
   * What every live app server last reported (reportClientStats), for the console. A
   * process is live while its heartbeat is recent; reports of processes gone for a minute
   * (killed, never closed) are removed, as are their heartbeat entries.
   */
  async reportedClients(): Promise<ReportedClient[]> {
    const { idx, command } = this.o;
    const [hash, owners] = (await Promise.all([command(idx.clients, ['HGETALL', idx.clients]), command(idx.owners, ['ZRANGE', idx.owners, '0', '-1', 'WITHSCORES'])])) as [Reply[], Reply[]];
    const now = Date.now();
    const { live, gone } = sortReports(hash, owners, now);
    if (gone.length > 0) void command(idx.clients, ['HDEL', idx.clients, ...gone]).catch(() => undefined);
    void command(idx.owners, ['ZREMRANGEBYSCORE', idx.owners, '-inf', `(${now - GONE_AFTER_MS}`]).catch(() => undefined);
    return live;
  }

  /**
   * Every lease message between processes (recalls, hand-overs, revocations), for the
   * console's events pane. The messages go by pub/sub anyway; watching them costs the
   * app servers nothing.
   */
  async watchLeases(listener: (event: LeaseMessage) => void): Promise<void> {
    await this.o.ensureConnected();
    const prefix = ownerChannel(this.o.prefix, '');
    await this.o.subscribePattern(ownerChannelPattern(this.o.prefix), (message, channel) => {
      const m = parseOwnerMessage(message);
      const event = m && leaseMessageFrom(m, channel.slice(prefix.length), Date.now());
      if (event) listener(event);
    });
  }
}
