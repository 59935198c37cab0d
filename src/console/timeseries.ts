import { CounterDeltas } from './roster.js';
import type { ConsoleSource } from './source.js';

/**
 * The admin API's /api/timeseries: a sample every SAMPLE_MS for the last hour, so a
 * console opened during an incident has the hour before it. Totals become per-interval
 * differences here; the clients' own counters (HTTP requests, near cache) are summed per
 * client so one leaving does not read as negative traffic.
 */
export interface Sample {
  t: number;
  sessions: number;
  leases: number;
  connections: number;
  commits: number;
  requests: number;
  recalls: number;
  errors: number;
  commitMsP50: number;
  /** HTTP requests the app servers handled (their clients' reports), as opposed to `requests`: protocol messages to the tier. */
  httpRequests: number;
  cacheHits: number;
  cacheMisses: number;
}

export const SAMPLE_MS = 10_000;
const SAMPLES = 360;

export class TimeSeries {
  readonly samples: Sample[] = [];
  private last: { commits: number; requests: number; recalls: number; errors: number } | undefined;
  private readonly sampleDeltas = new CounterDeltas();

  constructor(private readonly source: ConsoleSource) {}

  async sample(): Promise<void> {
    const f = await this.source.figures(SAMPLE_MS);
    const now = {
      commits: f.counters['commits'] ?? 0,
      requests: f.requests,
      recalls: f.counters['leaseRecalls'] ?? 0,
      errors: Object.values(f.errors).reduce((a, b) => a + b, 0),
    };
    const since = this.last ?? now;
    const clients = this.sampleDeltas.next(f.clients);
    this.samples.push({
      t: Date.now(),
      sessions: f.sessions,
      leases: f.leases,
      connections: f.connections,
      commits: Math.max(0, now.commits - since.commits),
      requests: Math.max(0, now.requests - since.requests),
      recalls: Math.max(0, now.recalls - since.recalls),
      errors: Math.max(0, now.errors - since.errors),
      commitMsP50: f.recent.commitMsP50,
      httpRequests: clients.http,
      cacheHits: clients.hits,
      cacheMisses: clients.misses,
    });
    if (this.samples.length > SAMPLES) this.samples.shift();
    this.last = now;
  }
}
