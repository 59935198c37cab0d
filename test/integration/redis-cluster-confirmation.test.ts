import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { SCRIPTS } from '../../src/engines/redis/scripts.js';
import { isKilnError } from '../../src/errors/index.js';
import type { CommitRequest } from '../../src/session/model.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { waitFor } from '../helpers/processes.js';
import { redisCli, startCluster, type ClusterDeployment, type RedisNode } from '../helpers/redis.js';

/**
 * Replica confirmation on a Cluster, where each master has its own replicas: a write is
 * confirmed by the replicas of the master that ran it.
 *
 * A slot moved to another master (what `redis-cli --cluster reshard` does, slot by
 * slot) while a client's slot table still names the old one. The first script sent for
 * the session goes to the old master, gets MOVED, and node-redis runs it on the new one;
 * its WAIT, sent right behind it by the same old table, asks the old master, whose
 * replica is fine. With `replicas: 1` strict, that WAIT says nothing of the new master's
 * replica (stopped here): the commit must not be acknowledged.
 */
describe('Redis Cluster: writes confirmed by the replicas of the master that ran them', () => {
  let cluster: ClusterDeployment;
  let engine: RedisEngine;
  before(async () => {
    cluster = await startCluster();
    // No heartbeat during the test: its lease renewals would meet the MOVED first and refresh the slot table.
    engine = new RedisEngine({ url: `${cluster.url}?replicas=1`, replicaTimeoutMs: 500, heartbeatMs: 60_000, leaseTimeMs: 120_000 });
    await engine.connect();
  });
  after(async () => {
    await engine?.close();
    await cluster?.stop();
  });

  const cli = (node: RedisNode, ...args: (string | number)[]) => redisCli(node.port, ...args.map(String));

  /** Moves the slot of `key` from its master to another master, keys and all, and tells every master. */
  async function moveSlot(key: string): Promise<{ from: RedisNode; to: RedisNode }> {
    const from = await cluster.masterOf(key);
    const roles = await Promise.all(cluster.nodes.map((n) => cli(n, 'ROLE').catch(() => '')));
    const masters = cluster.nodes.filter((_, i) => roles[i]!.startsWith('master'));
    const to = masters.find((n) => n !== from)!;
    const slot = await cli(from, 'CLUSTER', 'KEYSLOT', key);
    const [fromId, toId] = [await cli(from, 'CLUSTER', 'MYID'), await cli(to, 'CLUSTER', 'MYID')];
    await cli(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
    await cli(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
    const keys = (await cli(from, 'CLUSTER', 'GETKEYSINSLOT', slot, 100)).split('\n').filter(Boolean);
    assert.ok(keys.length > 0, 'the session has keys to move');
    await cli(from, 'MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'KEYS', ...keys);
    for (const master of masters) await cli(master, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
    return { from, to };
  }

  /** The replica of `master`, by the port its ROLE lists. */
  async function replicaOf(master: RedisNode): Promise<RedisNode> {
    const role = (await cli(master, 'ROLE')).split('\n');
    const port = Number(role[3]);
    const replica = cluster.nodes.find((n) => n.port === port);
    assert.ok(replica, `a replica of ${master.port} (ROLE: ${role.join(' ')})`);
    return replica;
  }

  it('a commit whose slot moved to another master is refused, not acknowledged on the old master\'s replica count, and acknowledged once the new master\'s replica has it', async () => {
    const id = generateSessionId();
    const { token } = await engine.acquire(id);
    const create: CommitRequest = commitOf(id, token, 0, { n: 1 });
    // A replica just synced may miss a first WAIT: the same commit again applies once.
    await waitFor(async () => engine.commit(create).then(() => true, () => false), 10_000, 'the first commit confirmed');

    // Every master knows the commit script already, as after a while in production: a NOSCRIPT
    // on the new master would make the runner send the script again, with a fresh slot table.
    const roles = await Promise.all(cluster.nodes.map((n) => cli(n, 'ROLE').catch(() => '')));
    for (const master of cluster.nodes.filter((_, i) => roles[i]!.startsWith('master'))) {
      for (const source of [SCRIPTS.commit.source, SCRIPTS.commit.nodeNamed.source]) await cli(master, 'SCRIPT', 'LOAD', source);
    }
    const { from, to } = await moveSlot(`kiln:{${id}}:m`);
    const stopped = await replicaOf(to);
    assert.notEqual((await replicaOf(from)).port, stopped.port);
    process.kill(stopped.pid, 'SIGSTOP');
    const next: CommitRequest = commitOf(id, token, 1, { n: 2 });
    try {
      const outcome = await engine.commit(next).then(
        () => 'acknowledged',
        (err: unknown) => err,
      );
      assert.ok(isKilnError(outcome, 'KILN_ERR_ENGINE_UNAVAILABLE'), `refused: ${String(outcome)}`);
      assert.equal(outcome.details?.['applied'], true, 'it ran on the new master: the refusal says so');
    } finally {
      process.kill(stopped.pid, 'SIGCONT');
    }
    // The retry is safe: applied once, now confirmed by the new master's replica.
    const acked = await waitFor(async () => engine.commit(next).then((ack) => ack, () => undefined), 10_000, 'the commit confirmed once the replica runs');
    assert.deepEqual(acked, { version: 2, duplicate: true });
    assert.equal(await cli(to, 'HGET', `kiln:{${id}}:m`, 'v'), '2', 'on the new master, once');
  });

  it("a login's entry in its principal's set, on another shard than the session, waits for that shard's replica too", async () => {
    const id = generateSessionId();
    const sessionMaster = await cluster.masterOf(`kiln:{${id}}:m`);
    // A principal whose set lives on another master than the session.
    let principal = '';
    let setMaster: RedisNode | undefined;
    for (let i = 0; !setMaster || setMaster.port === sessionMaster.port; i++) {
      principal = `user-${i}`;
      setMaster = await cluster.masterOf(`kiln:principal:${principal}`);
    }
    const { token } = await engine.acquire(id);
    await waitFor(async () => engine.commit(commitOf(id, token, 0, { n: 1 })).then(() => true, () => false), 10_000, 'the session made');
    const stopped = await replicaOf(setMaster!);
    process.kill(stopped.pid, 'SIGSTOP');
    const login: CommitRequest = commitOf(id, token, 1, { user: principal }, { principal });
    try {
      // Acknowledged, a failover of that shard alone could lose the entry, and "log out everywhere" then miss this login.
      const outcome = await engine.commit(login).then(() => 'acknowledged', (err: unknown) => err);
      assert.ok(isKilnError(outcome, 'KILN_ERR_ENGINE_UNAVAILABLE'), `refused: ${String(outcome)}`);
      assert.match((outcome as Error).message, /SADD of kiln:principal:user-\d+/);
    } finally {
      process.kill(stopped.pid, 'SIGCONT');
    }
    await waitFor(async () => engine.commit(login).then(() => true, () => false), 10_000, 'the login confirmed once the replica runs');
    assert.deepEqual((await engine.findByPrincipal(principal)).map((m) => m.id), [id]);
  });
});
