/**
 * Latencies as a Prometheus-style histogram (fixed buckets, cumulative totals that only
 * grow) plus the median of the last few seconds, for the console's live charts. Cheap
 * enough for the commit path: one bucket search and two typed-array writes per call.
 *
 * @example
 * const commits = new LatencyRecorder();
 * const started = performance.now();
 * await engine.commit(request);
 * commits.observe(performance.now() - started);
 * commits.snapshot(); // { boundsMs, counts, sumMs, count }
 */

/** Upper bounds in milliseconds, the same for every Kiln latency (server and clients), so snapshots add up. */
export const LATENCY_BOUNDS_MS: readonly number[] = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000];

export interface HistogramSnapshot {
  boundsMs: readonly number[];
  /** Observations per bucket (not cumulative); one more entry than boundsMs: the +Inf bucket. */
  counts: number[];
  sumMs: number;
  count: number;
}

const RECENT = 1024;

export class LatencyRecorder {
  private readonly counts = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  private sumMs = 0;
  private count = 0;
  private readonly recentMs = new Float64Array(RECENT);
  private readonly recentAt = new Float64Array(RECENT);
  private next = 0;

  observe(ms: number, at = Date.now()): void {
    let i = 0;
    while (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]!) i++;
    this.counts[i]!++;
    this.sumMs += ms;
    this.count++;
    this.recentMs[this.next] = ms;
    this.recentAt[this.next] = at;
    this.next = (this.next + 1) % RECENT;
  }

  snapshot(): HistogramSnapshot {
    return { boundsMs: LATENCY_BOUNDS_MS, counts: [...this.counts], sumMs: this.sumMs, count: this.count };
  }

  /** How many observations the last `windowMs` saw (up to the last 1,024) and their median. */
  recent(windowMs = 5000, now = Date.now()): { count: number; p50Ms: number } {
    const since = now - windowMs;
    const values: number[] = [];
    for (let i = 0; i < RECENT; i++) if (this.recentAt[i]! >= since && this.recentAt[i]! > 0) values.push(this.recentMs[i]!);
    return { count: values.length, p50Ms: median(values) };
  }
}

/** The middle value (the upper one of an even count), rounded to 0.01 ms; 0 when there is none. */
export function median(values: number[]): number {
  if (values.length === 0) return 0;
  values.sort((a, b) => a - b);
  return Math.round(values[Math.floor(values.length / 2)]! * 100) / 100;
}

/** Adds histogram snapshots bucket by bucket (snapshots with other bounds are skipped). */
export function addHistograms(snapshots: Iterable<HistogramSnapshot>): HistogramSnapshot {
  const total: HistogramSnapshot = { boundsMs: LATENCY_BOUNDS_MS, counts: new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0), sumMs: 0, count: 0 };
  for (const s of snapshots) {
    if (!isHistogramSnapshot(s)) continue;
    for (let i = 0; i < total.counts.length; i++) total.counts[i]! += s.counts[i]!;
    total.sumMs += s.sumMs;
    total.count += s.count;
  }
  return total;
}

/** Whether a value (from another process's report) is a snapshot with our bounds. */
export function isHistogramSnapshot(value: unknown): value is HistogramSnapshot {
  const s = value as HistogramSnapshot | null;
  return (
    typeof s === 'object' &&
    s !== null &&
    Array.isArray(s.counts) &&
    s.counts.length === LATENCY_BOUNDS_MS.length + 1 &&
    s.counts.every((n) => Number.isFinite(n) && n >= 0) &&
    Array.isArray(s.boundsMs) &&
    s.boundsMs.length === LATENCY_BOUNDS_MS.length &&
    s.boundsMs.every((b, i) => b === LATENCY_BOUNDS_MS[i]) &&
    Number.isFinite(s.sumMs) &&
    Number.isFinite(s.count)
  );
}
