import { Counter, Gauge, type Registry } from 'prom-client';

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
