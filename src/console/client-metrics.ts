import { Registry } from 'prom-client';
import type { SessionClient } from '../client/session-client.js';
import { mirroredCounter, readGauge } from './prometheus.js';

/**
 * Prometheus metrics of one app server's Kiln client, to serve from the app itself.
 *
 * @example
 * import { clientMetrics } from 'kiln/metrics';
 * const metrics = clientMetrics(sessions.client);
 * app.get('/metrics', async (_req, res) => res.type(metrics.contentType).send(await metrics.metrics()));
 */
export function clientMetrics(client: SessionClient, registry = new Registry()): Registry {
  const c = () => client.stats().counters;
  const cache = () => client.stats().cache;
  mirroredCounter(registry, 'kiln_client_cache_hits_total', 'Requests served from the near cache', () => cache().hits);
  mirroredCounter(registry, 'kiln_client_cache_misses_total', 'Requests that had to load or acquire the session', () => cache().misses);
  mirroredCounter(registry, 'kiln_client_cache_evictions_total', 'Sessions evicted from the near cache', () => cache().evictions);
  readGauge(registry, 'kiln_client_cache_entries', 'Sessions in the near cache', () => cache().entries);
  readGauge(registry, 'kiln_client_cache_bytes', 'Bytes in the near cache', () => cache().bytes);
  readGauge(registry, 'kiln_client_leases', 'Leases this process holds', () => client.stats().leases);
  mirroredCounter(registry, 'kiln_client_commits_total', 'Commits sent', () => c().commits);
  mirroredCounter(registry, 'kiln_client_commit_bytes_total', 'Attribute bytes sent by commits', () => c().commitBytes);
  mirroredCounter(registry, 'kiln_client_empty_commits_total', 'Requests that changed nothing (nothing sent)', () => c().emptyCommits);
  mirroredCounter(registry, 'kiln_client_commit_retries_total', 'Commits resent under a new lease', () => c().commitRetries);
  mirroredCounter(registry, 'kiln_client_pipelined_commits_total', 'Final commits that let the next request on their session start before the acknowledgement', () => c().pipelinedCommits);
  mirroredCounter(registry, 'kiln_client_overwrites_in_place_total', 'Large session values a commit changed in place in the near cache instead of copying them', () => c().overwritesInPlace);
  mirroredCounter(registry, 'kiln_client_lease_acquires_total', 'Leases acquired', () => c().acquires);
  mirroredCounter(registry, 'kiln_client_handovers_total', 'Leases handed over on recall', () => c().handovers);
  mirroredCounter(registry, 'kiln_client_revocations_total', 'Leases revoked by the tier', () => c().revocations);
  mirroredCounter(registry, 'kiln_client_async_commit_errors_total', 'Write-behind commits that failed', () => c().asyncCommitErrors);
  return registry;
}
