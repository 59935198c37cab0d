import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { generateSessionId } from '../../src/session/id.js';
import { encodeAttribute } from '../../src/session/codec.js';
import { freePort, removeDir, tempDir, waitFor } from '../helpers/processes.js';
import { startRedisNode, type RedisNode } from '../helpers/redis.js';

/**
 * Item 14 of #22: `rediss://` with a private CA. Redis speaks TLS only (`--port 0`);
 * the engine trusts the private CA given as `tls.ca` and refuses, quickly and with
 * KILN_ERR_TLS, a server whose certificate it cannot verify. Sentinel links have their
 * own TLS settings (`sentinelTls`).
 */
interface Pki {
  dir: string;
  ca: string;
  otherCa: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe', timeout: 30_000 });
}

/** A CA, a server certificate for 127.0.0.1 signed by it, a client certificate, and an unrelated CA. */
function makePki(): Pki {
  const dir = tempDir('kiln-redis-pki-');
  const selfSigned = (name: string) => openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.pem`);
  const signed = (name: string, ext: string) => {
    openssl(dir, 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`);
  };
  selfSigned('ca');
  selfSigned('other-ca');
  signed('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  signed('client', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string) => join(dir, f);
  return { dir, ca: p('ca.pem'), otherCa: p('other-ca.pem'), serverCert: p('server.pem'), serverKey: p('server.key'), clientCert: p('client.pem'), clientKey: p('client.key') };
}

function tlsArgs(pki: Pki, port: number, authClients: 'yes' | 'optional'): string[] {
  return ['--port', '0', '--tls-port', String(port), '--tls-cert-file', pki.serverCert, '--tls-key-file', pki.serverKey, '--tls-ca-cert-file', pki.ca, '--tls-auth-clients', authClients];
}

async function startTlsRedis(pki: Pki, authClients: 'yes' | 'optional'): Promise<RedisNode> {
  const port = await freePort();
  return startRedisNode({ port, args: tlsArgs(pki, port, authClients) });
}

/** One commit and a read back: the link carries the engine's real traffic. */
async function roundTrip(engine: RedisEngine): Promise<void> {
  await engine.connect();
  const id = generateSessionId();
  const { token } = await engine.acquire(id);
  await engine.commit({ sessionId: id, token, commitId: 'c1', baseVersion: 0, lastAccessedAt: Date.now(), set: [['user', encodeAttribute('user', 'ada')]], del: [] });
  const snap = await engine.load(id, token);
  assert.equal(snap?.meta.version, 1);
  await engine.release(id, token);
}

async function refusedQuickly(engine: RedisEngine, code: string, pattern: RegExp): Promise<void> {
  const started = Date.now();
  await assert.rejects(engine.connect(), (err: unknown) => {
    assert.ok(isKilnError(err), String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
  // Well inside connectTimeoutMs (10 s): a certificate refusal is not retried until the deadline.
  assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`);
  await engine.close();
}

const engines: RedisEngine[] = [];
function engine(options: ConstructorParameters<typeof RedisEngine>[0]): RedisEngine {
  const e = new RedisEngine({ connectTimeoutMs: 10_000, operationTimeoutMs: 5000, ...options });
  engines.push(e);
  return e;
}

describe('security: Redis over TLS with a private CA (#22 item 14)', () => {
  let pki: Pki;
  before(() => {
    pki = makePki();
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close().catch(() => undefined)));
    removeDir(pki.dir);
  });

  describe('a data node speaking TLS only', () => {
    let node: RedisNode;
    before(async () => {
      node = await startTlsRedis(pki, 'optional');
    });
    after(() => node.kill());

    it('connects with the private CA, given as a path or as PEM text, and commits', async () => {
      await roundTrip(engine({ url: `rediss://127.0.0.1:${node.port}`, tls: { ca: pki.ca } }));
      await roundTrip(engine({ url: `rediss://127.0.0.1:${node.port}`, tls: { ca: readFileSync(pki.ca, 'utf8') } }));
    });

    it('takes the CA from the URL too (kiln console --engine, KILN_ENGINE)', async () => {
      await roundTrip(engine({ url: `rediss://127.0.0.1:${node.port}?ca=${encodeURIComponent(pki.ca)}` }));
    });

    it('refuses, at once and with KILN_ERR_TLS, a server signed by a CA it was not given', async () => {
      await refusedQuickly(engine({ url: `rediss://127.0.0.1:${node.port}` }), 'KILN_ERR_TLS', /certificate/i);
      await refusedQuickly(engine({ url: `rediss://127.0.0.1:${node.port}`, tls: { ca: pki.otherCa } }), 'KILN_ERR_TLS', /certificate/i);
    });

    it('checks the name: a servername the certificate does not carry is refused', async () => {
      await refusedQuickly(engine({ url: `rediss://127.0.0.1:${node.port}`, tls: { ca: pki.ca, servername: 'redis.example.org' } }), 'KILN_ERR_TLS', /redis\.example\.org|altnames|certificate/i);
    });

    it('a plaintext redis:// URL to the TLS port fails within the connect deadline', async () => {
      const started = Date.now();
      await assert.rejects(engine({ url: `redis://127.0.0.1:${node.port}`, connectTimeoutMs: 1500 }).connect(), (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_ENGINE_UNAVAILABLE');
      assert.ok(Date.now() - started < 5000);
    });
  });

  describe('a data node that requires client certificates', () => {
    let node: RedisNode;
    before(async () => {
      node = await startTlsRedis(pki, 'yes');
    });
    after(() => node.kill());

    it('connects with tls.cert and tls.key', async () => {
      await roundTrip(engine({ url: `rediss://127.0.0.1:${node.port}`, tls: { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey } }));
    });

    it('without a client certificate the engine does not hang: it fails before its deadline', async () => {
      const started = Date.now();
      await assert.rejects(engine({ url: `rediss://127.0.0.1:${node.port}`, tls: { ca: pki.ca }, connectTimeoutMs: 3000 }).connect(), (err: unknown) => isKilnError(err) && /TLS|ENGINE_UNAVAILABLE|CONNECTION_LOST/.test(err.code));
      assert.ok(Date.now() - started < 6000, `took ${Date.now() - started} ms`);
    });
  });

  describe('options are checked when the engine is made, naming the option', () => {
    const refused = (options: Record<string, unknown>, option: string) =>
      assert.throws(
        () => new RedisEngine(options as ConstructorParameters<typeof RedisEngine>[0]),
        (err: unknown) => isKilnError(err) && err.code === 'KILN_ERR_INVALID_OPTION' && (err.details as { option?: string } | undefined)?.option === option,
      );

    it('a CA file that does not exist, a cert without its key, PEM that does not load, an unknown key', () => {
      refused({ url: 'rediss://127.0.0.1:6380', tls: { ca: join(pki.dir, 'missing.pem') } }, 'tls.ca');
      refused({ url: 'rediss://127.0.0.1:6380', tls: { ca: pki.ca, cert: pki.clientCert } }, 'tls.key');
      refused({ url: 'rediss://127.0.0.1:6380', tls: { ca: '-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n' } }, 'tls.ca');
      refused({ url: 'rediss://127.0.0.1:6380', tls: { cafile: pki.ca } }, 'tls.cafile');
      refused({ url: 'rediss://127.0.0.1:6380', tls: { rejectUnauthorized: 'no' } }, 'tls.rejectUnauthorized');
    });

    it('TLS settings that would be ignored are refused: tls on redis://, sentinelTls without Sentinel', () => {
      refused({ url: 'redis://127.0.0.1:6379', tls: { ca: pki.ca } }, 'tls');
      refused({ url: 'rediss://127.0.0.1:6379', sentinelTls: { ca: pki.ca } }, 'sentinelTls');
    });
  });

  describe('Sentinel over TLS: sentinels and data node both TLS-only, each with its own settings', () => {
    let master: RedisNode;
    let sentinel: RedisNode;
    before(async () => {
      master = await startTlsRedis(pki, 'optional');
      const port = await freePort();
      sentinel = await startRedisNode({
        port,
        sentinelConfig: [`sentinel monitor tlsmaster 127.0.0.1 ${master.port} 1`, 'sentinel down-after-milliseconds tlsmaster 5000', 'tls-replication yes'].join('\n') + '\n',
        args: tlsArgs(pki, port, 'optional'),
      });
      // The sentinel talks to the master over TLS (tls-replication): wait until it sees it up.
      await waitFor(() => /\+monitor master tlsmaster/.test(sentinel.output()), 10_000, 'sentinel monitoring the TLS master');
    });
    after(async () => {
      await sentinel?.kill();
      await master?.kill();
    });

    it('connects with sentinelTls and tls, and commits', async () => {
      await roundTrip(engine({ url: `rediss+sentinel://127.0.0.1:${sentinel.port}/tlsmaster`, tls: { ca: pki.ca }, sentinelTls: { ca: pki.ca } }));
    });

    it('the sentinel link is TLS on its own: without sentinelTls the engine cannot reach a TLS-only sentinel', async () => {
      const started = Date.now();
      await assert.rejects(engine({ url: `rediss+sentinel://127.0.0.1:${sentinel.port}/tlsmaster`, tls: { ca: pki.ca }, connectTimeoutMs: 2000 }).connect(), (err: unknown) => isKilnError(err));
      assert.ok(Date.now() - started < 6000);
    });

    it('an untrusted sentinel certificate is refused', async () => {
      await assert.rejects(engine({ url: `rediss+sentinel://127.0.0.1:${sentinel.port}/tlsmaster`, tls: { ca: pki.ca }, sentinelTls: { ca: pki.otherCa }, connectTimeoutMs: 3000 }).connect(), (err: unknown) => isKilnError(err) && /TLS|ENGINE_UNAVAILABLE/.test(err.code));
    });
  });
});
