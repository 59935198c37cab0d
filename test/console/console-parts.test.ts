import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { BalancerWatch, MAX_STATUS_BYTES } from '../../src/console/balancer-watch.js';
import { EventHistory } from '../../src/console/event-history.js';
import { LargestSessions, SIZE_BUCKETS, SizeTally, type SizedSession } from '../../src/console/largest-sessions.js';
import { ClientRoster, CounterDeltas, GONE_MS, labelOf, MAX_GONE } from '../../src/console/roster.js';
import type { ConsoleClient, ConsoleSource } from '../../src/console/source.js';
import { freePort, waitFor } from '../helpers/processes.js';

const meta = (id: string) => ({ id, createdAt: 0, lastAccessedAt: 0, idleTimeoutMs: 0, absoluteExpiresAt: 0, principal: null, version: 1 });
const client = (name: string, opens: number | null = null): ConsoleClient => ({
  name,
  host: 'h',
  pid: 1,
  app: 'a',
  address: 'x',
  connectedAt: 0,
  ownerId: name,
  leases: 0,
  requests: 0,
  stats: opens === null ? null : { counters: { opens }, cache: { hits: opens, misses: 1 } },
});

describe('console parts', () => {
  it('size tally: fixed buckets with inclusive upper bounds, the largest first, at most N', () => {
    const t = new SizeTally(3);
    for (const [id, bytes] of [['a', 256], ['b', 257], ['c', 5_000_000], ['d', 10], ['e', 4096], ['f', 300]] as const) t.add({ meta: meta(id), bytes });
    assert.deepEqual(t.histogram().map((b) => b.count), [2, 2, 1, 0, 0, 0, 0, 0, 1]);
    assert.deepEqual(t.histogram().map((b) => b.le), [...SIZE_BUCKETS, null]);
    assert.deepEqual(t.largest.map((s) => s.meta.id), ['c', 'e', 'f']);
    assert.equal(t.scanned, 6);
    assert.equal(t.totalBytes, 256 + 257 + 5_000_000 + 10 + 4096 + 300);
  });

  it('largest sessions: one slice per turn of the event loop, one scan for callers at once, then the cached answer', async () => {
    let scans = 0;
    const slicesSeen: number[] = [];
    // Counts turns of the event loop: one immediate per turn, each queueing the next.
    let turns = 0;
    let ticking = true;
    const tick = (): void => {
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const source = {
      async *sizes(): AsyncGenerator<SizedSession[]> {
        scans++;
        for (let s = 0; s < 5; s++) {
          slicesSeen.push(turns);
          yield Array.from({ length: 1000 }, (_, i) => ({ meta: meta(`s${s}-${i}`), bytes: s * 1000 + i }));
        }
      },
      async snapshot(id: string) {
        return { meta: meta(id), attributes: new Map([['big', new Uint8Array(10)], ['small', new Uint8Array(1)]]) };
      },
    } as unknown as ConsoleSource;
    try {
      const largest = new LargestSessions(source, 60_000);
      const [a, b] = await Promise.all([largest.report(), largest.report()]);
      assert.equal(a, b);
      assert.equal(scans, 1);
      assert.equal(a.scanned, 5000);
      assert.equal(a.sessions[0]!.meta.id, 's4-999');
      assert.deepEqual(a.sessions[0]!.attributes.map((x) => x.name), ['big', 'small']);
      // Timers ran between slices: the scan let the event loop turn.
      for (let i = 1; i < slicesSeen.length; i++) assert.ok(slicesSeen[i]! > slicesSeen[i - 1]!, `turns between slices: ${slicesSeen.join(',')}`);
      assert.equal(await largest.report(), a, 'cached');
      assert.equal(scans, 1);
    } finally {
      ticking = false;
    }
  });

  it('roster: a client that leaves is kept GONE_MS, marked gone; one that returns is live again', () => {
    const r = new ClientRoster();
    r.update([client('app-1-0a1b2c'), client('app-2-0a1b2c')], 1000);
    let v = r.update([client('app-1-0a1b2c')], 2000);
    assert.deepEqual(v.live.map((c) => [c.label, c.state]), [['app-1', 'live']]);
    assert.deepEqual(v.gone.map((c) => [c.label, c.state, c.goneAt]), [['app-2', 'gone', 2000]]);
    v = r.update([client('app-1-0a1b2c')], 2000 + GONE_MS - 1);
    assert.equal(v.gone.length, 1);
    v = r.update([client('app-1-0a1b2c')], 2000 + GONE_MS + 1);
    assert.equal(v.gone.length, 0);
    r.update([client('app-1-0a1b2c'), client('app-3-aabbcc')], 1);
    r.update([client('app-1-0a1b2c')], 2);
    assert.equal(r.update([client('app-1-0a1b2c'), client('app-3-aabbcc')], 3).gone.length, 0, 'back: no longer gone');
    assert.equal(labelOf('shop-1234'), 'shop-1234', 'a name without the engine suffix stays');
    // A departure the source announced counts from its own time, though nobody polled since.
    const e = new ClientRoster();
    e.update([client('app-4-aabbcc', 7)], 100);
    e.left({ name: 'app-4-aabbcc', pid: 9 }, 150);
    v = e.update([], 5000);
    assert.deepEqual(v.gone.map((c) => [c.label, c.goneAt, c.pid]), [['app-4', 150, 1]], 'its last full figures, the event\'s time');
    e.left({ name: 'never-polled-010203', pid: 9 }, 4000);
    assert.deepEqual(e.update([], 5000).gone.map((c) => [c.label, c.pid]), [['never-polled', 9], ['app-4', 1]]);
  });

  it('roster: departures are forgotten after GONE_MS and beyond MAX_GONE, though nobody opens the overview', () => {
    const r = new ClientRoster();
    // App servers that reconnect in a loop under new names, and a console nobody looks at.
    for (let i = 0; i < 5 * MAX_GONE; i++) r.left({ name: `app-${i}-0a1b2c` }, 1000 + i);
    assert.equal(r.goneCount, MAX_GONE, 'at most MAX_GONE kept');
    const kept = r.update([], 1000 + 5 * MAX_GONE).gone;
    assert.equal(kept.length, MAX_GONE);
    assert.equal(kept[0]!.name, `app-${5 * MAX_GONE - 1}-0a1b2c`, 'the newest departures are the ones kept');
    assert.equal(kept.at(-1)!.name, `app-${4 * MAX_GONE}-0a1b2c`);
    // One departure a minute later: every older one has aged out by its time.
    r.left({ name: 'late-0a1b2c' }, 1000 + 5 * MAX_GONE + GONE_MS + 1);
    assert.equal(r.goneCount, 1);
    // A name that leaves again counts as its latest departure.
    const again = new ClientRoster();
    again.left({ name: 'a' }, 1);
    again.left({ name: 'b' }, 2);
    again.left({ name: 'a' }, 3);
    for (let i = 0; i < MAX_GONE - 1; i++) again.left({ name: `x${i}` }, 4);
    assert.deepEqual(again.update([], 5).gone.filter((c) => c.name.length === 1).map((c) => c.name), ['a'], 'b, the oldest, was forgotten first');
  });

  it('counter deltas: a client leaving or restarting never makes traffic negative', () => {
    const d = new CounterDeltas();
    assert.deepEqual(d.next([client('a', 10), client('b', 5)]), { http: 0, hits: 0, misses: 0 });
    assert.equal(d.next([client('a', 15), client('b', 9)]).http, 9);
    assert.equal(d.next([client('a', 20)]).http, 5, 'b left');
    assert.equal(d.next([client('a', 2)]).http, 0, 'a restarted');
    assert.equal(d.next([client('a', 4), client('c', null)]).http, 2);
  });

  it('event history: a bounded ring, oldest first, filtered by type and word in the role\'s view', () => {
    const h = new EventHistory(3);
    h.record('client', { type: 'client-joined', client: { name: 'app-1-abc123' }, at: 1 });
    h.record('session', { type: 'destroyed', sessionId: 'SESSIONID-0123456789', principal: 'pat', at: 2 });
    h.record('error', { code: 'KILN_ERR_TIMEOUT', client: 'app-2-abc123', at: 3 });
    h.record('lease', { type: 'recall', sessionId: 'OTHER-0123456789', at: 4 });
    assert.deepEqual(h.recent({}).map((e) => e.seq), [2, 3, 4]);
    assert.deepEqual(h.recent({ types: ['error', 'lease'] }).map((e) => e.type), ['error', 'lease']);
    assert.deepEqual(h.recent({ text: 'PAT' }).map((e) => e.seq), [2]);
    assert.deepEqual(h.recent({ text: 'app-2' }).map((e) => e.seq), [3]);
    assert.deepEqual(h.recent({ limit: 1 }).map((e) => e.seq), [4]);
    const short = (d: unknown) => ({ ...(d as object), sessionId: 'SESSIONI…' });
    assert.deepEqual(h.recent({ text: '0123456789' }, short), [], 'the read role cannot search by the part of the id it does not see');
  });

  it('balancer watch: a hostile balancer\'s status is checked, bounded and read with a limit', async () => {
    // The peer the console follows, as a hostile or broken one would answer.
    let answer: (res: ServerResponse) => void = () => undefined;
    let sent = 0;
    const fake: Server = createServer((_req, res) => answer(res));
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(fake.address() as { port: number }).port}`;
    const json = (body: unknown) => (res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    let watch: BalancerWatch | undefined;
    const read = async (reply: typeof answer) => {
      watch?.stop();
      answer = reply;
      watch = new BalancerWatch({ url, token: 'secret-token' });
      return waitFor(() => (watch!.current().error !== 'not read yet' ? watch!.current() : undefined), 5000, 'a read');
    };
    try {
      // Nodes the page's diagram could not draw (a url that is a number, a null node, no name), among good ones.
      const good = { name: 'app-1', url: 'http://10.0.0.1:3001', healthy: true, draining: false, pid: 7, requests: 12, active: 0, queued: 0, failures: 0, lastError: null, lastCheckAt: 1 };
      const v = await read(json({ affinity: { evil: 1 }, counters: { x: 'y' }, extra: 'e'.repeat(10_000), nodes: [null, 5, 'x', { ...good, url: 5 }, { ...good, name: null }, { url: 'http://x' , healthy: true }, { ...good, healthy: 'yes' }, good, { ...good, name: 'app-2', requests: 'many', pid: { n: 1 }, lastError: 'e'.repeat(10_000), draining: 'no' }] }));
      assert.equal(v.reachable, true);
      const nodes = v.status!.nodes;
      assert.deepEqual(nodes.map((n) => n.name), ['app-1', 'app-2'], 'bad nodes dropped');
      assert.deepEqual(nodes[1], { ...good, name: 'app-2', requests: null, pid: null, lastError: 'e'.repeat(256), draining: false });
      assert.equal(v.status!.affinity, 'unknown');
      assert.equal((v.status!['extra'] as string).length, 256);
      assert.deepEqual(v.status!['counters'], {});
      // Thousands of nodes: the first MAX_NODES.
      const many = await read(json({ affinity: 'route', nodes: Array.from({ length: 5000 }, (_, i) => ({ ...good, name: `n${i}` })) }));
      assert.equal(many.status!.nodes.length, 256);
      // Not a status: the last good one is kept, and said why.
      const notStatus = await read(json({ nodes: 'none' }));
      assert.equal(notStatus.reachable, false);
      assert.match(notStatus.error!, /not a kiln balancer status/);
      // An endless answer, without a length: read up to the limit, then the connection dropped.
      let cut = false;
      const endless = await read((res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.on('close', () => (cut = true));
        const chunk = Buffer.alloc(64 * 1024, 0x20);
        const pump = () => {
          while (!res.destroyed && sent < 64 * MAX_STATUS_BYTES && res.write(chunk)) sent += chunk.length;
          if (!res.destroyed && sent < 64 * MAX_STATUS_BYTES) res.once('drain', pump);
        };
        res.write('{"nodes":[');
        pump();
      });
      assert.equal(endless.reachable, false);
      assert.match(endless.error!, /above 1048576 bytes/);
      await waitFor(() => cut, 5000, 'the endless answer abandoned');
      assert.ok(sent < 16 * MAX_STATUS_BYTES, `read no further than the limit and the sockets' buffers (${sent} bytes sent)`);
      // One that says its length: not read at all.
      const long = await read((res) => res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(2 * MAX_STATUS_BYTES) }).write('{'));
      assert.match(long.error!, /above 1048576/);
    } finally {
      watch?.stop();
      fake.closeAllConnections();
      await new Promise((resolve) => fake.close(resolve));
    }
  });

  it('balancer watch: options checked by name; a balancer nobody answers for is unreachable, with the reason', async () => {
    assert.throws(() => new BalancerWatch({ url: 'ftp://x', token: 't' }), (err: Error & { code?: string }) => err.code === 'KILN_ERR_INVALID_OPTION' && /"balancer\.url"/.test(err.message));
    assert.throws(() => new BalancerWatch({ url: 'http://127.0.0.1:1', token: '' }), /"balancer\.token"/);
    const watch = new BalancerWatch({ url: `http://127.0.0.1:${await freePort()}/ignored/path`, token: 'secret-token' });
    try {
      assert.equal(watch.current().reachable, false);
      const failed = await waitFor(() => (watch.current().error !== 'not read yet' ? watch.current() : undefined), 5000, 'a failed read');
      assert.equal(failed.reachable, false);
      assert.equal(failed.status, null);
      assert.match(failed.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'the origin only');
      assert.ok(!JSON.stringify(failed).includes('secret-token'));
    } finally {
      watch.stop();
    }
  });
});
