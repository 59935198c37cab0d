import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Engine } from '../../src/engines/engine.js';
import { connect } from '../../src/engines/kiln/kiln-engine.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { MessageType } from '../../src/protocol/messages.js';
import { removeDir, selfSignedCertificate, sleep, startKilnServer, tempDir, type ServerProcess } from '../helpers/processes.js';
import { HandshakeThrottle } from '../../src/server/handshake-throttle.js';
import { RawClient } from '../helpers/raw-client.js';
import { commitOf, createSession, engineFor, rssMiB } from './server-fixtures.js';

/**
 * Issue #22 item 4: anonymous peers must not lock app servers out of the kiln server.
 * Before: idle sockets took --max-connections slots (a new app server was refused) and
 * every socket could make the server buffer an 8 MiB frame before its handshake (32 of
 * them took the server from 80 to 300 MiB resident).
 *
 * The attacker connects from 127.0.0.2 (Linux routes all of 127/8 to loopback), as an
 * attacker would from an address of its own: the failed-handshake throttle is per address.
 */
const ATTACKER = '127.0.0.2';

function openFrom(port: number): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port, localAddress: ATTACKER });
    socket.on('error', () => resolve(undefined));
    socket.once('connect', () => resolve(socket));
  });
}

/**
 * Idle sockets (never a Hello) and sockets announcing an 8 MiB frame and streaming it,
 * opened 16 at a time from ATTACKER for 4 s, while `app` commits every few ms and a
 * second app server connects mid-flood.
 */
async function floodWhileCommitting(server: ServerProcess, app: Engine): Promise<void> {
  const { id, token } = await createSession(app, { n: 0 });
  const rssBefore = rssMiB(server.pid);
  const sockets: Socket[] = [];
  let flooding = true;
  let opened = 0;
  const big = Buffer.alloc(8 * 1024 * 1024 - 6);
  const header = encodeFrame(MessageType.Hello, 1, Buffer.alloc(0));
  header.writeUInt32BE(8 * 1024 * 1024, 0);
  const flood = (async () => {
    while (flooding) {
      const batch = await Promise.all(Array.from({ length: 16 }, () => openFrom(server.port)));
      for (const [i, socket] of batch.entries()) {
        if (!socket) continue;
        opened++;
        sockets.push(socket);
        if (i % 2 === 0) {
          socket.write(header);
          socket.write(big);
        }
      }
      await sleep(20);
    }
  })();

  let version = 1;
  let commits = 0;
  let worstMs = 0;
  const until = Date.now() + 4000;
  let newcomer: Engine | undefined;
  try {
    while (Date.now() < until) {
      const started = performance.now();
      const ack = await app.commit(commitOf(id, token, version, { n: version }));
      worstMs = Math.max(worstMs, performance.now() - started);
      version = ack.version;
      commits++;
      if (!newcomer && Date.now() > until - 3000) newcomer = await engineFor(server.url, server.token);
      await sleep(5);
    }
    // Authenticated clients always have room: the newcomer joined mid-flood and works.
    assert.ok(newcomer, 'a new app server connected during the flood');
    const other = await createSession(newcomer, { from: 'newcomer' });
    assert.equal(typeof other.token, 'number');
    const rssDuring = rssMiB(server.pid);
    assert.ok(opened >= 100, `the flood opened ${opened} sockets`);
    assert.ok(commits >= 50, `the app committed ${commits} times during the flood`);
    assert.ok(rssDuring - rssBefore < 64, `server RSS grew from ${rssBefore.toFixed(0)} to ${rssDuring.toFixed(0)} MiB`);
    assert.ok(worstMs < 2000, `slowest commit during the flood took ${worstMs.toFixed(0)} ms`);
  } finally {
    flooding = false;
    await flood;
    for (const s of sockets) s.destroy();
    await newcomer?.close();
  }
}

describe('kiln server: pre-auth flood (issue #22 item 4)', () => {
  let server: ServerProcess;
  let app: Engine;
  before(async () => {
    server = await startKilnServer({ args: ['--max-connections', '20', '--max-handshaking', '16', '--handshake-timeout-ms', '1000'] });
    app = await engineFor(server.url, server.token);
  });
  after(async () => {
    await app?.close();
    await server?.kill();
  });

  it('an app keeps committing, a new app gets in and the server stays small while idle and big-frame sockets flood it', () => floodWhileCommitting(server, app));

  it('the same with the failed-handshake throttle off: the frame limit, the handshake cap and its deadline hold alone', async () => {
    const unthrottled = await startKilnServer({ args: ['--max-connections', '20', '--max-handshaking', '16', '--handshake-timeout-ms', '1000', '--handshake-failure-limit', '0'] });
    const client = await engineFor(unthrottled.url, unthrottled.token);
    try {
      await floodWhileCommitting(unthrottled, client);
    } finally {
      await client.close();
      await unthrottled.kill();
    }
  });

  it('refuses a pre-auth frame above 16 KiB from its length header, before any body', async () => {
    const raw = await RawClient.open(server.port);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(16 * 1024 + 7, 0);
    raw.write(header);
    assert.equal(await raw.closedWithin(3000), true);
    assert.equal(raw.lastError()?.code, 'KILN_ERR_FRAME_TOO_LARGE');
  });

  it('closes a socket that sends no Hello within --handshake-timeout-ms', async () => {
    const raw = await RawClient.open(server.port);
    const started = Date.now();
    assert.equal(await raw.closedWithin(3000), true);
    assert.ok(Date.now() - started < 2500, 'closed within the handshake deadline');
    assert.equal(raw.lastError()?.code, 'KILN_ERR_AUTH');
  });
});

describe('kiln server: failed handshakes are throttled per address', () => {
  it('after --handshake-failure-limit wrong tokens an address is refused at once, another address is not', async () => {
    const server = await startKilnServer({ args: ['--handshake-failure-limit', '5'] });
    try {
      for (let i = 0; i < 5; i++) {
        const raw = await RawClient.open(server.port, ATTACKER);
        raw.hello('wrong-token-wrong-token-wrong-token');
        assert.equal(await raw.closedWithin(3000), true);
        assert.equal(raw.lastError()?.code, 'KILN_ERR_AUTH');
      }
      const blocked = await RawClient.open(server.port, ATTACKER);
      // Refused before it says anything, even with the right token.
      assert.equal(await blocked.closedWithin(3000), true);
      assert.equal(blocked.lastError()?.code, 'KILN_ERR_HANDSHAKE_THROTTLED');
      const app = await engineFor(server.url, server.token);
      await createSession(app);
      await app.close();
    } finally {
      await server.kill();
    }
  });
});

describe('kiln server: sockets pushed out of the handshake queue', () => {
  it('a client pushed out by a flood from many addresses is not blamed: its address is not throttled, and its app gets in', async () => {
    const VICTIM = '127.0.0.3';
    const server = await startKilnServer({ args: ['--max-handshaking', '4', '--handshake-failure-limit', '3', '--handshake-timeout-ms', '10000'] });
    const sockets: RawClient[] = [];
    try {
      // Four times: the victim's one handshake, then four from addresses of their own push it out.
      for (let round = 0; round < 4; round++) {
        const victim = await RawClient.open(server.port, VICTIM);
        sockets.push(victim);
        for (let i = 0; i < 4; i++) sockets.push(await RawClient.open(server.port, `127.0.${10 + round}.${10 + i}`));
        assert.equal(await victim.closedWithin(3000), true);
        assert.equal(victim.lastError()?.code, 'KILN_ERR_TOO_MANY_CONNECTIONS');
      }
      // Four failures against the victim's address would be past the limit of 3.
      const app = await RawClient.open(server.port, VICTIM);
      sockets.push(app);
      app.hello(server.token);
      assert.equal(await app.closedWithin(1000), false, `${app.lastError()?.code ?? 'closed'}: the victim's app is let in`);
    } finally {
      for (const socket of sockets) socket.destroy();
      await server.kill();
    }
  });

  it('one address flooding the queue is blamed for what it pushes out of its own, and throttled', async () => {
    const server = await startKilnServer({ args: ['--max-handshaking', '4', '--handshake-failure-limit', '5', '--handshake-timeout-ms', '10000'] });
    const sockets: RawClient[] = [];
    try {
      for (let i = 0; i < 12; i++) sockets.push(await RawClient.open(server.port, ATTACKER));
      const next = await RawClient.open(server.port, ATTACKER);
      sockets.push(next);
      assert.equal(await next.closedWithin(3000), true);
      assert.equal(next.lastError()?.code, 'KILN_ERR_HANDSHAKE_THROTTLED');
    } finally {
      for (const socket of sockets) socket.destroy();
      await server.kill();
    }
  });
});

describe('HandshakeThrottle', () => {
  it('remembers at most maxEntries addresses however many fail, forgetting the stalest first', () => {
    const throttle = new HandshakeThrottle({ maxFailures: 3, windowMs: 60_000, maxEntries: 100 });
    for (let i = 0; i < 3; i++) throttle.failed('10.0.0.1', 0);
    for (let n = 0; n < 100_000; n++) throttle.failed(`10.1.${n >> 8}.${n & 255}`, 1);
    assert.equal(throttle.size, 100);
    assert.equal(throttle.blocked('10.0.0.1', 2), false, 'the stalest address was forgotten');
    for (let i = 0; i < 3; i++) throttle.failed('10.0.0.2', 2);
    assert.equal(throttle.blocked('10.0.0.2', 3), true);
    assert.equal(throttle.blocked('10.0.0.2', 60_002), false, 'a window ends');
    throttle.failed('10.0.0.3', 0);
    throttle.failed('10.0.0.3', 0);
    throttle.failed('10.0.0.3', 0);
    throttle.succeeded('10.0.0.3');
    assert.equal(throttle.blocked('10.0.0.3', 1), false, 'a successful handshake starts the address afresh');
  });
});

/** A kiln server over TLS (a certificate of its own) started with `args`, for `use`; stopped and cleaned up after. */
async function withTlsServer(args: string[], use: (server: ServerProcess, cert: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  let server: ServerProcess | undefined;
  try {
    const { cert, key } = selfSignedCertificate(dir);
    server = await startKilnServer({ args: ['--tls-cert', cert, '--tls-key', key, ...args] });
    await use(server, cert);
  } finally {
    await server?.kill();
    removeDir(dir);
  }
}

describe('kiln server over TLS: unfinished TLS handshakes', () => {
  it('caps sockets in their TLS handshake: a flood from many addresses pushes the oldest out at once, without blaming it, and apps connected meanwhile are untouched', () =>
    withTlsServer(['--max-handshaking', '4', '--handshake-failure-limit', '3', '--handshake-timeout-ms', '10000'], async (server, cert) => {
      const VICTIM = '127.0.0.3';
      const sockets: RawClient[] = [];
      const apps: Engine[] = [];
      try {
        // More apps than the cap, each past its TLS handshake and holding a lease: none may be
        // taken for one still in it. They do not reconnect, and a lease does not outlive its
        // connection: a commit with it after the flood proves the connection survived.
        const held: { id: string; token: number }[] = [];
        for (let i = 0; i < 6; i++) {
          const app = connect(`kilns://127.0.0.1:${server.port}`, { token: server.token, tls: { ca: readFileSync(cert, 'utf8') }, operationTimeoutMs: 5000, reconnect: () => false });
          await app.connect();
          apps.push(app);
          held.push(await createSession(app, { app: i }));
        }
        // Four times: the victim's socket in its TLS handshake, then four from addresses of their own.
        for (let round = 0; round < 4; round++) {
          const victim = await RawClient.open(server.port, VICTIM);
          sockets.push(victim);
          for (let i = 0; i < 4; i++) sockets.push(await RawClient.open(server.port, `127.0.${20 + round}.${10 + i}`));
          const started = Date.now();
          assert.equal(await victim.closedWithin(3000), true, 'pushed out');
          assert.ok(Date.now() - started < 2000, `pushed out at once, not at the 10 s deadline (${Date.now() - started} ms)`);
        }
        // Four failures against the victim's address would be past the limit of 3: it would be closed at once.
        const again = await RawClient.open(server.port, VICTIM);
        sockets.push(again);
        assert.equal(await again.closedWithin(500), false, "the victim's address is not throttled");
        for (const [i, app] of apps.entries()) {
          const { id, token } = held[i]!;
          assert.equal((await app.commit(commitOf(id, token, 1, { app: i, again: true }))).version, 2, `app ${i} still connected, its lease still good`);
        }
      } finally {
        for (const socket of sockets) socket.destroy();
        await Promise.all(apps.map((app) => app.close()));
      }
    }));

  it('a peer that begins TLS handshakes and resets them is throttled; bare connects and closes (a TCP health check) are not', () =>
    withTlsServer(['--handshake-failure-limit', '3', '--handshake-timeout-ms', '10000'], async (server) => {
      const PROBE = '127.0.0.4';
      for (let i = 0; i < 6; i++) {
        const probe = await RawClient.open(server.port, PROBE);
        probe.destroy();
        await probe.closed;
      }
      // A TLS record header and the start of a ClientHello, then a reset (RST), before the server could finish.
      for (let i = 0; i < 3; i++) {
        const half = await RawClient.open(server.port, ATTACKER);
        half.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]));
        await sleep(50);
        half.socket.resetAndDestroy();
        await half.closed;
      }
      await sleep(100);
      const attacker = await RawClient.open(server.port, ATTACKER);
      let started = Date.now();
      assert.equal(await attacker.closedWithin(1000), true, 'the resetting address is throttled');
      assert.ok(Date.now() - started < 300, `closed at once (${Date.now() - started} ms)`);
      const probe = await RawClient.open(server.port, PROBE);
      started = Date.now();
      assert.equal(await probe.closedWithin(500), false, 'the health checker is not');
      probe.destroy();
    }));

  it('stops at once with sockets still in their TLS handshake (not at their deadline)', () =>
    withTlsServer(['--handshake-timeout-ms', '10000'], async (server) => {
      const silent = await RawClient.open(server.port, ATTACKER);
      try {
        await sleep(100);
        const started = Date.now();
        await server.stop('SIGTERM');
        assert.ok(Date.now() - started < 3000, `stopped in ${Date.now() - started} ms`);
        assert.equal(await silent.closedWithin(1000), true);
      } finally {
        silent.destroy();
      }
    }));

  it('one address flooding TLS handshakes is blamed for what it pushes out of its own, and throttled', () =>
    withTlsServer(['--max-handshaking', '4', '--handshake-failure-limit', '5', '--handshake-timeout-ms', '10000'], async (server) => {
      const sockets: RawClient[] = [];
      try {
        for (let i = 0; i < 12; i++) sockets.push(await RawClient.open(server.port, ATTACKER));
        await sleep(100);
        const next = await RawClient.open(server.port, ATTACKER);
        sockets.push(next);
        const started = Date.now();
        assert.equal(await next.closedWithin(3000), true);
        assert.ok(Date.now() - started < 300, `a throttled address is closed at once (${Date.now() - started} ms)`);
      } finally {
        for (const socket of sockets) socket.destroy();
      }
    }));

  it('closes a socket that never finishes its TLS handshake within --handshake-timeout-ms, and throttles its address', () =>
    withTlsServer(['--handshake-timeout-ms', '500', '--handshake-failure-limit', '2'], async (server) => {
      // Node's own deadline for a TLS handshake was 120 s, outside every cap.
      for (let i = 0; i < 2; i++) {
        const silent = await RawClient.open(server.port, ATTACKER);
        const started = Date.now();
        assert.equal(await silent.closedWithin(3000), true);
        assert.ok(Date.now() - started < 2000, `closed after ${Date.now() - started} ms`);
      }
      const third = await RawClient.open(server.port, ATTACKER);
      const started = Date.now();
      assert.equal(await third.closedWithin(3000), true);
      assert.ok(Date.now() - started < 300, 'a throttled address is closed at once');
    }));
});
