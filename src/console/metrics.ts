import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { mirroredCounter, readGauge } from './prometheus.js';
import { MessageType } from '../protocol/messages.js';
import type { KilnServer } from '../server/kiln-server.js';

/**
 * Prometheus metrics of a kiln server (prom-client). Totals are read from the tier's own
 * counters at scrape time (one source of truth); latencies are observed as requests are
 * answered, only while metrics are enabled.
 */
export class ServerMetrics {
  readonly registry = new Registry();
  private readonly stop: () => void;

  constructor(server: KilnServer) {
    const tier = server.tier;
    const totals: [string, string, string][] = [
      ['kiln_sessions_created_total', 'Sessions created', 'created'],
      ['kiln_sessions_expired_total', 'Sessions expired', 'expired'],
      ['kiln_sessions_destroyed_total', 'Sessions destroyed', 'destroyed'],
      ['kiln_commits_total', 'Commits applied', 'commits'],
      ['kiln_commit_bytes_total', 'Attribute bytes written by commits', 'commitBytes'],
      ['kiln_commits_duplicate_total', 'Retried commits acknowledged again', 'duplicateCommits'],
      ['kiln_commits_rejected_total', 'Commits refused (conflict, lease lost, limits, destroyed)', 'rejectedCommits'],
      ['kiln_touches_total', 'Access-time touches applied', 'touches'],
      ['kiln_lease_grants_total', 'Leases granted', 'leaseGrants'],
      ['kiln_lease_recalls_total', 'Recalls sent to lease holders', 'leaseRecalls'],
      ['kiln_lease_handovers_total', 'Leases handed from one process to another', 'leaseHandovers'],
      ['kiln_lease_revocations_total', 'Leases revoked after an overrun recall deadline', 'leaseRevocations'],
      ['kiln_lease_pingpong_grants_total', 'Grants marked release-after-use (ping-pong)', 'pingPongGrants'],
    ];
    for (const [name, help, key] of totals) mirroredCounter(this.registry, name, help, () => (tier.stats().counters as unknown as Record<string, number>)[key] ?? 0);
    readGauge(this.registry, 'kiln_sessions', 'Live sessions', () => tier.stats().sessions);
    readGauge(this.registry, 'kiln_session_bytes', 'Attribute bytes held', () => tier.stats().sessionBytes);
    readGauge(this.registry, 'kiln_tombstones', 'Tombstones of destroyed sessions', () => tier.stats().tombstones);
    readGauge(this.registry, 'kiln_leases', 'Leases held', () => tier.stats().leases);
    readGauge(this.registry, 'kiln_lease_waiters', 'Processes waiting for a lease', () => tier.stats().leaseWaiters);
    readGauge(this.registry, 'kiln_connections', 'Client connections', () => server.connectionCount);
    readGauge(this.registry, 'kiln_storage_bytes', 'Bytes of log on disk', () => server.storageInfo()?.bytesOnDisk ?? 0);
    // What each app server's client last reported (near cache), labelled by client.
    for (const [name, help, key] of [
      ['kiln_client_cache_hits', 'Near-cache hits reported by each client', 'hits'],
      ['kiln_client_cache_misses', 'Near-cache misses reported by each client', 'misses'],
      ['kiln_client_cache_evictions', 'Near-cache evictions reported by each client', 'evictions'],
    ] as const) {
      new Gauge({
        name,
        help,
        labelNames: ['client'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const c of server.clients()) {
            const cache = (c.stats as { cache?: Record<string, number> } | null)?.cache;
            if (cache) this.set({ client: c.name }, cache[key] ?? 0);
          }
        },
      });
    }

    const commitSeconds = new Histogram({ name: 'kiln_commit_duration_seconds', help: 'Commit latency on the server, receipt to acknowledgement (includes fsync)', buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25], registers: [this.registry] });
    const leaseWait = new Histogram({ name: 'kiln_lease_wait_seconds', help: 'Time from an acquire to its grant', buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [this.registry] });
    const errors = new Counter({ name: 'kiln_errors_total', help: 'Requests answered with an error, by code', labelNames: ['code'], registers: [this.registry] });
    const requests = new Counter({ name: 'kiln_requests_total', help: 'Requests answered', registers: [this.registry] });
    this.stop = server.onActivity((event) => {
      if (event.type !== 'request') return;
      requests.inc();
      if (event.code) errors.inc({ code: event.code });
      if (event.message === MessageType.Commit && !event.code) commitSeconds.observe(event.ms / 1000);
      if (event.message === MessageType.Acquire && !event.code) leaseWait.observe(event.ms / 1000);
    });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.stop();
  }
}
