/**
 * Stall: does bulk work on a kiln server hold up everybody else's requests? A probe
 * client commits to its own session every 100 ms while
 *   1. `sessions` sessions expire at the same moment (their leases held by one client, as
 *      an app server that served them all would: the worst case), and
 *   2. one principal's `sessions` sessions are destroyed at once ("log out everywhere"),
 *   3. the first listing asks for a page of them (the console opened): the server builds
 *      the id order of every session (measured with a probe every 10 ms),
 *   4. a client process holding 2 × `sessions` leases is killed (SIGKILL): the server moves
 *      every lease it held on (measured with a second probe, every 10 ms: the move takes
 *      a fraction of a second).
 * Reported: the probe's commit latency (p50, p99, max) during each, and how long the
 * bulk work took. `npm run bench` prints it; test/integration/stall.test.ts holds the p99.
 */
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { encodeAttribute } from '../src/session/codec.js';
import { generateSessionId } from '../src/session/id.js';
import { fill } from './fill-sessions.js';
import { sleep, startKilnServer, startWorker, waitFor, type ServerProcess } from '../test/helpers/processes.js';

export interface StallFigures {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  probes: number;
  /** How long the bulk work took (expiry: from the deadline until the last session is gone). */
  bulkMs: number;
}

export interface StallResult {
  sessions: number;
  expiry: StallFigures;
  destroyByPrincipal: StallFigures;
  /** The first listing (the order of every id built), a probe every 10 ms; bulkMs: the listing's answer time. */
  firstListing: StallFigures;
  /** bulkMs: from the kill until the server held none of the dead client's leases. */
  deadHolder: StallFigures;
  /** How many leases the killed client held (twice `sessions`). */
  deadHolderLeases: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** A client committing to its own session every `everyMs`, recording each commit's latency. */
async function startProbe(server: ServerProcess, everyMs = 100) {
  const engine = connect(server.url, { token: server.token, name: 'stall-probe' });
  await engine.connect();
  const id = generateSessionId();
  const grant = await engine.acquire(id);
  let version = 0;
  let n = 0;
  const samples: { at: number; ms: number }[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = performance.now();
      const ack = await engine.commit({ sessionId: id, token: grant.token, commitId: `probe-${++n}`, baseVersion: version, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', n)]], del: [], ...(version === 0 ? { idleTimeoutMs: 3600_000, absoluteExpiresAt: 0 } : {}) });
      version = ack.version;
      const ms = performance.now() - started;
      samples.push({ at: Date.now(), ms });
      await sleep(Math.max(0, everyMs - ms));
    }
  })();
  return {
    between(from: number, to: number): number[] {
      return samples.filter((s) => s.at >= from && s.at <= to).map((s) => s.ms).sort((a, b) => a - b);
    },
    async stop() {
      running = false;
      await loop;
      await engine.close();
    },
  };
}

function figures(latencies: number[], bulkMs: number): StallFigures {
  return { p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), maxMs: latencies[latencies.length - 1] ?? 0, probes: latencies.length, bulkMs };
}

export async function stallRun(sessions: number, progress: (line: string) => void = () => undefined): Promise<StallResult> {
  const server = await startKilnServer({ args: ['--expiry-sweep-ms', '100', '--touch-grace-ms', '100'], readyTimeoutMs: 30_000 });
  try {
    const probe = await startProbe(server);
    // 1. Mass expiry, leases held by the client that made the sessions.
    progress(`  stall: creating ${sessions.toLocaleString('en-US')} sessions that expire together…`);
    const fillStarted = Date.now();
    const idleTimeoutMs = 4000;
    const closeFiller = await fill(server, sessions, { idleTimeoutMs, holdLeases: true });
    const deadline = Date.now() + idleTimeoutMs;
    progress(`  stall: created in ${((Date.now() - fillStarted) / 1000).toFixed(1)} s; waiting for the expiry…`);
    const admin = connect(server.url, { token: server.token, name: 'stall-count', operationTimeoutMs: 120_000 });
    await admin.connect();
    await sleep(Math.max(0, deadline - Date.now() - 500));
    const expiryFrom = Date.now();
    const gone = await waitFor(async () => ((await admin.stats()).sessions <= 1 ? Date.now() : 0), deadline + 60_000 - Date.now(), 'the sessions to expire (a minute)');
    await sleep(300);
    const expiry = figures(probe.between(expiryFrom, Date.now()), gone - (deadline - 100));
    await closeFiller();

    // 2. Log out everywhere of a principal with `sessions` sessions.
    progress(`  stall: creating ${sessions.toLocaleString('en-US')} sessions of one principal…`);
    const closeFiller2 = await fill(server, sessions, { idleTimeoutMs: 3600_000, principal: 'bulk-user', holdLeases: false });
    await sleep(500);

    // 3. The first listing of them (the console opened): the id order of every session is built.
    progress(`  stall: the first listing of ${sessions.toLocaleString('en-US')} sessions…`);
    const listProbe = await startProbe(server, 10);
    await sleep(200);
    const listFrom = Date.now();
    const page = await admin.list({ limit: 100 });
    const listMs = Date.now() - listFrom;
    await sleep(200);
    const firstListing = figures(listProbe.between(listFrom, Date.now()), listMs);
    await listProbe.stop();
    if (page.sessions.length !== 100 || page.total < sessions) throw new Error(`the listing gave ${page.sessions.length} sessions of ${page.total}`);

    const destroyFrom = Date.now();
    const destroyed = await admin.destroyByPrincipal('bulk-user');
    const destroyMs = Date.now() - destroyFrom;
    await sleep(300);
    if (destroyed !== sessions) throw new Error(`destroyByPrincipal ended ${destroyed} sessions, not ${sessions}`);
    const byPrincipal = figures(probe.between(destroyFrom, Date.now()), destroyMs);
    await closeFiller2();

    // 4. A client process holding twice `sessions` leases dies: moved in one pass, 100,000
    // held the server about 60 ms, too close to the target to tell a regression by.
    const leases = 2 * sessions;
    progress(`  stall: a client process takes ${leases.toLocaleString('en-US')} leases, then is killed…`);
    const holder = await startWorker();
    // The move takes a fraction of a second: a probe every 10 ms sees all of it.
    const fastProbe = await startProbe(server, 10);
    let deadHolder: StallFigures;
    try {
      await holder.call({ op: 'take-leases', url: server.url, token: server.token, count: leases }, 300_000);
      const held = (await admin.stats()).leases;
      if (held < leases) throw new Error(`the holder took ${held} leases, not ${leases}`);
      const killFrom = Date.now();
      await holder.kill();
      // The probes keep their own leases.
      const movedAt = await waitFor(async () => ((await admin.stats()).leases <= 2 ? Date.now() : 0), 60_000, "the dead client's leases to move on (a minute)");
      await sleep(300);
      deadHolder = figures(fastProbe.between(killFrom, Date.now()), movedAt - killFrom);
    } finally {
      await holder.kill();
      await fastProbe.stop();
    }
    await admin.close();
    await probe.stop();
    return { sessions, expiry, destroyByPrincipal: byPrincipal, firstListing, deadHolder, deadHolderLeases: leases };
  } finally {
    await server.stop();
  }
}
