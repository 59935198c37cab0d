import { attributeBytes } from '../session/model.js';
import type { ConsoleSessionMeta, ConsoleSource } from './source.js';

/**
 * The "largest sessions" view: the biggest sessions with their biggest attributes, and
 * how session sizes spread over fixed buckets, so a team can see what bloats its
 * sessions. The tier may hold a million sessions on the event loop the app servers'
 * commits need, so the scan takes the source's slices one per turn of the loop, and
 * its answer is kept for CACHE_MS, or ten times the scan's duration when that is longer
 * (callers meanwhile share the one scan in flight).
 */
export const CACHE_MS = 15_000;
export const TOP_SESSIONS = 20;
const TOP_ATTRIBUTES = 5;
/** Upper bounds of the size histogram's buckets, in bytes (the last one is open). */
export const SIZE_BUCKETS = [256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304];

export interface SizedSession {
  meta: ConsoleSessionMeta;
  /** Attribute names and value bytes, as the tier counts a session's size. */
  bytes: number;
}

export interface LargestReport {
  computedAt: number;
  /** Milliseconds the scan took (wall time, across its slices). */
  scanMs: number;
  scanned: number;
  totalBytes: number;
  histogram: { le: number | null; count: number }[];
  sessions: { meta: ConsoleSessionMeta; bytes: number; attributes: { name: string; bytes: number }[] }[];
  /** Attribute names over the largest sessions: how many of them carry it and its bytes there. */
  attributes: { name: string; sessions: number; bytes: number }[];
}

/** The pure part: sizes in, histogram and top N out. */
export class SizeTally {
  readonly counts = SIZE_BUCKETS.map(() => 0).concat(0);
  scanned = 0;
  totalBytes = 0;
  /** Largest first; at most `top` entries. */
  readonly largest: SizedSession[] = [];

  constructor(private readonly top = TOP_SESSIONS) {}

  add(s: SizedSession): void {
    this.scanned++;
    this.totalBytes += s.bytes;
    const bucket = SIZE_BUCKETS.findIndex((le) => s.bytes <= le);
    this.counts[bucket < 0 ? SIZE_BUCKETS.length : bucket]!++;
    const l = this.largest;
    if (l.length === this.top && l[l.length - 1]!.bytes >= s.bytes) return;
    let at = l.length;
    while (at > 0 && l[at - 1]!.bytes < s.bytes) at--;
    l.splice(at, 0, s);
    if (l.length > this.top) l.pop();
  }

  histogram(): LargestReport['histogram'] {
    return this.counts.map((count, i) => ({ le: SIZE_BUCKETS[i] ?? null, count }));
  }
}

export class LargestSessions {
  private cached: LargestReport | undefined;
  private running: Promise<LargestReport> | undefined;

  constructor(
    private readonly source: ConsoleSource,
    private readonly cacheMs = CACHE_MS,
  ) {}

  report(): Promise<LargestReport> {
    // A scan that took long (a million sessions, or Redis at one round trip per session) is kept longer, so watching the view costs at most a tenth of the tier's time.
    if (this.cached && Date.now() - this.cached.computedAt < Math.max(this.cacheMs, 10 * this.cached.scanMs)) return Promise.resolve(this.cached);
    this.running ??= this.scan()
      .then((r) => (this.cached = r))
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private async scan(): Promise<LargestReport> {
    const started = Date.now();
    const tally = new SizeTally();
    for await (const slice of this.source.sizes?.() ?? pagedSizes(this.source)) {
      for (const s of slice) tally.add(s);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const sessions: LargestReport['sessions'] = [];
    const names = new Map<string, { sessions: number; bytes: number }>();
    for (const s of tally.largest) {
      // One session's bytes per turn, as the inspector reads them.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const snapshot = await this.source.snapshot(s.meta.id, s.meta.namespace);
      if (!snapshot) continue; // destroyed since the scan saw it
      const attributes = [...snapshot.attributes].map(([name, value]) => ({ name, bytes: name.length + value.length })).sort((a, b) => b.bytes - a.bytes);
      for (const a of attributes) {
        const n = names.get(a.name) ?? { sessions: 0, bytes: 0 };
        n.sessions++;
        n.bytes += a.bytes;
        names.set(a.name, n);
      }
      sessions.push({ meta: s.meta, bytes: s.bytes, attributes: attributes.slice(0, TOP_ATTRIBUTES) });
    }
    return {
      computedAt: Date.now(),
      scanMs: Date.now() - started,
      scanned: tally.scanned,
      totalBytes: tally.totalBytes,
      histogram: tally.histogram(),
      sessions,
      attributes: [...names].map(([name, n]) => ({ name, ...n })).sort((a, b) => b.bytes - a.bytes).slice(0, TOP_SESSIONS),
    };
  }
}

/** Sessions listed per page of a paged size scan, and read at once within it. */
const SIZE_PAGE = 500;
const SIZE_PARALLEL = 50;

/**
 * Sizes for a source without sizes() (Redis: one round trip per session): a page of
 * list() at a time, each session read through snapshot(), SIZE_PARALLEL at once.
 */
export async function* pagedSizes(source: ConsoleSource): AsyncGenerator<SizedSession[]> {
  let after: string | undefined;
  for (;;) {
    const page = await source.list({ after, limit: SIZE_PAGE });
    const slice: SizedSession[] = [];
    for (let i = 0; i < page.sessions.length; i += SIZE_PARALLEL) {
      const metas = page.sessions.slice(i, i + SIZE_PARALLEL);
      const snapshots = await Promise.all(metas.map((m) => source.snapshot(m.id, m.namespace)));
      snapshots.forEach((s, j) => {
        if (s) slice.push({ meta: metas[j]!, bytes: attributeBytes(s.attributes) });
      });
    }
    if (slice.length > 0) yield slice;
    if (page.next === null) return;
    after = page.next;
  }
}
