import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { SCRIPTS } from '../../src/engines/redis/scripts.js';
import { isKilnError } from '../../src/errors/index.js';
import type { CommitRequest } from '../../src/session/model.js';
import { generateSessionId } from '../../src/session/id.js';
import { commitOf } from '../conformance/engine-suite.js';
import { sleep, waitFor } from '../helpers/processes.js';
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
  it('a write redirected back to the master it was first sent to (an ASK, then the migration called off) is not confirmed by the WAIT queued behind its first attempt', async () => {
    const id = generateSessionId();
    const { token } = await engine.acquire(id);
    await waitFor(async () => engine.commit(commitOf(id, token, 0, { n: 1 })).then(() => true, () => false), 10_000, 'the session made');
    const principal = `asked-${id.slice(0, 8)}`;
    const key = `kiln:principal:${principal}`;
    const a = await cluster.masterOf(key);
    const roles = await Promise.all(cluster.nodes.map((n) => cli(n, 'ROLE').catch(() => '')));
    const b = cluster.nodes.find((n, i) => roles[i]!.startsWith('master') && n.port !== a.port)!;
    const slot = await cli(a, 'CLUSTER', 'KEYSLOT', key);
    const [aId, bId] = [await cli(a, 'CLUSTER', 'MYID'), await cli(b, 'CLUSTER', 'MYID')];
    // a's replica has all of a's writes so far, then stops answering (still listed by ROLE).
    const stopped = await replicaOf(a);
    await waitFor(async () => {
      const role = (await cli(a, 'ROLE')).split('\n');
      return role[1] === role[4] || undefined;
    }, 5000, "a's replica caught up");
    process.kill(stopped.pid, 'SIGSTOP');
    try {
      // The principal's slot starts moving to b: a answers the login's SADD with ASK (the key is not on a), and b holds it.
      await cli(b, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', aId);
      await cli(a, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', bId);
      await cli(b, 'CLIENT', 'PAUSE', 1500, 'WRITE');
      const login = engine.commit(commitOf(id, token, 1, { user: principal }, { principal })).then(() => 'acknowledged', (err: unknown) => err);
      await sleep(300);
      // Called off: b answers the held SADD with MOVED to a, where it runs, after a's WAIT (queued behind its first attempt) answered.
      await cli(a, 'CLUSTER', 'SETSLOT', slot, 'STABLE');
      await cli(b, 'CLUSTER', 'SETSLOT', slot, 'STABLE');
      const outcome = await login;
      assert.ok(isKilnError(outcome, 'KILN_ERR_ENGINE_UNAVAILABLE'), `refused: ${String(outcome)}`);
    } finally {
      process.kill(stopped.pid, 'SIGCONT');
    }
  });
});

/**
 * Best effort on a Cluster: each shard's replicas are its own, and so is the grace after
 * which a shard short of replicas carries on without them. A grace measured on one shard
 * (the heartbeat's) and applied to all let a healthy shard's commits go unconfirmed once
 * that one shard had been short long enough.
 */
describe('Redis Cluster, replicaPolicy best-effort: the grace is per shard', () => {
  let cluster: ClusterDeployment;
  let engine: RedisEngine;
  before(async () => {
    cluster = await startCluster();
    engine = new RedisEngine({ url: `${cluster.url}?replicas=1&replicaPolicy=best-effort&replicaGraceMs=1000`, replicaTimeoutMs: 500, heartbeatMs: 200 });
    await engine.connect();
  });
  after(async () => {
    await engine?.close();
    await cluster?.stop();
  });

  const replicaOf = async (master: RedisNode): Promise<RedisNode> => {
    const port = Number((await redisCli(master.port, 'ROLE')).split('\n')[3]);
    return cluster.nodes.find((n) => n.port === port)!;
  };

  it("a shard short of its replica past the grace carries on under-replicated; another shard's commits still wait for theirs", async () => {
    const indexMaster = await cluster.masterOf('kiln:{idx}:epoch');
    // A session on the shard that loses its replica, and one on a shard that keeps it.
    let onShort = '';
    let onHealthy = '';
    while (!onShort || !onHealthy) {
      const id = generateSessionId();
      const master = await cluster.masterOf(`kiln:{${id}}:m`);
      if (master.port === indexMaster.port) onShort ||= id;
      else onHealthy ||= id;
    }
    const tokens = new Map<string, number>();
    for (const id of [onShort, onHealthy]) {
      const { token } = await engine.acquire(id);
      tokens.set(id, token);
      await waitFor(async () => engine.commit(commitOf(id, token, 0, { n: 1 })).then(() => true, () => false), 10_000, 'made');
    }
    await (await replicaOf(indexMaster)).kill();
    // Past the grace, seen by the heartbeat's ROLE on that master: its commits go on, counted.
    const underBefore = (await engine.stats()).counters['underReplicatedCommits'] ?? 0;
    const shortCommit = commitOf(onShort, tokens.get(onShort)!, 1, { n: 2 });
    await waitFor(async () => engine.commit(shortCommit).then(() => true, () => false), 10_000, 'the short shard carrying on');
    assert.ok(((await engine.stats()).counters['underReplicatedCommits'] ?? 0) > underBefore, 'counted as under-replicated');
    // The healthy shard's replica stops answering (still listed): its commit must wait for it, and is refused.
    const healthyReplica = await replicaOf(await cluster.masterOf(`kiln:{${onHealthy}}:m`));
    process.kill(healthyReplica.pid, 'SIGSTOP');
    try {
      const outcome = await engine.commit(commitOf(onHealthy, tokens.get(onHealthy)!, 1, { n: 2 })).then(() => 'acknowledged', (err: unknown) => err);
      assert.ok(isKilnError(outcome, 'KILN_ERR_ENGINE_UNAVAILABLE'), `refused: ${String(outcome)}`);
    } finally {
      process.kill(healthyReplica.pid, 'SIGCONT');
    }
  });
});
