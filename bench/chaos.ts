/**
 * `npm run chaos`: the whole system under load while its processes are killed, frozen
 * and failed over, then every cart checked against what was acknowledged.
 *
 * Two phases on loopback, each a `kiln demo` (balancer, app servers under supervision):
 *   1. on a kiln server: random SIGKILL and SIGSTOP/SIGCONT of app servers and of the kiln server;
 *   2. on Redis Sentinel (master, replica, 3 sentinels; commits wait for the replica):
 *      the same for app servers, plus Sentinel failovers.
 * Shoppers add unique items to their carts through the balancer and remember every add
 * that was answered 200; a burst of 50 adds races on one shared cart now and then. At the
 * end every cart is read back: an acknowledged item missing, or an item applied twice,
 * fails the run (exit 1). Printed: acknowledged adds, missing, duplicated, errors by
 * status, the longest outage (no successful add anywhere), and what the chaos did.
 *
 *   npm run chaos -- [--duration 180] [--shoppers 40] [--seed 7] [--phases kiln,redis] [--json]
 */
import { startDemo as startDemoProcess } from '../test/helpers/demo.js';
import { startSentinel, redisCli, type SentinelDeployment } from '../test/helpers/redis.js';

interface Options { durationSec: number; shoppers: number; seed: number; phases: ('kiln' | 'redis')[]; json: boolean }

export interface PhaseResult {
  phase: 'kiln' | 'redis';
  seconds: number;
  acknowledged: number;
  missing: number;
  duplicated: number;
  /** Items in a cart whose add was not answered 200 (applied, answer lost): allowed, reported. */
  unacknowledgedApplied: number;
  /** Items in a cart nobody ever sent (a state that never existed): fails the run. */
  invented: number;
  errors: Record<string, number>;
  longestOutageMs: number;
  chaos: Record<string, number>;
  examples: string[];
}

const REQUEST_TIMEOUT_MS = 20_000;

function parseOptions(argv: string[]): Options {
  const value = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  };
  const int = (name: string, fallback: number, min: number): number => {
    const raw = value(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer of at least ${min} (got ${raw})`);
    return n;
  };
  const phases = (value('phases') ?? 'kiln,redis').split(',') as Options['phases'];
  for (const p of phases) if (p !== 'kiln' && p !== 'redis') throw new Error(`--phases takes kiln and redis (got ${p})`);
  return { durationSec: int('duration', 180, 6), shoppers: int('shoppers', 40, 1), seed: int('seed', Date.now() % 100_000, 0), phases, json: argv.includes('--json') };
}

/** A small deterministic random source: a failing run replays with its --seed. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `kiln demo` as a child: its balancer URL and the current pid of each process it supervises. */
interface Demo { url: string; pids: Map<string, number>; output(): string; stop(): Promise<void> }

/** The tests' `kiln demo` (test/helpers/demo.ts), with the pids kept current as the demo restarts what the chaos kills. */
async function startDemo(engine: string | undefined, log: (line: string) => void): Promise<Demo> {
  const demo = await startDemoProcess(engine ? ['--engine', engine] : []);
  const pids = new Map<string, number>();
  for (const [name, node] of demo.nodes) if (node.role === 'kiln server' || node.role === 'app server') pids.set(name, node.pid);
  demo.child.stdout!.on('data', (d: Buffer) => {
    const text = d.toString();
    for (const m of text.matchAll(/kiln demo: (\S+(?: server)?) is back \(pid (\d+)/g)) pids.set(m[1] === 'kiln server' ? 'server' : m[1]!, Number(m[2]));
    for (const line of text.split('\n')) if (/exited|restarting|is back|did not come back/.test(line)) log(`  ${line.trim()}`);
  });
  return {
    url: demo.url,
    pids,
    output: demo.output,
    async stop() {
      // Wake anything left frozen, or the demo waits on it.
      for (const pid of pids.values()) signal(pid, 'SIGCONT');
      await demo.stop();
    },
  };
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

interface Cart { cookie: string; skus: string[] }

class Shoppers {
  readonly carts: Cart[] = [];
  readonly errors: Record<string, number> = {};
  acknowledged = 0;
  /** Every sku ever sent, answered or not. */
  readonly sent = new Set<string>();
  private lastSuccess = 0;
  longestOutageMs = 0;
  /** When the longest outage began (epoch ms): the chaos log's times say what caused it. */
  longestOutageFrom = 0;
  private stopped = false;
  private serial = 0;

  constructor(private readonly url: string) {}

  private outage(now: number): void {
    if (this.lastSuccess > 0 && now - this.lastSuccess > this.longestOutageMs) {
      this.longestOutageMs = now - this.lastSuccess;
      this.longestOutageFrom = this.lastSuccess;
    }
  }

  /** One add; records the cookie it was made under and the item when answered 200. */
  async add(cart: Cart): Promise<void> {
    const sku = `i${++this.serial}`;
    this.sent.add(sku);
    try {
      const res = await fetch(`${this.url}/api/cart`, { method: 'POST', headers: { 'content-type': 'application/json', ...(cart.cookie ? { cookie: cart.cookie } : {}) }, body: JSON.stringify({ sku, qty: 1 }), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      const body = await res.text();
      if (res.status !== 200) {
        // By status and the error's code, so a report says what failed, not only how.
        const code = /"code":"([A-Z_]+)"/.exec(body)?.[1];
        const key = code ? `${res.status} ${code}` : String(res.status);
        this.errors[key] = (this.errors[key] ?? 0) + 1;
        return;
      }
      const set = res.headers.getSetCookie().map((c) => c.split(';')[0]!).find((c) => c.startsWith('connect.sid='));
      if (set && set !== cart.cookie) {
        // A new session (the first add, or the old one gone): a new cart to check.
        if (cart.cookie) this.carts.push({ cookie: cart.cookie, skus: cart.skus.splice(0) });
        cart.cookie = set;
      }
      cart.skus.push(sku);
      this.acknowledged++;
      const now = Date.now();
      this.outage(now);
      this.lastSuccess = now;
    } catch (err) {
      const code = (err as { name?: string }).name === 'TimeoutError' ? 'timeout' : 'network';
      this.errors[code] = (this.errors[code] ?? 0) + 1;
    }
  }

  async shop(): Promise<void> {
    const cart: Cart = { cookie: '', skus: [] };
    while (!this.stopped) await this.add(cart);
    this.carts.push(cart);
  }

  /** 50 adds at once on one cart. */
  async race(cart: Cart): Promise<void> {
    await Promise.all(Array.from({ length: 50 }, () => this.add(cart)));
  }

  stop(): void {
    this.stopped = true;
    this.outage(Date.now());
  }
}

async function readCart(url: string, cookie: string): Promise<{ sku: string; qty: number }[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const res = await fetch(`${url}/api/cart`, { headers: { cookie }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      if (res.status === 200) return ((await res.json()) as { items: { sku: string; qty: number }[] }).items;
    } catch {
      // the cluster is settling
    }
    if (Date.now() > deadline) throw new Error(`cannot read the cart of ${cookie.slice(0, 24)}… after the run`);
    await sleep(500);
  }
}

async function runPhase(phase: 'kiln' | 'redis', seconds: number, o: Options, rand: () => number, print: (line: string) => void): Promise<PhaseResult> {
  // Every line carries the phase's clock, so the longest outage can be laid beside what the chaos did.
  const clock = Date.now();
  const at = (time: number) => `${((time - clock) / 1000).toFixed(1)} s`;
  const log = (line: string) => print(`[${at(Date.now())}] ${line}`);
  let sentinel: SentinelDeployment | undefined;
  let engine: string | undefined;
  if (phase === 'redis') {
    log('chaos: starting Redis Sentinel (master, replica, 3 sentinels)…');
    sentinel = await startSentinel();
    engine = `${sentinel.url}?replicas=1`;
  }
  log(`chaos: starting kiln demo${engine ? ` on ${engine}` : ' on a kiln server'}…`);
  const demo = await startDemo(engine, log);
  const chaos: Record<string, number> = {};
  const count = (what: string) => (chaos[what] = (chaos[what] ?? 0) + 1);
  const shoppers = new Shoppers(demo.url);
  const shared: Cart = { cookie: '', skus: [] };
  const started = Date.now();
  const end = started + seconds * 1000;
  try {
    // The shared cart exists before its first race, so the 50 adds of a race land on one session.
    for (let i = 0; i < 5 && !shared.cookie; i++) await shoppers.add(shared);
    const running = Array.from({ length: o.shoppers }, () => shoppers.shop());
    const frozen = new Set<number>();
    let step = 0;
    while (Date.now() < end) {
      await sleep(1500 + rand() * 2500);
      if (Date.now() >= end) break;
      const apps = [...demo.pids.keys()].filter((n) => n.startsWith('app-'));
      // The first steps do one of each (a short run still races, kills an app and fails the tier over), then chance decides.
      const forced = [0.01, 0.9, 0.2][step++];
      const roll = forced ?? rand();
      if (roll < 0.15 && shared.cookie) {
        await shoppers.race(shared);
        count('races of 50');
      } else if (phase === 'kiln' && roll < 0.27) {
        const pid = demo.pids.get('server')!;
        if (step === 3 || rand() < 0.5) {
          if (signal(pid, 'SIGKILL')) count('kiln server SIGKILL');
          log(`chaos: SIGKILL kiln server (pid ${pid})`);
        } else {
          const ms = 500 + Math.floor(rand() * 2500);
          if (signal(pid, 'SIGSTOP')) count('kiln server SIGSTOP');
          log(`chaos: SIGSTOP kiln server for ${ms} ms`);
          frozen.add(pid);
          setTimeout(() => frozen.delete(pid) && signal(pid, 'SIGCONT'), ms);
        }
      } else if (phase === 'redis' && roll < 0.27 && sentinel) {
        log('chaos: SENTINEL FAILOVER');
        const answer = await redisCli(sentinel.sentinels[0]!.port, 'SENTINEL', 'FAILOVER', sentinel.masterName).catch((err: Error) => err.message);
        if (/^OK/.test(answer.trim())) count('sentinel failover');
        else log(`  failover refused: ${answer.trim()}`);
      } else {
        const name = apps[Math.floor(rand() * apps.length)]!;
        const pid = demo.pids.get(name)!;
        if (step === 2 || rand() < 0.6) {
          if (signal(pid, 'SIGKILL')) count('app SIGKILL');
          log(`chaos: SIGKILL ${name} (pid ${pid})`);
        } else {
          const ms = 500 + Math.floor(rand() * 3000);
          if (signal(pid, 'SIGSTOP')) count('app SIGSTOP');
          log(`chaos: SIGSTOP ${name} for ${ms} ms`);
          frozen.add(pid);
          setTimeout(() => frozen.delete(pid) && signal(pid, 'SIGCONT'), ms);
        }
      }
    }
    shoppers.stop();
    await Promise.all(running);
    for (const pid of frozen) signal(pid, 'SIGCONT');
    if (shared.cookie) shoppers.carts.push(shared);

    log(`chaos: checking ${shoppers.carts.length} carts…`);
    let missing = 0;
    let duplicated = 0;
    let extra = 0;
    let invented = 0;
    const examples: string[] = [];
    for (const cart of shoppers.carts) {
      if (!cart.cookie) continue;
      const items = await readCart(demo.url, cart.cookie);
      const stored = new Map(items.map((i) => [i.sku, i.qty]));
      const acked = new Set(cart.skus);
      for (const sku of cart.skus) {
        if (!stored.has(sku)) {
          missing++;
          if (examples.length < 10) examples.push(`missing ${sku} in ${cart.cookie.slice(12, 24)}…`);
        }
      }
      for (const item of items) {
        if (item.qty > 1) {
          duplicated++;
          if (examples.length < 10) examples.push(`${item.sku} applied ${item.qty} times`);
        }
        if (!shoppers.sent.has(item.sku)) {
          invented++;
          if (examples.length < 10) examples.push(`${item.sku} was never sent`);
        } else if (!acked.has(item.sku)) extra++;
      }
    }
    if (shoppers.longestOutageMs > 0) log(`chaos: the longest outage ran from ${at(shoppers.longestOutageFrom)} to ${at(shoppers.longestOutageFrom + shoppers.longestOutageMs)}`);
    return { phase, seconds: Math.round((Date.now() - started) / 1000), acknowledged: shoppers.acknowledged, missing, duplicated, unacknowledgedApplied: extra, invented, errors: shoppers.errors, longestOutageMs: shoppers.longestOutageMs, chaos, examples };
  } finally {
    shoppers.stop();
    await demo.stop();
    await sentinel?.stop();
  }
}

function render(results: PhaseResult[]): string {
  const rows = [['phase', 'seconds', 'acknowledged', 'missing', 'duplicated', 'invented', 'applied, answer lost', 'errors by status', 'longest outage', 'chaos']];
  for (const r of results) {
    rows.push([
      r.phase,
      String(r.seconds),
      String(r.acknowledged),
      String(r.missing),
      String(r.duplicated),
      String(r.invented),
      String(r.unacknowledgedApplied),
      Object.entries(r.errors).map(([k, v]) => `${k}:${v}`).join(' ') || 'none',
      `${(r.longestOutageMs / 1000).toFixed(1)} s`,
      Object.entries(r.chaos).map(([k, v]) => `${v} ${k}`).join(', '),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ')).join('\n');
}

const options = parseOptions(process.argv.slice(2));
const log = options.json ? (line: string) => process.stderr.write(`${line}\n`) : (line: string) => console.log(line);
const rand = random(options.seed);
log(`chaos: ${options.durationSec} s, ${options.shoppers} shoppers, phases ${options.phases.join(', ')}, seed ${options.seed}`);
const results: PhaseResult[] = [];
const share = options.phases.length === 2 ? [0.6, 0.4] : [1];
for (const [i, phase] of options.phases.entries()) results.push(await runPhase(phase, Math.max(5, Math.round(options.durationSec * share[i]!)), options, rand, log));
const failed = results.some((r) => r.missing > 0 || r.duplicated > 0 || r.invented > 0 || r.acknowledged === 0);
if (options.json) process.stdout.write(`${JSON.stringify({ seed: options.seed, results, failed })}\n`);
else {
  console.log(`\n${render(results)}\n`);
  for (const r of results) for (const e of r.examples) console.log(`  ${r.phase}: ${e}`);
  console.log(failed ? 'chaos: FAILED — an acknowledged add was lost or applied twice, or an item appeared that nobody sent (replay with --seed)' : 'chaos: every acknowledged add is in its cart exactly once');
}
process.exit(failed ? 1 : 0);
