import { Counter, Gauge, type Registry } from 'prom-client';
import type { HistogramSnapshot } from '../util/latency.js';

/**
 * A Prometheus counter that mirrors a monotonic figure kept elsewhere (tier or client
 * counters): at each scrape it adds what the figure grew by, so the figure stays the one
 * source of truth.
 */
export function mirroredCounter(registry: Registry, name: string, help: string, read: () => number): Counter {
  let seen = 0;
  const counter: Counter = new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const value = read();
      if (value > seen) counter.inc(value - seen);
      seen = Math.max(seen, value);
    },
  });
  return counter;
}

export function readGauge(registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/**
 * A gauge for a figure some sources cannot give (null): then it has no sample at all,
 * rather than a misleading zero.
 */
export function optionalGauge(registry: Registry, name: string, help: string, read: () => number | null): void {
  registry.registerMetric({
    name,
    help,
    type: 'gauge',
    get() {
      const value = read();
      return { name, help, type: 'gauge', values: value === null ? [] : [{ labels: {}, value }], aggregator: 'sum' };
    },
  } as unknown as Parameters<Registry['registerMetric']>[0]);
}

/**
 * A Prometheus histogram whose buckets are read from a snapshot at scrape time: the
 * latencies are recorded elsewhere (the console source, or app processes that report
 * theirs), in milliseconds; Prometheus gets seconds.
 */
export function snapshotHistogram(registry: Registry, name: string, help: string, read: () => HistogramSnapshot): void {
  registry.registerMetric({
    name,
    help,
    type: 'histogram',
    get() {
      const s = read();
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
      let cumulative = 0;
      s.boundsMs.forEach((boundMs, i) => {
        cumulative += s.counts[i] ?? 0;
        values.push({ metricName: `${name}_bucket`, labels: { le: boundMs / 1000 }, value: cumulative });
      });
      cumulative += s.counts[s.boundsMs.length] ?? 0;
      values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, value: cumulative });
      values.push({ metricName: `${name}_sum`, labels: {}, value: s.sumMs / 1000 });
      values.push({ metricName: `${name}_count`, labels: {}, value: s.count });
      return { name, help, type: 'histogram', values, aggregator: 'sum' };
    },
  } as unknown as Parameters<Registry['registerMetric']>[0]);
}
