import type { ConsoleClient } from './source.js';

/** How long a client whose connection dropped stays in the overview, marked gone. */
export const GONE_MS = 60_000;
/** Departed clients kept at most (the oldest departures are forgotten first): app servers that reconnect in a loop must not grow the roster while nobody opens the overview. */
export const MAX_GONE = 1000;

/** A client as the overview shows it: with the name an operator knows it by and whether it is still there. */
export type RosterClient = ConsoleClient & { label: string; state: 'live' | 'gone'; goneAt?: number };

/**
 * Who the overview lists. An app server that dies leaves the sources' client lists at
 * once; an operator watching the console during an incident must see it turn red, not
 * vanish, so departed clients are kept for GONE_MS with their last figures. It also
 * sums the clients' own counters (HTTP requests, near-cache hits) across samples so a
 * client leaving does not make the totals go backwards.
 */
export class ClientRoster {
  private readonly gone = new Map<string, RosterClient>();
  private live = new Map<string, ConsoleClient>();

  /**
   * A source's client-left event: the departure at its own time, even when nobody polls
   * the overview meanwhile (its last figures join it at the next update, if they were seen).
   */
  left(client: Partial<ConsoleClient> & { name: string }, at: number): void {
    const last = this.live.get(client.name);
    const known: ConsoleClient = { host: '', pid: 0, app: '', address: '', connectedAt: 0, ownerId: '', leases: 0, requests: 0, stats: null, ...client, ...last };
    this.live.delete(client.name);
    // Map order is insertion order: a name that leaves again moves to the end.
    this.gone.delete(client.name);
    this.gone.set(client.name, { ...asRoster(known), state: 'gone', goneAt: at });
    this.prune(at);
  }

  /** How many departed clients are remembered now. */
  get goneCount(): number {
    return this.gone.size;
  }

  /** Forgets departures older than GONE_MS, then the oldest beyond MAX_GONE. */
  private prune(now: number): void {
    for (const [name, c] of this.gone) if (now - (c.goneAt ?? now) > GONE_MS) this.gone.delete(name);
    for (const name of this.gone.keys()) {
      if (this.gone.size <= MAX_GONE) break;
      this.gone.delete(name);
    }
  }

  /** The clients a source lists now, and those gone in the last GONE_MS (newest departure first). */
  update(clients: readonly ConsoleClient[], now = Date.now()): { live: RosterClient[]; gone: RosterClient[] } {
    const next = new Map(clients.map((c) => [c.name, c]));
    for (const [name, last] of this.live) if (!next.has(name) && !this.gone.has(name)) this.gone.set(name, { ...asRoster(last), state: 'gone', goneAt: now });
    for (const name of next.keys()) this.gone.delete(name);
    this.prune(now);
    this.live = next;
    return { live: clients.map(asRoster), gone: [...this.gone.values()].sort((a, b) => (b.goneAt ?? 0) - (a.goneAt ?? 0)) };
  }
}

function asRoster(c: ConsoleClient): RosterClient {
  return { ...c, label: labelOf(c.name), state: 'live' };
}

/** "app-1-3fa2c1" → "app-1": engines append random hex to the name they were given, so one process is told from its restart. */
export function labelOf(name: string): string {
  return name.replace(/-[0-9a-f]{6,8}$/, '') || name;
}

/** A client's own counters, as it reports them (0 before its first report). */
export function clientCounters(c: ConsoleClient): { http: number; hits: number; misses: number } {
  const stats = c.stats as { counters?: { opens?: unknown }; cache?: { hits?: unknown; misses?: unknown } } | null;
  const n = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0);
  return { http: n(stats?.counters?.opens), hits: n(stats?.cache?.hits), misses: n(stats?.cache?.misses) };
}

/**
 * Growth of the clients' counters since the last call, per client: a client that left
 * takes its total with it, one that restarted under the same name starts again from 0,
 * and neither shows as negative traffic.
 */
export class CounterDeltas {
  private last = new Map<string, { http: number; hits: number; misses: number }>();

  next(clients: readonly ConsoleClient[]): { http: number; hits: number; misses: number } {
    const sum = { http: 0, hits: 0, misses: 0 };
    const seen = new Map<string, { http: number; hits: number; misses: number }>();
    for (const c of clients) {
      const now = clientCounters(c);
      const before = this.last.get(c.name);
      seen.set(c.name, now);
      if (!before) continue; // its first sample: no interval to count over
      for (const k of ['http', 'hits', 'misses'] as const) sum[k] += Math.max(0, now[k] - before[k]);
    }
    this.last = seen;
    return sum;
  }
}
