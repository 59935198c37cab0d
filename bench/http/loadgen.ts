/**
 * The load generator of the HTTP benchmark, in a process of its own (pinned to the
 * other core than the app): autocannon against one URL, cookies assigned per request.
 * Takes a JSON LoadSpec as its argument, prints one JSON LoadResult line.
 */
import autocannon from 'autocannon';

export type Workload = 'read-mostly' | 'write' | 'big-write' | 'incr';

export interface LoadSpec {
  url: string;
  workload: Workload;
  /** Session cookies; each request takes the next one (one = a session shared by all connections). */
  cookies: string[];
  connections: number;
  /** Seconds of load, after one request per cookie and warmupSec of the same load, neither measured. */
  durationSec?: number;
  warmupSec?: number;
  /** A fixed number of requests instead of a duration (the lost-update check). */
  amount?: number;
}

export interface LoadResult {
  requests: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
}

/** One write in ten for read-mostly: each connection cycles through this sequence. */
function sequence(workload: Workload): { method: 'GET' | 'POST'; path: string }[] {
  switch (workload) {
    case 'read-mostly':
      return [...Array.from({ length: 9 }, () => ({ method: 'GET' as const, path: '/read' })), { method: 'POST', path: '/write' }];
    case 'write':
      return [{ method: 'POST', path: '/write' }];
    case 'big-write':
      return [{ method: 'POST', path: '/big-write' }];
    case 'incr':
      return [{ method: 'POST', path: '/incr' }];
  }
}

/**
 * One autocannon run: for `seconds`, or `amount` requests. `sampleMs` is how often it
 * samples, and so when a run of `amount` requests may end: keep 1000 where
 * requests.average is read (per-second samples).
 */
function run(spec: LoadSpec, seconds: number | undefined, amount = spec.amount, sampleMs = 1000): Promise<autocannon.Result> {
  let next = 0;
  const cookies = spec.cookies;
  const requests = sequence(spec.workload).map((r) => ({
    ...r,
    setupRequest: (req: autocannon.Request) => {
      const cookie = cookies.length > 0 ? cookies[next++ % cookies.length] : undefined;
      return cookie ? { ...req, headers: { ...req.headers, cookie } } : req;
    },
  }));
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: spec.url,
        // autocannon refuses more connections than requests.
        connections: amount !== undefined ? Math.min(spec.connections, amount) : spec.connections,
        sampleInt: sampleMs,
        ...(amount !== undefined ? { amount } : { duration: seconds ?? 5 }),
        requests,
      },
      (err: Error | null, result: autocannon.Result) => (err ? reject(err) : resolve(result)),
    );
  });
}

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
if (spec.warmupSec && spec.amount === undefined) {
  // Every session once first, then the warm-up proper: a session's first request (Kiln's
  // first lease and decode of it) is set-up, not the steady state measured, and a slow
  // system's warm-up second may not reach all 1,000 sessions; the steady path then warms
  // up (compiles) before the measured window too. Sampled every 10 ms, the first pass
  // ends when its requests do instead of at the next whole second.
  if (spec.cookies.length > 1) await run(spec, undefined, spec.cookies.length, 10);
  await run(spec, spec.warmupSec);
}
// The runner reads the app's and the store's counters now, then says go: the warm-up's
// work is not counted.
process.stdout.write('ready\n');
await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()).resume());
const result = await run(spec, spec.durationSec);
const out: LoadResult = {
  requests: result.requests.total,
  requestsPerSecond: spec.amount !== undefined ? result.requests.total / (result.duration || 1) : result.requests.average,
  p50Ms: result.latency.p50,
  p99Ms: result.latency.p99,
  non2xx: result.non2xx,
  errors: result.errors + result.timeouts,
};
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
