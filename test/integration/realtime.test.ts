import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startApp, type AppProcess } from '../helpers/apps.js';
import { startKilnCommand, startKilnServer, waitFor, type KilnCommandProcess, type ServerProcess } from '../helpers/processes.js';
import { openIo, openWs, type IoClient, type WsClient } from '../helpers/realtime.js';

/**
 * kiln/ws and kiln/socket.io on three app servers behind kiln balancer, one kiln server:
 * socket handlers and HTTP requests on one session never lose a write, see each other's
 * changes at once, and every socket of a session closes when it ends, on every node.
 */
const SECRET = 'realtime-secret-0123456789-abcdefghij';
const CLOSE_CODE = 4001;

interface Browser { cookie: string; node: string; id: string }

async function post(url: string, path: string, cookie?: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown>; cookie?: string }> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) }, body: JSON.stringify(body ?? {}) });
  const set = res.headers.getSetCookie().map((c) => c.split(';')[0]!).find((c) => c.startsWith('connect.sid='));
  return { status: res.status, json: (await res.json()) as Record<string, unknown>, ...(set ? { cookie: set } : {}) };
}

describe('sessions in ws and socket.io handlers, three nodes behind kiln balancer', () => {
  let server: ServerProcess;
  const apps = new Map<string, AppProcess>();
  let balancer: KilnCommandProcess;
  let lb = '';

  const startNode = async (name: string, extra: Record<string, string> = {}) => {
    const app = await startApp('realtime-app', { NODE_NAME: name, KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRET: SECRET, ...extra });
    apps.set(name, app);
    return app;
  };

  /** A new visitor: a session made through the balancer (the node it lands on names its route). */
  const visitor = async (): Promise<Browser> => {
    const made = await post(lb, '/incr');
    assert.equal(made.status, 200);
    const id = decodeURIComponent(made.cookie!.slice('connect.sid='.length)).replace(/^s:/, '').replace(/\.[^.]+$/, '');
    return { cookie: made.cookie!, node: String(made.json['node']), id };
  };
  const count = async (b: Browser) => Number(((await (await fetch(`${lb}/count`, { headers: { cookie: b.cookie } })).json()) as { count: number }).count);

  before(async () => {
    server = await startKilnServer({ args: ['--expiry-sweep-ms', '100', '--touch-grace-ms', '100'] });
    for (const name of ['app-1', 'app-2', 'app-3']) await startNode(name);
    const nodes = [...apps].flatMap(([name, app]) => ['--node', `${name}=${app.url}`]);
    balancer = await startKilnCommand(['balancer', '--port', '0', '--log-level', 'warn', '--health-interval-ms', '200', ...nodes], {}, /ready on (http:\/\/\S+)/, 'kiln balancer');
    lb = balancer.match[1]!;
  });
  after(async () => {
    await balancer?.stop();
    await Promise.all([...apps.values()].map((a) => a.stop()));
    await server?.stop();
  });

  it('100 increments from ws, socket.io and HTTP at once, on every node, on one session: exactly 100, each count once', async () => {
    const b = await visitor();
    const start = await count(b);
    const others = [...apps.keys()].filter((n) => n !== b.node);
    const viaBalancer = await openWs(lb, b.cookie);
    assert.equal(viaBalancer.hello.node, b.node, 'the upgrade followed the session route');
    const elsewhere = await openWs(apps.get(others[0]!)!.url, b.cookie);
    const io = await openIo(apps.get(others[1]!)!.url, b.cookie);
    assert.equal(viaBalancer.hello.sessionId, b.id);
    const jobs: Promise<{ count?: number; error?: string }>[] = [];
    for (let i = 0; i < 25; i++) {
      jobs.push(viaBalancer.ask('incr'), elsewhere.ask('incr'), io.ask('incr'));
      const node = [...apps.values()][i % 3]!;
      jobs.push(post(node.url, '/incr', b.cookie).then((r) => ({ count: Number(r.json['count']) })));
    }
    const answers = await Promise.all(jobs);
    assert.deepEqual(answers.filter((a) => a.error), []);
    const counts = answers.map((a) => a.count!).sort((x, y) => x - y);
    assert.deepEqual(counts, Array.from({ length: 100 }, (_, k) => start + k + 1), 'every increment saw the one before it');
    assert.equal(await count(b), start + 100);
    for (const c of [viaBalancer, elsewhere, io]) c.close();
  });

  it('an HTTP change on one node is what the next socket event on another node reads', async () => {
    const b = await visitor();
    const [first, second] = [...apps.keys()].filter((n) => n !== b.node);
    const ws = await openWs(apps.get(first!)!.url, b.cookie);
    const io = await openIo(apps.get(second!)!.url, b.cookie);
    for (let i = 0; i < 5; i++) {
      const http = await post(apps.get(b.node)!.url, '/incr', b.cookie);
      const seen = Number(http.json['count']);
      assert.equal((await ws.ask('get')).count, seen);
      assert.equal((await io.ask('get')).count, seen);
      assert.equal((await ws.ask('peek')).count, seen, 'a read-only snapshot is current too');
      const bumped = await ws.ask('incr');
      assert.equal(bumped.count, seen + 1);
      assert.equal(await count(b), seen + 1);
    }
    assert.equal((await ws.ask('peek-write')).error, 'KILN_ERR_READ_ONLY_SESSION');
    assert.equal(await count(b), Number((await ws.ask('get')).count), 'the refused write changed nothing');
    ws.close();
    io.close();
  });

  const socketsOnEveryNode = async (b: Browser): Promise<{ ws: WsClient[]; io: IoClient[] }> => ({
    ws: await Promise.all([...apps.values()].map((a) => openWs(a.url, b.cookie))),
    io: await Promise.all([...apps.values()].map((a) => openIo(a.url, b.cookie))),
  });
  const allEnded = async (s: { ws: WsClient[]; io: IoClient[] }) => {
    const ws = await Promise.all(s.ws.map((c) => c.closed));
    const io = await Promise.all(s.io.map((c) => c.ended));
    return { codes: [...ws.map((c) => c.code), ...io.map((c) => c.code)], last: Math.max(...ws.map((c) => c.at), ...io.map((c) => c.at)) };
  };

  it('a logout closes every socket of the session on every node within 1 s', async (t) => {
    const b = await visitor();
    const sockets = await socketsOnEveryNode(b);
    const bystander = await visitor();
    const other = await openWs(lb, bystander.cookie);
    const t0 = Date.now();
    assert.equal((await post(lb, '/logout', b.cookie)).status, 200);
    const ended = await allEnded(sockets);
    assert.deepEqual(ended.codes, Array(6).fill(CLOSE_CODE));
    t.diagnostic(`6 sockets on 3 nodes closed within ${ended.last - t0} ms of the logout`);
    assert.ok(ended.last - t0 < 1000, `last socket closed ${ended.last - t0} ms after the logout`);
    assert.ok(other.isOpen(), 'another session\'s socket stays open');
    assert.equal((await other.ask('incr')).count, 2);
    other.close();
  });

  it('socket.io: a socket a later middleware refuses is not kept once its connection closes', async () => {
    const b = await visitor();
    const app = apps.get(b.node)!;
    const ioSockets = async () => ((await (await fetch(`${app.url}/sockets`)).json()) as { io: number }).io;
    const before = await ioSockets();
    for (let i = 0; i < 5; i++) await assert.rejects(openIo(`${app.url}/refused`, b.cookie), /refused by the app/);
    await waitFor(async () => (await ioSockets()) === before, 5_000, 'the refused sockets let go');
  });

  it('log out everywhere closes the sockets of every session of the user, on every node, within 1 s', async (t) => {
    const phone = await visitor();
    const laptop = await visitor();
    const login = async (b: Browser) => {
      const r = await post(lb, '/login', b.cookie, { user: 'lee' });
      b.cookie = r.cookie!;
      b.id = String(r.json['id']);
    };
    await login(phone);
    await login(laptop);
    const phoneSockets = await socketsOnEveryNode(phone);
    const laptopSockets = await socketsOnEveryNode(laptop);
    const t0 = Date.now();
    const ended = await post(lb, '/logout-everywhere', laptop.cookie);
    assert.equal(ended.json['ended'], 2);
    for (const s of [phoneSockets, laptopSockets]) {
      const done = await allEnded(s);
      assert.deepEqual(done.codes, Array(6).fill(CLOSE_CODE));
      t.diagnostic(`6 sockets closed within ${done.last - t0} ms of log out everywhere`);
      assert.ok(done.last - t0 < 1000, `closed ${done.last - t0} ms after log out everywhere`);
    }
  });

  it('a regenerate() over HTTP (login) closes the sockets of the old id; a socket handler cannot regenerate', async () => {
    const b = await visitor();
    const ws = await openWs(lb, b.cookie);
    assert.equal((await ws.ask('regenerate')).error, 'KILN_ERR_INVALID_ARGUMENT');
    assert.ok(ws.isOpen());
    const t0 = Date.now();
    const login = await post(lb, '/login', b.cookie, { user: 'kim' });
    const closed = await ws.closed;
    assert.equal(closed.code, CLOSE_CODE);
    assert.ok(closed.at - t0 < 1000);
    const again = await openWs(lb, login.cookie);
    assert.equal((await again.ask('get')).count, 1, 'the new id carries the data on');
    assert.equal((await again.ask('switch-user')).error, 'KILN_ERR_INVALID_ARGUMENT', 'nor can a socket handler switch a logged-in session to another user');
    again.close();
  });

  it('a SIGKILLed node\'s sockets reconnect through the balancer to another node and carry on with the session', async () => {
    const b = await visitor();
    const ws = await openWs(lb, b.cookie);
    const before = (await ws.ask('incr')).count!;
    const victim = ws.hello.node;
    await apps.get(victim)!.kill();
    await ws.closed;
    // What a browser's reconnect loop does: try again until a node answers.
    const again = await waitFor(() => openWs(lb, b.cookie).catch(() => undefined), 10_000, 'reconnected');
    assert.notEqual(again.hello.node, victim);
    assert.equal((await again.ask('incr')).count, before + 1, 'the session carried on, nothing lost');
    // socket.io the same way: a new connection through the balancer lands on a live node.
    const io = await waitFor(() => openIo(lb, b.cookie).catch(() => undefined), 10_000, 'socket.io reconnected');
    assert.notEqual(io.hello.node, victim);
    assert.equal((await io.ask('incr')).count, before + 2);
    io.close();
    again.close();
    await startNode(victim);
  });

  it('requireSession refuses an upgrade without a live session (401); without it the socket connects and its handler is told', async () => {
    const strict = await startApp('realtime-app', { NODE_NAME: 'strict', KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRET: SECRET, REQUIRE_SESSION: '1' });
    try {
      await assert.rejects(openWs(strict.url, undefined), (err: { status?: number }) => err.status === 401);
      await assert.rejects(openWs(strict.url, 'connect.sid=s%3Aforged.sig'), (err: { status?: number }) => err.status === 401);
      await assert.rejects(openIo(strict.url, undefined), /no session/);
      const b = await visitor();
      const ws = await openWs(strict.url, b.cookie);
      assert.equal((await ws.ask('get')).count, 1);
      ws.close();
      const loggedOut = await visitor();
      await post(lb, '/logout', loggedOut.cookie);
      await assert.rejects(openWs(strict.url, loggedOut.cookie), (err: { status?: number }) => err.status === 401);
    } finally {
      await strict.stop();
    }
    // Without requireSession the socket connects, and its handler is told there is no session.
    const open = await openWs(lb, undefined);
    assert.equal(open.hello.sessionId, null);
    assert.equal((await open.ask('get')).error, 'KILN_ERR_SESSION_NOT_FOUND');
    open.close();
  });
});

describe('socket activity keeps a session alive; its expiry closes its sockets on every node', () => {
  let server: ServerProcess;
  const apps: AppProcess[] = [];
  before(async () => {
    server = await startKilnServer({ args: ['--expiry-sweep-ms', '100', '--touch-grace-ms', '100'] });
    for (const name of ['short-1', 'short-2']) {
      apps.push(await startApp('realtime-app', { NODE_NAME: name, KILN_ENGINE: server.url, KILN_TOKEN: server.token, SESSION_SECRET: SECRET, IDLE_TIMEOUT_MS: '1500', KEEP_ALIVE_MS: '300' }));
    }
  });
  after(async () => {
    await Promise.all(apps.map((a) => a.stop()));
    await server?.stop();
  });

  it('messages keep the session past its idle timeout; once they stop, expiry closes every socket within 1 s of the deadline', async (t) => {
    const made = await post(apps[0]!.url, '/incr');
    const cookie = made.cookie!;
    const sockets = await Promise.all(apps.map((a) => openWs(a.url, cookie)));
    const io = await openIo(apps[1]!.url, cookie);
    // Four idle timeouts of pings (messages that do not use the session): it stays alive.
    for (let i = 0; i < 20; i++) {
      sockets[i % 2]!.raw.send(JSON.stringify({ op: 'ping' }));
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    assert.ok(sockets.every((s) => s.isOpen()), 'still open after 6 s of activity with a 1.5 s idle timeout');
    assert.equal((await sockets[0]!.ask('get')).count, 1);
    const lastUse = Date.now();
    const closed = await Promise.all(sockets.map((s) => s.closed));
    const ended = await io.ended;
    for (const c of [...closed, ended]) assert.equal(c.code, CLOSE_CODE);
    assert.match(closed[0]!.reason, /expired/);
    const last = Math.max(...closed.map((c) => c.at), ended.at);
    // The deadline: last use + idle timeout (+ the keep-alive round that may have touched it once more, + grace).
    const deadline = lastUse + 1500 + 300 + 100;
    t.diagnostic(`expiry closed 3 sockets on 2 nodes ${last - lastUse} ms after the last use (idle timeout 1500 ms)`);
    assert.ok(last - deadline < 1000, `closed ${last - deadline} ms after the deadline`);
  });
});
