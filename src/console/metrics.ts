import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { figure } from '../protocol/client-stats.js';
import { ErrorCodes } from './error-codes.js';
import { mirroredCounter, optionalGauge, readGauge, snapshotHistogram } from './prometheus.js';
import type { ConsoleFigures, ConsoleSource } from './source.js';

/**
 * Prometheus metrics of a session tier (prom-client), for a kiln server or, through
 * `kiln console`, a Redis tier. Each scrape reads the source's figures once; totals
 * mirror the tier's own counters (one source of truth), latencies come as histograms the
 * source keeps.
 *
 * @example
 * const metrics = new ServerMetrics(new KilnServerSource(server));
 * res.end(await metrics.text());
 */
export class ServerMetrics {
  readonly registry = new Registry();
  private current: ConsoleFigures | undefined;
  private scraping: Promise<string> | undefined;

  constructor(private readonly source: ConsoleSource) {
    const f = (): ConsoleFigures => {
      if (!this.current) throw new Error('ServerMetrics: figures are read in text()');
      return this.current;
    };
    const totals: [string, string, string][] = [
      ['kiln_sessions_created_total', 'Sessions created', 'created'],
      ['kiln_sessions_expired_total', 'Sessions expired', 'expired'],
      ['kiln_sessions_destroyed_total', 'Sessions destroyed', 'destroyed'],
      ['kiln_commits_total', 'Commits applied', 'commits'],
      ['kiln_commit_bytes_total', 'Attribute bytes written by commits', 'commitBytes'],
      ['kiln_commits_duplicate_total', 'Retried commits acknowledged again', 'duplicateCommits'],
      ['kiln_commits_rejected_total', 'Commits refused (conflict, lease lost, limits, destroyed)', 'rejectedCommits'],
      ['kiln_session_limit_refusals_total', 'Creates and logins refused by --max-sessions or --max-sessions-per-principal', 'sessionLimitRefusals'],
      ['kiln_lease_limit_refusals_total', 'Acquires refused by --max-leases-per-connection', 'leaseLimitRefusals'],
      ['kiln_touches_total', 'Access-time touches applied', 'touches'],
      ['kiln_lease_grants_total', 'Leases granted', 'leaseGrants'],
      ['kiln_lease_recalls_total', 'Recalls sent to lease holders', 'leaseRecalls'],
      ['kiln_lease_handovers_total', 'Leases handed from one process to another', 'leaseHandovers'],
      ['kiln_lease_revocations_total', 'Leases revoked after an overrun recall deadline', 'leaseRevocations'],
      ['kiln_lease_pingpong_grants_total', 'Grants marked release-after-use (ping-pong)', 'pingPongGrants'],
      ['kiln_commits_under_replicated_total', 'Redis: commits acknowledged with fewer replicas than asked (replicaPolicy best-effort)', 'underReplicatedCommits'],
    ];
    for (const [name, help, key] of totals) mirroredCounter(this.registry, name, help, () => f().counters[key] ?? 0);
    mirroredCounter(this.registry, 'kiln_requests_total', 'Requests the tier answered (kiln server) or app servers sent it (Redis)', () => f().requests);
    readGauge(this.registry, 'kiln_sessions', 'Live sessions', () => f().sessions);
    readGauge(this.registry, 'kiln_session_bytes', 'Attribute bytes held', () => f().sessionBytes);
    readGauge(this.registry, 'kiln_leases', 'Leases held', () => f().leases);
    readGauge(this.registry, 'kiln_lease_waiters', 'Processes waiting for a lease', () => f().leaseWaiters);
    readGauge(this.registry, 'kiln_connections', 'App server connections (kiln server) or live reporting clients (Redis)', () => f().connections);
    // Figures a source may not have (Redis: counting tombstones would need a scan).
    optionalGauge(this.registry, 'kiln_tombstones', 'Tombstones of destroyed sessions', () => f().tombstones);
    optionalGauge(this.registry, 'kiln_storage_bytes', 'Bytes of log on disk', () => f().storageBytes);
    optionalGauge(this.registry, 'kiln_storage_backlog_bytes', 'Bytes of log waiting to be written (commits are refused at --max-log-backlog-bytes)', () => f().storageBacklog?.bytes ?? null);
    optionalGauge(this.registry, 'kiln_storage_stalled_seconds', 'How long the oldest outstanding log write or sync has waited (commits are refused at --log-stall-ms)', () => (f().storageBacklog ? f().storageBacklog!.stalledMs / 1000 : null));
    optionalGauge(this.registry, 'kiln_storage_compaction_seconds', 'How long the compaction now running has taken (0 when none is); a snapshot waiting on a hung disk shows here', () => (f().storageBacklog ? f().storageBacklog!.compactingMs / 1000 : null));
    optionalGauge(this.registry, 'kiln_storage_refusing', '1 while commits are refused because the log is behind its disk', () => (f().storageBacklog ? (f().storageBacklog!.refusing ? 1 : 0) : null));
    optionalGauge(this.registry, 'kiln_redis_replicas_online', 'Redis: replicas the master has online (a commit asks for `replicas` of them)', () => f().replicasOnline ?? null);
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
          for (const c of f().clients) {
            // Reported by the app server: a gauge set to anything but a number would fail the scrape.
            const cache = (c.stats as { cache?: unknown } | null)?.cache;
            if (typeof cache === 'object' && cache !== null) this.set({ client: c.name }, figure((cache as Record<string, unknown>)[key]));
          }
        },
      });
    }
    const seenErrors = new Map<string, number>();
    // One series per code for as long as the process runs: only well-formed codes, and a bounded number of them.
    const codes = new ErrorCodes();
    new Counter({
      name: 'kiln_errors_total',
      help: 'Failed requests, by error code (codes past the first 64 distinct ones, or not of the KILN_ERR_ form, as "other")',
      labelNames: ['code'],
      registers: [this.registry],
      collect() {
        for (const [code, n] of Object.entries(codes.fold(f().errors))) {
          const seen = seenErrors.get(code) ?? 0;
          if (n > seen) this.inc({ code }, n - seen);
          seenErrors.set(code, Math.max(seen, n));
        }
      },
    });
    // The serving process itself (memory, CPU, event-loop lag, GC): the kiln server, or the Redis console.
    collectDefaultMetrics({ register: this.registry });
    snapshotHistogram(this.registry, 'kiln_commit_duration_seconds', 'Commit latency: receipt to acknowledgement on a kiln server (includes fsync); call to acknowledgement in the app servers on Redis (includes the network and WAIT)', () => f().commitLatency);
    snapshotHistogram(this.registry, 'kiln_lease_wait_seconds', 'Time from an acquire to its grant', () => f().leaseWait);
  }

  /** The text format; scrapes that arrive while one runs share its answer. */
  text(): Promise<string> {
    this.scraping ??= (async () => {
      try {
        this.current = await this.source.figures();
        return await this.registry.metrics();
      } finally {
        this.current = undefined;
        this.scraping = undefined;
      }
    })();
    return this.scraping;
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
