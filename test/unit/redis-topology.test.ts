import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connectEngine } from '../../src/engines/connect.js';
import { describeTopology, isRedisUrl, parseRedisUrl } from '../../src/engines/redis/topology.js';
import { sessionKeyList } from '../../src/engines/redis/keys.js';
import { isKilnError } from '../../src/errors/index.js';

const invalid = (err: unknown) => isKilnError(err, 'KILN_ERR_INVALID_OPTION');

describe('Redis engine URLs', () => {
  it('parses the standalone forms', () => {
    assert.deepEqual(parseRedisUrl('redis://127.0.0.1:6380/2').topology, { kind: 'standalone', host: '127.0.0.1', port: 6380, db: 2, tls: false });
    assert.deepEqual(parseRedisUrl('rediss://:s%40cret@cache.example:6379').topology, { kind: 'standalone', host: 'cache.example', port: 6379, tls: true, password: 's@cret' });
    assert.deepEqual(parseRedisUrl('redis://app:pw@[::1]').topology, { kind: 'standalone', host: '::1', port: 6379, tls: false, username: 'app', password: 'pw' });
  });

  it('parses Sentinel and Cluster host lists and the query', () => {
    const s = parseRedisUrl('redis+sentinel://10.0.0.1:26379,10.0.0.2/kilnmaster?replicas=1&prefix=shop:');
    assert.deepEqual(s.topology, { kind: 'sentinel', sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26379 }], masterName: 'kilnmaster', tls: false });
    assert.equal(s.replicas, 1);
    assert.equal(s.keyPrefix, 'shop:');
    assert.equal(s.replicaPolicy, undefined, 'the engine chooses the default (strict)');
    const p = parseRedisUrl('redis://h?replicas=1&replicaPolicy=best-effort&replicaGraceMs=5000');
    assert.equal(p.replicaPolicy, 'best-effort');
    assert.equal(p.replicaGraceMs, 5000);
    const c = parseRedisUrl('rediss+cluster://h1:7000,h2:7001');
    assert.deepEqual(c.topology, { kind: 'cluster', nodes: [{ host: 'h1', port: 7000 }, { host: 'h2', port: 7001 }], tls: true });
    assert.equal(describeTopology(c.topology), 'rediss+cluster://h1:7000,h2:7001');
  });

  it('refuses malformed URLs with a code, never showing the password', () => {
    for (const bad of ['redis+sentinel://h:26379', 'redis://a:1,b:2', 'redis+cluster://h:7000/x', 'redis://h:99999', 'redis://h/x', 'redis://h?replicas=-1', 'redis://h?replicaPolicy=maybe', 'redis://h?replicaGraceMs=-5', 'redis://h?replicaGraceMs=1.5', 'memcached://h']) {
      assert.throws(() => parseRedisUrl(bad), invalid, bad);
    }
    assert.throws(() => parseRedisUrl('redis://u:topsecret@h:1,h:2'), (err: Error) => invalid(err) && !err.message.includes('topsecret'));
    assert.equal(isRedisUrl('redis+cluster://h:1'), true);
    assert.equal(isRedisUrl('kiln://h:1'), false);
  });

  it('connectEngine picks the engine from the scheme and names a bad one', () => {
    assert.equal(connectEngine('redis://127.0.0.1:1').kind, 'redis');
    assert.equal(connectEngine('kiln://127.0.0.1:1', { kiln: { token: 't'.repeat(32) } }).kind, 'kiln');
    assert.throws(() => connectEngine('http://x'), invalid);
  });

  it('puts every key of a session in one hash slot', () => {
    const keys = sessionKeyList('kiln:', 'abc.node-1');
    assert.equal(keys.length, 9);
    for (const k of keys) assert.ok(k.startsWith('kiln:{abc.node-1}:'), k);
  });
});
