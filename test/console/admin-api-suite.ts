import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import parsePrometheus from 'parse-prometheus-text-format';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import type { Engine } from '../../src/engines/engine.js';
import { KILN_BIN, waitFor } from '../helpers/processes.js';

const run = promisify(execFile);

/**
 * The admin API, /metrics and the CLI's JSON against a tier holding 10,000 sessions: one
 * suite for every console source (a kiln server's own admin port; `kiln console` on
 * Redis). A target starts its tier and console and says how app servers connect.
 */
export const READ_TOKEN = 'read-only-token-abcdef-0123456789-read';
/** The admin port's own token: never the client token. */
export const ADMIN_TOKEN = 'admin-token-0123456789abcdef-0123456789-admin';

export interface ConsoleTarget {
  name: string;
  /** server.role in the overview. */
  role: string;
  /** Starts the tier and its admin API; the tokens are ADMIN_TOKEN and READ_TOKEN. */
  start(): Promise<RunningConsole>;
}

export interface RunningConsole {
  adminUrl: string;
  adminToken: string;
  /** An engine for one more app server process (a new lease owner). */
  engine(name: string): Engine;
  stop(): Promise<void>;
}

export function adminApiSuite(target: ConsoleTarget): void {
  describe(`admin API, metrics and CLI: ${target.name}`, () => {
    let tier: RunningConsole;
    let admin: string;
    let kiln: SessionClient;
    const ids: string[] = [];
    const principals = new Map<string, string[]>();

    /** token '' sends none. */
    const call = async (method: string, path: string, token: string = tier.adminToken) => {
      const res = await fetch(`${admin}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
      const text = await res.text();
      return { status: res.status, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as Record<string, unknown> & string };
    };

    /** The app's view: a request on the session; after an invalidation the holder may hear of it a moment later (Redis: pub/sub). */
    const isFreshSoon = (id: string) =>
      waitFor(async () => {
        const s = await kiln.open(id);
        s.close();
        return s.isNew;
      }, 3000, `a fresh session for ${id}`);
    const cli = async (...args: string[]) => (await run(process.execPath, [KILN_BIN, ...args, '--admin', admin], { env: { ...process.env, KILN_ADMIN_TOKEN: tier.adminToken } })).stdout;

    before(async () => {
      tier = await target.start();
      admin = tier.adminUrl;
      kiln = createSessionClient({ engine: tier.engine('admin-test'), statsIntervalMs: 100 });
      let next = 0;
      await Promise.all(
        Array.from({ length: 50 }, async () => {
          while (next < 10_000) {
            const i = next++;
            const principal = i % 100 === 0 ? `user-${i % 300}` : undefined;
            const id = await kiln.withSession(null, (s) => {
              s.set('i', i);
              s.set('profile', { name: `user ${i}`, tags: ['a', 'b'] });
              if (principal) s.setPrincipal(principal);
              return s.id;
            });
            ids.push(id);
            if (principal) principals.set(principal, [...(principals.get(principal) ?? []), id]);
          }
        }),
      );
    });
    after(async () => {
      await kiln.close();
      await tier.stop();
    });

    it('requires a token: 401 without or with a wrong one, 403 for the read-only role on admin actions', async () => {
      assert.equal((await call('GET', '/api/overview', '')).status, 401);
      assert.equal((await call('GET', '/api/overview', 'wrong')).status, 401);
      assert.equal((await call('GET', '/metrics', '')).status, 401);
      assert.equal((await call('GET', '/api/overview', READ_TOKEN)).status, 200);
      const forbidden = await call('DELETE', `/api/sessions/${encodeURIComponent(ids[0]!)}`, READ_TOKEN);
      assert.equal(forbidden.status, 403);
      assert.equal((await call('DELETE', `/api/principals/user-0/sessions`, READ_TOKEN)).status, 403);
    });

    it('overview: server, storage, sessions, leases and connected clients with their leases', async () => {
      const o = (await call('GET', '/api/overview')).body as unknown as {
        server: { role: string; uptimeMs: number; version: string; epoch: string };
        sessions: { count: number };
        leases: { held: number };
        clients: { name: string; pid: number; host: string; app: string; leases: number }[];
      };
      assert.equal(o.server.role, target.role);
      assert.ok(o.server.uptimeMs > 0);
      assert.match(o.server.version, /^\d+\.\d+\.\d+/);
      assert.equal(o.sessions.count, 10_000);
      // A median says how many calls it is of: a median of none is no figure (the console shows '–').
      const recent = (o as unknown as { recent: { commits: unknown; leaseWaits: unknown } }).recent;
      assert.ok(typeof recent.commits === 'number' && typeof recent.leaseWaits === 'number', JSON.stringify(recent));
      // A Redis console knows an app server from its first report (every 100 ms here).
      const me = o.clients.find((c) => c.name.startsWith('admin-test')) ?? (await waitFor(async () => ((await call('GET', '/api/overview')).body as unknown as typeof o).clients.find((c) => c.name.startsWith('admin-test')), 3000, 'our client listed'));
      assert.equal(me.pid, process.pid);
      assert.ok(me.leases > 0, 'the client holds leases (greedy: it created the sessions)');
      await waitFor(async () => {
        const now = (await call('GET', '/api/overview')).body as unknown as typeof o;
        return now.clients.find((c) => c.name === me.name)?.leases === now.leases.held;
      }, 3000, 'leases held = what our client holds');
      await waitFor(async () => ((await call('GET', '/api/overview')).body as unknown as { clients: { stats: { cache?: { hits: number } } | null }[] }).clients.some((c) => c.stats?.cache), 3000, 'the client reported its near-cache figures');
    });

    it('pages through all 10,000 sessions in order, and searches by id prefix and by principal', async () => {
      const seen: string[] = [];
      let after = '';
      for (;;) {
        const page = (await call('GET', `/api/sessions?limit=1000${after ? `&after=${encodeURIComponent(after)}` : ''}`)).body as unknown as { sessions: { id: string }[]; next: string | null; total: number };
        assert.equal(page.total, 10_000);
        seen.push(...page.sessions.map((s) => s.id));
        if (!page.next) break;
        after = page.next;
      }
      assert.equal(seen.length, 10_000);
      assert.deepEqual(seen, [...ids].sort());
      const prefix = ids[123]!.slice(0, 2);
      const found = (await call('GET', `/api/sessions?prefix=${encodeURIComponent(prefix)}&limit=1000`)).body as unknown as { sessions: { id: string }[] };
      assert.deepEqual(found.sessions.map((s) => s.id), ids.filter((id) => id.startsWith(prefix)).sort());
      const [principal, theirs] = [...principals][0]!;
      const byPrincipal = (await call('GET', `/api/sessions?principal=${principal}`)).body as unknown as { sessions: { id: string; principal: string }[] };
      assert.deepEqual(byPrincipal.sessions.map((s) => s.id).sort(), [...theirs].sort());
      // A principal with more sessions than the limit: pages of 10 and the total, for either role
      // (the read role pages by the handle it is given; its ids are short).
      assert.ok(theirs.length > 10);
      for (const token of [undefined, READ_TOKEN]) {
        const met: string[] = [];
        let after: string | null = null;
        let pages = 0;
        do {
          const path = `/api/sessions?principal=${principal}&limit=10${after === null ? '' : `&after=${encodeURIComponent(after)}`}`;
          const page = (await call('GET', path, token)).body as unknown as { sessions: { id: string; ref: string }[]; total: number; next: string | null };
          assert.equal(page.total, theirs.length);
          assert.ok(page.sessions.length <= 10);
          met.push(...page.sessions.map((s) => s.ref));
          after = page.next;
          pages++;
        } while (after !== null && pages < 100);
        // One at a time: the admin server reads at most 32 sessions at once.
        const ids: string[] = [];
        for (const ref of met) ids.push(token === undefined ? ref : ((await call('GET', `/api/sessions/${encodeURIComponent(ref)}`)).body as unknown as { meta: { id: string } }).meta.id);
        assert.deepEqual([...ids].sort(), [...theirs].sort(), `every session once, in ${pages} pages (${token === undefined ? 'admin' : 'read'} role)`);
        assert.equal(pages, Math.ceil(theirs.length / 10));
      }
      // A fractional limit is a whole one (2.5 took 3 and lost the cursor after them).
      const fractional = (await call('GET', `/api/sessions?principal=${principal}&limit=2.5`)).body as unknown as { sessions: unknown[]; next: string | null };
      assert.equal(fractional.sessions.length, 2);
      assert.notEqual(fractional.next, null);
      const bad = await call('GET', `/api/sessions?principal=${principal}&after=${encodeURIComponent('not a cursor')}`);
      assert.equal(bad.status, 400);
    });

    it('shows one session with its attributes and sizes, and invalidates it: the next request gets a fresh session', async () => {
      const id = ids[42]!;
      const detail = (await call('GET', `/api/sessions/${encodeURIComponent(id)}`)).body as unknown as { meta: { id: string; version: number }; attributes: { name: string; bytes: number; preview: string }[] };
      assert.equal(detail.meta.id, id);
      assert.deepEqual(detail.attributes.map((a) => a.name).sort(), ['i', 'profile']);
      assert.ok(detail.attributes.every((a) => a.bytes > 0));
      assert.match(detail.attributes.find((a) => a.name === 'profile')!.preview, /"name":"user \d+"/);
      assert.equal((await call('DELETE', `/api/sessions/${encodeURIComponent(id)}`)).body['destroyed'], true);
      assert.equal(await isFreshSoon(id), true, 'the invalidated session is gone for the app too');
      assert.equal((await call('GET', `/api/sessions/${encodeURIComponent(id)}`)).status, 404);
    });

    it('invalidates every session of a principal', async () => {
      const [principal, theirs] = [...principals][1]!;
      const r = await call('DELETE', `/api/principals/${principal}/sessions`);
      assert.equal(r.body['destroyed'], theirs.length);
      for (const id of theirs) assert.equal(await isFreshSoon(id), true);
    });

    it('streams events (SSE): clients joining and leaving, destroys, lease recalls', async () => {
      const controller = new AbortController();
      const res = await fetch(`${admin}/api/events`, { headers: { authorization: `Bearer ${READ_TOKEN}` }, signal: controller.signal });
      assert.equal(res.headers.get('content-type'), 'text/event-stream');
      const reader = res.body!.getReader();
      let text = '';
      const pump = (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            text += new TextDecoder().decode(value);
          }
        } catch {
          // aborted
        }
      })();
      const other = createSessionClient({ engine: tier.engine('sse-peer'), statsIntervalMs: 100 });
      // A failed wait must not leave the stream and the peer open: the test process
      // would then never exit, and the runner waits its whole file timeout for it.
      try {
        // Takes a session our first client holds: a recall (a lease event).
        await other.withSession(ids[7]!, (s) => s.get('i'));
        await waitFor(() => /event: client\ndata: \{"type":"client-joined"[^\n]*sse-peer/.test(text), 5000, 'the peer joined');
        await other.close();
        await call('DELETE', `/api/sessions/${encodeURIComponent(ids[8]!)}`);
        await waitFor(() => /client-left[^\n]*sse-peer/.test(text) && /"type":"destroyed"/.test(text) && /event: lease\ndata: [^\n]*"type":"recall"/.test(text), 5000, 'events');
      } finally {
        await other.close();
        controller.abort();
        await pump;
      }
    });

    it('keeps a time series and serves /metrics that parse and match the work done', async () => {
      const ts = (await call('GET', '/api/timeseries')).body as unknown as { intervalMs: number; samples: { t: number; sessions: number }[] };
      assert.equal(ts.intervalMs, 10_000);
      assert.ok(ts.samples.length >= 1);
      assert.ok(ts.samples.every((x) => typeof (x as { httpRequests?: unknown }).httpRequests === 'number'), 'HTTP requests (client reports) apart from tier messages');
      const text = (await call('GET', '/metrics')).body as unknown as string;
      const families = parsePrometheus(text) as { name: string; type: string; metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string }[] }[];
      const value = (name: string) => Number(families.find((f) => f.name === name)?.metrics[0]?.value);
      const overview = (await call('GET', '/api/overview')).body as unknown as { sessions: { count: number }; counters: Record<string, number> };
      // Nothing runs now, but Redis counters arrive from each process about once a second: read both again until they agree.
      if (value('kiln_commits_total') !== overview.counters['commits']) {
        await waitFor(async () => {
          families.splice(0, families.length, ...(parsePrometheus((await call('GET', '/metrics')).body as unknown as string) as typeof families));
          Object.assign(overview, (await call('GET', '/api/overview')).body);
          return value('kiln_commits_total') === overview.counters['commits'];
        }, 5000, 'metrics and overview agree');
      }
      assert.equal(value('kiln_sessions'), overview.sessions.count);
      assert.equal(value('kiln_sessions_created_total'), 10_000);
      assert.equal(value('kiln_commits_total'), overview.counters['commits']);
      assert.equal(value('kiln_sessions_destroyed_total'), overview.counters['destroyed']);
      assert.equal(families.find((f) => f.name === 'kiln_sessions_created_total')?.type, 'COUNTER');
      const commitLatency = families.find((f) => f.name === 'kiln_commit_duration_seconds');
      assert.equal(commitLatency?.type, 'HISTOGRAM');
      assert.ok(Number(commitLatency.metrics[0]?.count) >= 10_000, `every commit timed (${commitLatency.metrics[0]?.count})`);
      assert.equal(families.find((f) => f.name === 'kiln_lease_wait_seconds')?.type, 'HISTOGRAM');
      assert.ok(value('kiln_connections') >= 1);
      // A figure the source cannot give has no sample; one it gives matches the overview.
      const tombstones = (overview as unknown as { sessions: { tombstones: number | null } }).sessions.tombstones;
      const tombstoneSamples = families.find((f) => f.name === 'kiln_tombstones')?.metrics ?? [];
      if (tombstones === null) assert.equal(tombstoneSamples.length, 0, 'no kiln_tombstones sample where they are not counted');
      else assert.equal(value('kiln_tombstones'), tombstones);
      const hits = families.find((f) => f.name === 'kiln_client_cache_hits');
      assert.ok(hits?.metrics.some((m) => m.labels?.['client']?.startsWith('admin-test')), 'per-client near-cache figures');
    });

    it('kiln status --json and kiln sessions ls --json give the same numbers as the API', async () => {
      type Status = { sessions: { count: number }; counters: Record<string, number>; clients: { name: string }[] };
      // Read both until a pair agrees: counters may move between two calls (Redis flushes each process's about once a second).
      await waitFor(async () => {
        const fromCli = JSON.parse(await cli('status', '--json')) as Status;
        const fromApi = (await call('GET', '/api/overview')).body as unknown as Status;
        assert.deepEqual(fromCli.sessions, fromApi.sessions);
        assert.deepEqual(fromCli.clients.map((c) => c.name), fromApi.clients.map((c) => c.name));
        return JSON.stringify(fromCli.counters) === JSON.stringify(fromApi.counters);
      }, 5000, 'status --json = /api/overview');
      const fromCli = JSON.parse(await cli('sessions', 'ls', '--json', '--limit', '1000')) as { sessions: { id: string }[]; total: number; next: string };
      const fromApi = (await call('GET', '/api/sessions?limit=1000')).body as unknown as typeof fromCli;
      assert.deepEqual(fromCli, fromApi);
      assert.equal(fromCli.sessions.length, 1000);
      const [principal, theirs] = [...principals][2]!;
      const byPrincipal = JSON.parse(await cli('sessions', 'ls', '--json', '--principal', principal)) as { sessions: { id: string }[] };
      assert.deepEqual(byPrincipal.sessions.map((s) => s.id).sort(), [...theirs].sort());
      assert.match(await cli('status'), new RegExp(`sessions +${fromApi.total} `));
    });
    it('largest sessions: top sessions with their biggest attributes and a fixed-bucket size histogram, by role, cached', async () => {
      // A session without a principal (ids are in the order the 50 lanes finished, so
      // ids[101] could be i = 100, whose principal the "log out everywhere" test ended),
      // and none the tests before destroyed (ids[8], ids[42]).
      const withPrincipal = new Set([...principals.values()].flat());
      const big = ids.find((id, i) => i > 100 && !withPrincipal.has(id))!;
      await kiln.withSession(big, (s) => void s.set('blob', 'x'.repeat(20_000)));
      type Largest = { computedAt: number; scanned: number; totalBytes: number; histogram: { le: number | null; count: number }[]; sessions: { meta: { id: string; ref: string; principal: string | null }; bytes: number; attributes: { name: string; bytes: number }[] }[]; attributes: { name: string; sessions: number }[] };
      const count = ((await call('GET', '/api/overview')).body as unknown as { sessions: { count: number } }).sessions.count;
      const r = (await call('GET', '/api/sessions/largest')).body as unknown as Largest;
      assert.equal(r.scanned, count, 'every session scanned');
      assert.deepEqual(r.histogram.map((b) => b.le), [256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, null]);
      assert.equal(r.histogram.reduce((n, b) => n + b.count, 0), count);
      assert.equal(r.histogram[4]!.count, 1, 'the one session of 16-64 KiB');
      assert.equal(r.sessions[0]!.meta.id, big);
      assert.ok(r.sessions[0]!.bytes > 20_000);
      assert.equal(r.sessions[0]!.attributes[0]!.name, 'blob');
      assert.ok(r.sessions.length === 20 && r.sessions.every((s, i) => i === 0 || s.bytes <= r.sessions[i - 1]!.bytes), 'largest first');
      assert.deepEqual(r.attributes.map((a) => a.name).sort(), ['blob', 'i', 'profile']);
      const again = (await call('GET', '/api/sessions/largest')).body as unknown as Largest;
      assert.equal(again.computedAt, r.computedAt, 'answered from the cache');
      // The read role: short ids and a handle to open the session by, no values.
      const read = (await call('GET', '/api/sessions/largest', READ_TOKEN)).body as unknown as Largest;
      assert.equal(read.sessions[0]!.meta.id, `${big.slice(0, 8)}…`);
      assert.ok(read.sessions[0]!.meta.ref.startsWith('~'));
      assert.ok(!JSON.stringify(read).includes(big), 'no full id');
      assert.ok(!JSON.stringify(read).includes('xxxx'), 'no value');
      const opened = (await call('GET', `/api/sessions/${encodeURIComponent(read.sessions[0]!.meta.ref)}`, READ_TOKEN)).body as unknown as { attributes: { name: string }[] };
      assert.ok(opened.attributes.some((a) => a.name === 'blob'));
    });

    it('keeps the recent events for a page that opens later, filtered by type and word, in the role\'s view', async () => {
      type Recent = { events: { seq: number; type: string; at: number; data: { type?: string; sessionId?: string; client?: { name: string } } }[] };
      const all = ((await call('GET', '/api/events/recent')).body as unknown as Recent).events;
      assert.ok(all.length > 0);
      assert.ok(all.every((e, i) => i === 0 || e.seq > all[i - 1]!.seq), 'oldest first');
      assert.ok(all.some((e) => e.type === 'client' && e.data.type === 'client-joined' && e.data.client?.name.startsWith('sse-peer')), 'the SSE test\'s peer joining');
      const clients = ((await call('GET', '/api/events/recent?type=client&q=sse-peer')).body as unknown as Recent).events;
      assert.ok(clients.length >= 2 && clients.every((e) => e.type === 'client' && e.data.client?.name.startsWith('sse-peer')), JSON.stringify(clients).slice(0, 300));
      const destroyed = all.find((e) => e.type === 'session' && e.data.sessionId === ids[8]);
      assert.ok(destroyed, 'the destroy of the SSE test');
      const asRead = ((await call('GET', '/api/events/recent?type=session', READ_TOKEN)).body as unknown as Recent).events;
      assert.ok(asRead.length > 0 && asRead.every((e) => !e.data.sessionId || e.data.sessionId.endsWith('…')), 'short ids for the read role');
      assert.equal(((await call('GET', '/api/events/recent?limit=2')).body as unknown as Recent).events.length, 2);
    });

    it('overview: a client whose connection dropped stays a minute, marked gone; live ones are named as they were started', async () => {
      type O = { clients: { name: string; label: string; state: string }[]; departed: { name: string; label: string; state: string; goneAt: number }[] };
      const leaver = createSessionClient({ engine: tier.engine('leaver'), statsIntervalMs: 100 });
      try {
        await leaver.withSession(null, (s) => void s.set('x', 1));
        const live = await waitFor(async () => ((await call('GET', '/api/overview')).body as unknown as O).clients.find((c) => c.name.startsWith('leaver')), 5000, 'leaver listed');
        assert.equal(live.state, 'live');
        assert.equal(live.label, 'leaver');
      } finally {
        await leaver.close();
      }
      const started = Date.now();
      const gone = await waitFor(async () => ((await call('GET', '/api/overview')).body as unknown as O).departed.find((c) => c.name.startsWith('leaver')), 10_000, 'leaver marked gone');
      assert.equal(gone.state, 'gone');
      assert.ok(gone.goneAt >= started - 1000);
      const o = (await call('GET', '/api/overview')).body as unknown as O;
      assert.ok(!o.clients.some((c) => c.name.startsWith('leaver')), 'not among the connected');
    });
  });
}
