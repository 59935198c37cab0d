import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createSessionClient } from '../../src/client/session-client.js';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import type { SessionEvent } from '../../src/session/model.js';
import { waitFor } from '../helpers/processes.js';
import { redisCli, startStandalone, type RedisDeployment } from '../helpers/redis.js';

/**
 * Managed Redis often disables CONFIG and keyspace notifications. Kiln needs neither:
 * it keeps its own expiry index and sweeps it, and publishes its own events. This
 * server has CONFIG renamed away and notifications off.
 */
describe('Redis with CONFIG disabled (rename-command CONFIG "")', () => {
  let redis: RedisDeployment;
  const engines: RedisEngine[] = [];

  before(async () => {
    redis = await startStandalone(['--rename-command', 'CONFIG', '', '--notify-keyspace-events', '']);
  });
  after(async () => {
    await Promise.all(engines.map((e) => e.close()));
    await redis.stop();
  });

  async function engine(): Promise<RedisEngine> {
    const e = new RedisEngine({ url: redis.url, expirySweepMs: 50, touchGraceMs: 50, heartbeatMs: 200 });
    await e.connect();
    engines.push(e);
    return e;
  }

  it('really has no CONFIG', async () => {
    await assert.rejects(redisCli(redis.nodes[0]!.port, 'CONFIG', 'GET', 'notify-keyspace-events').then((out) => {
      if (/unknown command/i.test(out)) throw new Error(out);
      return out;
    }));
  });

  it('idle sessions expire and every process hears the event', async () => {
    const [a, b] = await Promise.all([engine(), engine()]);
    const events: SessionEvent[] = [];
    b.onEvent((e) => events.push(e));
    await new Promise((r) => setTimeout(r, 100));
    const client = createSessionClient({ engine: a, idleTimeoutMs: 300 });
    const id = await client.withSession(null, (s) => {
      s.set('cart', ['tea']);
      s.setPrincipal('idle-user');
      return s.id;
    });
    await client.close();
    const expired = await waitFor(() => events.find((e) => e.sessionId === id && e.type === 'expired'), 5000, 'expired event');
    assert.equal(expired.principal, 'idle-user');
    assert.deepEqual(await b.findByPrincipal('idle-user'), [], 'gone from the principal index');
  });

  it('"log out everywhere" destroys every session of a principal held by any process, and tells the holders', async () => {
    const [a, b, c] = await Promise.all([engine(), engine(), engine()]);
    const clients = [createSessionClient({ engine: a }), createSessionClient({ engine: b })];
    const ids: string[] = [];
    for (const client of clients) {
      for (let i = 0; i < 2; i++) {
        ids.push(
          await client.withSession(null, (s) => {
            s.set('n', i);
            s.setPrincipal('pat');
            return s.id;
          }),
        );
      }
    }
    const other = await clients[0]!.withSession(null, (s) => {
      s.setPrincipal('sam');
      return s.id;
    });
    assert.ok(clients[0]!.holdsLease(ids[0]!) && clients[1]!.holdsLease(ids[2]!), 'each process holds its sessions');
    const events: SessionEvent[] = [];
    c.onEvent((e) => events.push(e));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await c.destroyByPrincipal('pat'), 4);
    await waitFor(() => !clients[0]!.holdsLease(ids[0]!) && !clients[1]!.holdsLease(ids[2]!), 2000, 'holders told');
    for (const id of ids) {
      assert.equal(await clients[1]!.withSession(id, (s) => s.isNew), true, 'destroyed sessions do not come back');
    }
    await waitFor(() => events.filter((e) => e.type === 'destroyed' && e.reason === 'principal').length === 4, 2000, 'four destroyed events');
    assert.equal((await c.findByPrincipal('sam'))[0]?.id, other, 'other principals untouched');
    await Promise.all(clients.map((cl) => cl.close()));
  });
});
