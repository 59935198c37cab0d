import { MessageType } from '../protocol/messages.js';
import type { KilnServer } from '../server/kiln-server.js';
import type { ListOptions, ListPage } from '../engines/engine.js';
import type { SessionMeta, SessionSnapshot } from '../session/model.js';
import { LatencyRecorder } from '../util/latency.js';
import { announce, type ConsoleDescription, type ConsoleEvent, type ConsoleFigures, type ConsoleSource } from './source.js';

/**
 * The console's view of a kiln server, in the server's own process: figures come from
 * the tier's counters, latencies and errors from the requests the server answers (timed
 * only while someone watches, which this source does).
 */
export class KilnServerSource implements ConsoleSource {
  readonly kind = 'kiln';
  private readonly listeners = new Set<(event: ConsoleEvent) => void>();
  private readonly unsubscribe: (() => void)[] = [];
  private readonly commitLatency = new LatencyRecorder();
  private readonly leaseWait = new LatencyRecorder();
  private readonly errors: Record<string, number> = {};
  private requests = 0;

  constructor(private readonly server: KilnServer) {
    const tier = server.tier;
    this.unsubscribe.push(
      tier.onEvent((data) => announce(this.listeners, { type: 'session', data })),
      tier.onLeaseActivity((data) => announce(this.listeners, { type: 'lease', data })),
      server.onActivity((e) => {
        if (e.type !== 'request') {
          announce(this.listeners, { type: 'client', data: e });
          return;
        }
        this.requests++;
        if (e.code) {
          this.errors[e.code] = (this.errors[e.code] ?? 0) + 1;
          if (this.listeners.size > 0) announce(this.listeners, { type: 'error', data: { code: e.code, request: e.message, at: e.at } });
        } else if (e.message === MessageType.Commit) this.commitLatency.observe(e.ms, e.at);
        else if (e.message === MessageType.Acquire) this.leaseWait.observe(e.ms, e.at);
      }),
    );
  }

  get epoch(): string {
    return this.server.tier.epoch;
  }

  describe(): ConsoleDescription {
    const info = this.server.info();
    const storage = this.server.storageInfo();
    return {
      role: 'standalone',
      address: `${info.host}:${info.port}`,
      startedAt: info.startedAt,
      tls: info.tls,
      storage: storage
        ? { kind: 'kiln-log', dataDir: storage.dataDir, fsync: storage.fsync, bytesOnDisk: storage.bytesOnDisk }
        : { kind: 'memory', dataDir: null, fsync: null, bytesOnDisk: 0 },
    };
  }

  async figures(recentWindowMs = 5000): Promise<ConsoleFigures> {
    const stats = this.server.tier.stats();
    return {
      sessions: stats.sessions,
      sessionBytes: stats.sessionBytes,
      tombstones: stats.tombstones,
      leases: stats.leases,
      leaseWaiters: stats.leaseWaiters,
      connections: this.server.connectionCount,
      counters: { ...stats.counters } as unknown as Record<string, number>,
      requests: this.requests,
      errors: { ...this.errors },
      commitLatency: this.commitLatency.snapshot(),
      leaseWait: this.leaseWait.snapshot(),
      recent: { commitMsP50: this.commitLatency.recent(recentWindowMs).p50Ms, leaseWaitMsP50: this.leaseWait.recent(recentWindowMs).p50Ms },
      clients: this.server.clients(),
      storageBytes: this.server.storageInfo()?.bytesOnDisk ?? 0, // no storage: nothing on disk
    };
  }

  async list(options: ListOptions): Promise<ListPage> {
    return this.server.tier.list(options);
  }

  async findByPrincipal(principal: string): Promise<SessionMeta[]> {
    return this.server.tier.findByPrincipal(principal);
  }

  async snapshot(sessionId: string): Promise<SessionSnapshot | null> {
    return this.server.tier.snapshotForAdmin(sessionId);
  }

  destroy(sessionId: string): Promise<boolean> {
    return this.server.tier.destroy(null, sessionId, 'admin');
  }

  destroyByPrincipal(principal: string): Promise<number> {
    return this.server.tier.destroyByPrincipal(principal);
  }

  onEvent(listener: (event: ConsoleEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe) off();
    this.listeners.clear();
  }
}
