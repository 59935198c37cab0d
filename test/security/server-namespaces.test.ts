import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Engine } from '../../src/engines/engine.js';
import { isKilnError } from '../../src/errors/index.js';
import { MessageType } from '../../src/protocol/messages.js';
import { decodeAttribute } from '../../src/session/codec.js';
import type { SessionEvent } from '../../src/session/model.js';
import { removeDir, sleep, startKilnServer, tempDir, waitFor, type ServerProcess } from '../helpers/processes.js';
import { RawClient } from '../helpers/raw-client.js';
import { commitOf, createSession, engineFor, kilnRefuses, newToken } from './server-fixtures.js';

/**
 * Issue #22 item 5: one token controlled every session of every app. Now a token is
 * bound to a namespace, and a client of one namespace can neither read, write, destroy
 * nor hear about another's sessions, even knowing their ids and principals.
 */
const code = (c: string) => (err: unknown): boolean => isKilnError(err) && err.code === c;

describe('kiln server: namespaces (issue #22 item 5)', () => {
  const dir = tempDir('kiln-ns-');
  const tokenA = newToken();
  const tokenB = newToken();
  let server: ServerProcess;
  let a: Engine;
  let b: Engine;
  let d: Engine;

  before(async () => {
    writeFileSync(join(dir, 'b.token'), `${tokenB}\n`);
    writeFileSync(join(dir, 'tokens'), `# namespace token\napp-a ${tokenA}\napp-b @${join(dir, 'b.token')}\n`);
    server = await startKilnServer({ dataDir: join(dir, 'data'), args: ['--tokens-file', join(dir, 'tokens')] });
    [a, b, d] = await Promise.all([engineFor(server.url, tokenA), engineFor(server.url, tokenB), engineFor(server.url, server.token)]);
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close(), d?.close()]);
    await server?.kill();
    removeDir(dir);
  });

  it("a client of namespace B cannot load, commit, destroy or log out namespace A's session", async () => {
    const { id, token } = await createSession(a, { secret: 'a-only' }, { principal: 'alice' });
    await a.release(id, token);

    // B names A's id: it gets a lease on a session of its own namespace, which is empty.
    const grant = await b.acquire(id);
    assert.equal(grant.snapshot, null, 'B sees nothing of A');
    assert.equal(await b.load(id, grant.token), null);
    await assert.rejects(b.commit(commitOf(id, grant.token, 1, { secret: 'overwritten' })), code('KILN_ERR_SESSION_NOT_FOUND'));
    await b.release(id, grant.token);
    assert.equal(await b.destroy(id), false);
    assert.deepEqual(await b.findByPrincipal('alice'), []);
    assert.equal(await b.destroyByPrincipal('alice'), 0);
    assert.equal((await b.list({ limit: 100 })).sessions.length, 0);
    // Nor can the default namespace's token.
    assert.equal(await d.destroy(id), false);
    assert.equal(await d.destroyByPrincipal('alice'), 0);

    const again = await a.acquire(id);
    assert.equal(decodeAttribute(again.snapshot!.attributes.get('secret')!), 'a-only');
    assert.equal(again.snapshot!.meta.principal, 'alice');
    assert.deepEqual((await a.findByPrincipal('alice')).map((m) => m.id), [id]);
    await a.release(id, again.token);
  });

  it("A's and B's sessions of the same id are independent: leases, data, destroy and events", async () => {
    const eventsA: SessionEvent[] = [];
    const eventsB: SessionEvent[] = [];
    a.onEvent((e) => eventsA.push(e));
    b.onEvent((e) => eventsB.push(e));
    await sleep(100); // the subscriptions reach the server
    const recalled: string[] = [];
    a.setLeaseHandler({ recall: (sid) => recalled.push(sid), revoked: (sid) => recalled.push(sid), lost: () => undefined });

    const sa = await createSession(a, { who: 'a' }, { principal: 'sam' });
    // B takes the same id while A holds its lease: no recall reaches A, B is granted at once.
    const sb = await createSession(b, { who: 'b' }, { principal: 'sam' }, sa.id);
    assert.deepEqual(recalled, []);
    assert.equal((await b.list({ limit: 10 })).sessions.length, 1);
    assert.equal((await b.list({ limit: 10 })).total, 1);

    assert.equal(await b.destroyByPrincipal('sam'), 1);
    await waitFor(() => eventsB.some((e) => e.sessionId === sb.id && e.type === 'destroyed'), 3000, "B's event");
    const grant = await a.acquire(sa.id);
    assert.equal(grant.token, sa.token, 'A still holds its lease');
    assert.equal(decodeAttribute(grant.snapshot!.attributes.get('who')!), 'a');
    await sleep(100);
    assert.equal(eventsA.filter((e) => e.sessionId === sa.id).length, 0, "A heard nothing of B's logout");
    assert.equal(eventsA.some((e) => e.principal?.includes('\u0000')), false);
    assert.equal(eventsB.find((e) => e.sessionId === sb.id)?.principal, 'sam', 'events carry the client-side principal');
    assert.deepEqual(recalled, []);
  });

  it('a client cannot name a principal that reaches into another namespace', async () => {
    const raw = await RawClient.open(server.port);
    raw.hello(server.token);
    await raw.reply(1);
    raw.send(MessageType.DestroyPrincipal, 2, { principal: '\u0000app-a\u0000alice' });
    const answer = await raw.reply(2);
    assert.equal(answer.type, MessageType.Error);
    assert.equal((answer.body as { code: string }).code, 'KILN_ERR_INVALID_ARGUMENT');
    assert.equal((await a.findByPrincipal('alice')).length, 1, "A's alice is still logged in");
    raw.destroy();
  });

  it('namespaced sessions survive a restart, and the default namespace keeps its data', async () => {
    const inA = await createSession(a, { n: 'a' });
    const inDefault = await createSession(d, { n: 'default' });
    await Promise.all([a.close(), b.close(), d.close()]);
    await server.stop();
    // Restarted without the tokens file: the data directory of a server with one token loads as before.
    server = await startKilnServer({ dataDir: join(dir, 'data') });
    d = await engineFor(server.url, server.token);
    const g = await d.acquire(inDefault.id);
    assert.equal(decodeAttribute(g.snapshot!.attributes.get('n')!), 'default');
    assert.equal((await d.acquire(inA.id)).snapshot, null, "A's session is not the default namespace's");
    await d.close();
    await server.stop();
    server = await startKilnServer({ dataDir: join(dir, 'data'), args: ['--tokens-file', join(dir, 'tokens')] });
    [a, b, d] = await Promise.all([engineFor(server.url, tokenA), engineFor(server.url, tokenB), engineFor(server.url, server.token)]);
    const ga = await a.acquire(inA.id);
    assert.equal(decodeAttribute(ga.snapshot!.attributes.get('n')!), 'a');
    assert.equal((await a.findByPrincipal('alice')).length, 1);
    assert.equal((await b.acquire(inA.id)).snapshot, null);
  });
});

describe('kiln server: tokens and --insecure-no-auth', () => {
  const dir = tempDir('kiln-tok-');
  after(() => removeDir(dir));

  it('refuses a token file shorter than 32 bytes, naming the file', async () => {
    const file = join(dir, 'short.token');
    writeFileSync(file, 'short-but-not-32-bytes\n');
    const { code: exit, output } = await kilnRefuses(['server', '--no-data', '--port', '0', '--token-file', file]);
    assert.notEqual(exit, 0);
    assert.match(output, /KILN_ERR_INVALID_OPTION/);
    assert.ok(output.includes(file), output);
    assert.match(output, /32 bytes/);
  });

  it('refuses a short KILN_TOKEN and a short token in a tokens file', async () => {
    const short = await kilnRefuses(['server', '--no-data', '--port', '0'], { KILN_TOKEN: 'abc' });
    assert.notEqual(short.code, 0);
    assert.match(short.output, /KILN_TOKEN.*32 bytes/);
    const file = join(dir, 'tokens');
    writeFileSync(file, `ok ${newToken()}\nweak 0123456789\n`);
    const weak = await kilnRefuses(['server', '--no-data', '--port', '0', '--tokens-file', file]);
    assert.notEqual(weak.code, 0);
    assert.ok(weak.output.includes(`${file} line 2`), weak.output);
  });

  it('refuses a tokens file with a bad namespace, a repeated namespace or a shared token', async () => {
    const token = newToken();
    for (const [text, what] of [[`bad/name ${token}\n`, /namespace "bad\/name"/], [`x ${token}\nx ${newToken()}\n`, /listed twice/], [`x ${token}\ny ${token}\n`, /already another namespace's/]] as const) {
      const file = join(dir, 'tokens');
      writeFileSync(file, text);
      const r = await kilnRefuses(['server', '--no-data', '--port', '0', '--tokens-file', file]);
      assert.notEqual(r.code, 0);
      assert.match(r.output, what);
    }
  });

  it('refuses --insecure-no-auth on a non-loopback --host', async () => {
    const r = await kilnRefuses(['server', '--no-data', '--port', '0', '--host', '0.0.0.0', '--insecure-no-auth']);
    assert.notEqual(r.code, 0);
    assert.match(r.output, /insecureNoAuth only on a loopback host/);
  });
});
