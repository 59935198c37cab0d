import type { ListOptions, ListPage } from '../engines/engine.js';
import type { RedisEngine, ReportedClient } from '../engines/redis/redis-engine.js';
import type { SessionSnapshot } from '../session/model.js';
import { addHistograms } from '../util/latency.js';
import { clientStatsFrom } from '../protocol/client-stats.js';
import { ErrorCodes } from './error-codes.js';
import { announce, type ConsoleClient, type ConsoleDescription, type ConsoleEvent, type ConsoleFigures, type ConsoleSource } from './source.js';

/** How often the source looks at the clients' reports (joins, leaves, new errors). */
const WATCH_MS = 1000;
/** Departed clients remembered one by one (so one that comes back is not counted twice); older ones are folded into one total. */
const MAX_DEPARTED = 1000;

/**
 * The console's view of a Redis tier, for `kiln console --engine redis…`: sessions,
 * counters and events come from Redis (the engine's indexes, counters and event
 * channel); clients, leases held, requests, errors and latencies from what each app
 * server's client reports there every couple of seconds. Totals stay monotonic across
 * clients leaving: a departed client's last figures are kept.
 *
 * @example
 * const engine = connectRedis('redis+sentinel://127.0.0.1:26379/mymaster');
 * await engine.connect();
 * const admin = new AdminServer(new RedisSource(engine), { port: 9511, adminToken, version });
 */
export class RedisSource implements ConsoleSource {
  readonly kind = 'redis';
  private readonly startedAt = Date.now();
  private readonly listeners = new Set<(event: ConsoleEvent) => void>();
  private readonly offSessionEvents: () => void;
  private readonly watcher: NodeJS.Timeout;
  /** The last report of every live client. */
  private readonly known = new Map<string, ReportedClient>();
  /** The last report of clients that left, newest last (a client that comes back is moved back). */
  private readonly departed = new Map<string, ReportedClient>();
  /** Totals of clients that left long ago (beyond MAX_DEPARTED), folded together. */
  private frozen = { requests: 0, errors: {} as Record<string, number>, commit: addHistograms([]), acquire: addHistograms([]) };
  private watching: Promise<ReportedClient[]> | undefined;
  private closed = false;
  /** The error codes the reports may name (error-codes.ts): each is a metrics series and an event. */
  private readonly codes = new ErrorCodes();

  constructor(private readonly engine: RedisEngine) {
    this.offSessionEvents = engine.onEvent((data) => announce(this.listeners, { type: 'session', data }));
    void engine.watchLeases((data) => announce(this.listeners, { type: 'lease', data })).catch((err: Error) => {
      announce(this.listeners, { type: 'error', data: { code: 'KILN_ERR_ENGINE_UNAVAILABLE', at: Date.now(), client: `console: cannot watch lease messages: ${err.message}` } });
    });
    this.watcher = setInterval(() => void this.clients().catch(() => undefined), WATCH_MS);
    this.watcher.unref();
  }

  get epoch(): string {
    return this.engine.epoch ?? '';
  }

  describe(): ConsoleDescription {
    return {
      role: `redis-${this.engine.topology.kind}`,
      address: this.engine.address,
      startedAt: this.startedAt,
      tls: this.engine.topology.tls === true,
      storage: { kind: 'redis', dataDir: null, fsync: null, bytesOnDisk: null, replicas: this.engine.replicasRequired, replicaPolicy: this.engine.replicaPolicy, replicasOnline: this.engine.replicasSeenOnline },
    };
  }

  async figures(): Promise<ConsoleFigures> {
    const [stats, reports] = await Promise.all([this.engine.stats(), this.clients()]);
    const everyone = [...this.known.values(), ...this.departed.values()];
    const errors: Record<string, number> = { ...this.frozen.errors };
    for (const r of everyone) for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] ?? 0) + n;
    // Medians of the last seconds, weighted by how many calls each client saw.
    const recent = (pick: (r: ReportedClient) => { count: number; p50Ms: number }): number => {
      let n = 0;
      let sum = 0;
      for (const r of reports) {
        n += pick(r).count;
        sum += pick(r).count * pick(r).p50Ms;
      }
      return n > 0 ? Math.round((sum / n) * 100) / 100 : 0;
    };
    return {
      sessions: stats.sessions,
      sessionBytes: stats.sessionBytes,
      tombstones: null,
      leases: reports.reduce((n, r) => n + r.leases, 0),
      leaseWaiters: reports.reduce((n, r) => n + r.leaseWaiters, 0),
      connections: reports.length,
      counters: stats.counters,
      requests: everyone.reduce((n, r) => n + r.requests, this.frozen.requests),
      errors,
      commitLatency: addHistograms([this.frozen.commit, ...everyone.map((r) => r.latency.commit)]),
      leaseWait: addHistograms([this.frozen.acquire, ...everyone.map((r) => r.latency.acquire)]),
      recent: {
        commitMsP50: recent((r) => r.recent.commit),
        leaseWaitMsP50: recent((r) => r.recent.acquire),
        commits: reports.reduce((n, r) => n + r.recent.commit.count, 0),
        leaseWaits: reports.reduce((n, r) => n + r.recent.acquire.count, 0),
      },
      clients: reports.map(asConsoleClient),
      storageBytes: null,
      replicasOnline: this.engine.replicasRequired > 0 ? this.engine.replicasSeenOnline : null,
    };
  }

  /** Redis keeps one namespace, `default`: another names no session. */
  async list(options: ListOptions & { namespace?: string }): Promise<ListPage> {
    if (!isDefault(options.namespace)) return { sessions: [], next: null, total: 0 };
    return this.engine.list({ after: options.after, limit: options.limit, prefix: options.prefix });
  }

  /** Pages a slice of the principal's set at a time (SessionStore.principalPage); `next` is opaque. */
  async findByPrincipal(principal: string, options: { limit: number; after?: string; namespace?: string }): Promise<ListPage> {
    if (!isDefault(options.namespace)) return { sessions: [], next: null, total: 0 };
    return this.engine.principalPage(principal, { limit: options.limit, after: options.after });
  }

  async snapshot(sessionId: string, namespace?: string): Promise<SessionSnapshot | null> {
    return isDefault(namespace) ? this.engine.snapshotForAdmin(sessionId) : null;
  }

  async destroy(sessionId: string, namespace?: string): Promise<boolean> {
    return isDefault(namespace) ? this.engine.destroy(sessionId, { reason: 'admin' }) : false;
  }

  async destroyByPrincipal(principal: string, namespace?: string): Promise<number> {
    return isDefault(namespace) ? this.engine.destroyByPrincipal(principal) : 0;
  }

  onEvent(listener: (event: ConsoleEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watcher);
    this.offSessionEvents();
    this.listeners.clear();
  }

  /**
   * The live clients' reports; announces joins, departures and new errors as it notices
   * them. Their error codes are another process's strings, counted under the labels
   * ErrorCodes gives them; their own figures are kept as clientStatsFrom keeps them.
   */
  private clients(): Promise<ReportedClient[]> {
    this.watching ??= this.engine
      .reportedClients()
      .then((raw) => {
        const reports = raw.map((r) => ({ ...r, name: r.name.slice(0, 128), host: r.host.slice(0, 256), app: r.app.slice(0, 128), errors: this.codes.fold(r.errors), stats: clientStatsFrom(r.stats) ?? {} }));
        if (!this.closed) this.notice(reports);
        return reports;
      })
      .finally(() => {
        this.watching = undefined;
      });
    return this.watching;
  }

  private notice(reports: ReportedClient[]): void {
    const now = Date.now();
    const seen = new Set<string>();
    for (const r of reports) {
      seen.add(r.ownerId);
      const wasLive = this.known.has(r.ownerId);
      const before = this.known.get(r.ownerId) ?? this.departed.get(r.ownerId);
      // Reports are cumulative per process; an older one arriving late changes nothing.
      if (before && before.reportedAt > r.reportedAt) continue;
      this.departed.delete(r.ownerId);
      this.known.set(r.ownerId, r);
      if (!wasLive) {
        announce(this.listeners, { type: 'client', data: { type: 'client-joined', client: asConsoleClient(r), at: now } });
      }
      for (const [code, n] of Object.entries(r.errors)) {
        const more = n - (before?.errors[code] ?? 0);
        if (more > 0) announce(this.listeners, { type: 'error', data: { code, count: more, client: r.name, at: now } });
      }
    }
    for (const [ownerId, last] of this.known) {
      if (seen.has(ownerId)) continue;
      this.known.delete(ownerId);
      this.departed.set(ownerId, last);
      announce(this.listeners, { type: 'client', data: { type: 'client-left', client: asConsoleClient(last), at: now } });
    }
    for (const [ownerId, old] of this.departed) {
      if (this.departed.size <= MAX_DEPARTED) break;
      this.departed.delete(ownerId);
      const errors = { ...this.frozen.errors };
      for (const [code, n] of Object.entries(old.errors)) errors[code] = (errors[code] ?? 0) + n;
      this.frozen = {
        requests: this.frozen.requests + old.requests,
        errors,
        commit: addHistograms([this.frozen.commit, old.latency.commit]),
        acquire: addHistograms([this.frozen.acquire, old.latency.acquire]),
      };
    }
  }
}

function isDefault(namespace: string | undefined): boolean {
  return namespace === undefined || namespace === 'default';
}

function asConsoleClient(r: ReportedClient): ConsoleClient {
  return { name: r.name, host: r.host, pid: r.pid, app: r.app, address: r.host, connectedAt: r.connectedAt, ownerId: r.ownerId, leases: r.leases, requests: r.requests, stats: r.stats };
}
