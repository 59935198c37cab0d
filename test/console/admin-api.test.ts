import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import parsePrometheus from 'parse-prometheus-text-format';
import { createSessionClient, type SessionClient } from '../../src/client/session-client.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { removeDir, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';

/** The admin API and /metrics of a kiln server holding 10,000 sessions. */
const READ_TOKEN = 'read-only-token-abcdef';

describe('kiln server admin API and metrics', () => {
  let server: ServerProcess;
  let admin: string;
  let kiln: SessionClient;
  let dir: string;
  const ids: string[] = [];
  const principals = new Map<string, string[]>();

  /** token '' sends none. */
  const call = async (method: string, path: string, token: string = server.token) => {
    const res = await fetch(`${admin}${path}`, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
    const text = await res.text();
    return { status: res.status, body: (res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text) as Record<string, unknown> & string };
  };

  before(async () => {
    dir = tempDir();
    writeFileSync(join(dir, 'read.token'), READ_TOKEN);
    server = await startKilnServer({ args: ['--admin-port', '0', '--admin-read-token-file', join(dir, 'read.token')] });
    admin = /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1] ?? (await waitFor(() => /kiln admin on (http:\/\/\S+?) /.exec(server.output())?.[1], 5000, 'admin line'));
    kiln = createSessionClient({ engine: connect(server.url, { token: server.token, name: 'admin-test' }), statsIntervalMs: 100 });
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
    await server.kill();
    removeDir(dir);
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
    assert.equal(o.server.role, 'standalone');
    assert.ok(o.server.uptimeMs > 0);
    assert.match(o.server.version, /^\d+\.\d+\.\d+/);
    assert.equal(o.sessions.count, 10_000);
    const me = o.clients.find((c) => c.name.startsWith('admin-test'));
    assert.ok(me, 'our client is listed');
    assert.equal(me.pid, process.pid);
    assert.equal(me.leases, o.leases.held);
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
  });

  it('shows one session with its attributes and sizes, and invalidates it: the next request gets a fresh session', async () => {
    const id = ids[42]!;
    const detail = (await call('GET', `/api/sessions/${encodeURIComponent(id)}`)).body as unknown as { meta: { id: string; version: number }; attributes: { name: string; bytes: number; preview: string }[] };
    assert.equal(detail.meta.id, id);
    assert.deepEqual(detail.attributes.map((a) => a.name).sort(), ['i', 'profile']);
    assert.ok(detail.attributes.every((a) => a.bytes > 0));
    assert.match(detail.attributes.find((a) => a.name === 'profile')!.preview, /"name":"user \d+"/);
    assert.equal((await call('DELETE', `/api/sessions/${encodeURIComponent(id)}`)).body['destroyed'], true);
    const s = await kiln.open(id);
    assert.equal(s.isNew, true, 'the invalidated session is gone for the app too');
    s.close();
    assert.equal((await call('GET', `/api/sessions/${encodeURIComponent(id)}`)).status, 404);
  });

  it('invalidates every session of a principal', async () => {
    const [principal, theirs] = [...principals][1]!;
    const r = await call('DELETE', `/api/principals/${principal}/sessions`);
    assert.equal(r.body['destroyed'], theirs.length);
    for (const id of theirs) assert.equal((await kiln.open(id)).isNew, true);
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
    const other = createSessionClient({ engine: connect(server.url, { token: server.token, name: 'sse-peer' }) });
    await other.withSession(ids[7]!, (s) => s.get('i'));
    await other.close();
    await call('DELETE', `/api/sessions/${encodeURIComponent(ids[8]!)}`);
    await waitFor(() => /event: client[\s\S]*client-joined/.test(text) && /client-left/.test(text) && /"type":"destroyed"/.test(text) && /event: lease/.test(text), 5000, 'events');
    controller.abort();
    await pump;
  });

  it('keeps a time series and serves /metrics that parse and match the work done', async () => {
    const ts = (await call('GET', '/api/timeseries')).body as unknown as { intervalMs: number; samples: { t: number; sessions: number }[] };
    assert.equal(ts.intervalMs, 10_000);
    assert.ok(ts.samples.length >= 1);
    const text = (await call('GET', '/metrics')).body as unknown as string;
    const families = parsePrometheus(text) as { name: string; type: string; metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string }[] }[];
    const value = (name: string) => Number(families.find((f) => f.name === name)?.metrics[0]?.value);
    const overview = (await call('GET', '/api/overview')).body as unknown as { sessions: { count: number }; counters: Record<string, number> };
    assert.equal(value('kiln_sessions'), overview.sessions.count);
    assert.equal(value('kiln_sessions_created_total'), 10_000);
    assert.equal(value('kiln_commits_total'), overview.counters['commits']);
    assert.equal(value('kiln_sessions_destroyed_total'), overview.counters['destroyed']);
    assert.equal(families.find((f) => f.name === 'kiln_sessions_created_total')?.type, 'COUNTER');
    const commitLatency = families.find((f) => f.name === 'kiln_commit_duration_seconds');
    assert.equal(commitLatency?.type, 'HISTOGRAM');
    assert.ok(value('kiln_connections') >= 1);
    const hits = families.find((f) => f.name === 'kiln_client_cache_hits');
    assert.ok(hits?.metrics.some((m) => m.labels?.['client']?.startsWith('admin-test')), 'per-client near-cache figures');
  });
});
