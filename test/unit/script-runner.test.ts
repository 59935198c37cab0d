import assert from 'node:assert/strict';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { isKilnError } from '../../src/errors/index.js';
import { ReplicaGuard } from '../../src/engines/redis/replica-guard.js';
import { ScriptRunner, unconfirmedReplyOf } from '../../src/engines/redis/script-runner.js';
import { SCRIPTS } from '../../src/engines/redis/scripts.js';
import { generateSessionId } from '../../src/session/id.js';

/**
 * How commits wait for replicas, command by command. The failover and replica tests run
 * this against real Redis processes; what they cannot force is the order of replies and
 * connection changes (a reconnect between a script's reply and the write of its shared
 * WAIT), so here the transport is a list of the commands sent, answered by the test.
 */
interface Sent {
  args: string[];
  connection: string;
  answer: (reply: unknown) => void;
  fail: (err: Error) => void;
}

function harness(options: { connectionOf?: (key: string) => string; namesNodes?: boolean; guard?: ReplicaGuard } = {}) {
  const sent: Sent[] = [];
  const leaseStats: unknown[] = [];
  const counted: string[] = [];
  let generation = 0;
  const guard = options.guard ?? new ReplicaGuard(1, 'strict', 60_000, 250);
  const connectionOf = options.connectionOf ?? (() => '');
  const runner = new ScriptRunner({
    send: (firstKey, args) =>
      new Promise((resolve, reject) => sent.push({ args: args.map(String), connection: firstKey === undefined ? '' : connectionOf(firstKey), answer: resolve, fail: reject })),
    ensureConnected: async () => undefined,
    address: 'redis://test',
    prefix: 'kiln:',
    operationTimeoutMs: 2000,
    replicas: 1,
    replicaTimeoutMs: 500,
    replicaGuard: guard,
    scriptSettings: ['kiln:o:', '30000', '1000', '60000', '3', 'kiln:events'],
    count: (name) => void counted.push(name),
    addScriptStats: (stat) => void leaseStats.push(stat),
    connectionOf,
    generation: () => generation,
    namesNodes: options.namesNodes ?? false,
    sendTo: (connection, args) => new Promise((resolve, reject) => sent.push({ args: args.map(String), connection, answer: resolve, fail: reject })),
  });
  const commit = (id = generateSessionId()) => runner.runScript(SCRIPTS.commit, id, 'owner', ['1'], { waitForReplicas: true });
  const pending = (command: string) => sent.filter((s) => s.args[0] === command);
  return { sent, guard, runner, commit, pending, leaseStats, counted, bump: () => generation++ };
}

/** Lets the runner's promise callbacks run (a WAIT's settling sends the next one). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await tick();
}

describe('redis script runner: WAITs for replica confirmations', () => {
  it('commits sent while a WAIT is out share the next one: one WAIT out per connection', async () => {
    const h = harness();
    const first = h.commit();
    await settle();
    assert.deepEqual(h.sent.map((s) => s.args[0]), ['EVALSHA', 'WAIT'], 'a lone commit: its WAIT right behind it');
    const later = [h.commit(), h.commit(), h.commit()];
    await settle();
    assert.deepEqual(h.sent.map((s) => s.args[0]), ['EVALSHA', 'WAIT', 'EVALSHA', 'EVALSHA', 'EVALSHA'], 'no second WAIT while one is out');
    h.sent[0]!.answer('A');
    h.pending('WAIT')[0]!.answer(1);
    assert.equal(await first, 'A');
    await settle();
    assert.equal(h.pending('WAIT').length, 2, 'the three share the next WAIT');
    assert.deepEqual(h.pending('WAIT')[1]!.args, ['WAIT', '1', '500'], 'asked with the full timeout');
    for (const s of h.pending('EVALSHA').slice(1)) s.answer('A');
    h.pending('WAIT')[1]!.answer(1);
    assert.deepEqual(await Promise.all(later), ['A', 'A', 'A']);
  });

  it('a WAIT answered after the connection changed confirms nothing: the commit is refused, a retry being safe', async () => {
    const h = harness();
    const c = h.commit();
    await settle();
    h.sent[0]!.answer('A');
    // A reconnect (or a master change) between the script and its WAIT's answer.
    h.bump();
    h.pending('WAIT')[0]!.answer(1);
    await assert.rejects(c, (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /connection to Redis changed/.test((err as Error).message));
  });

  it('a WAIT that comes back short makes the shortage known: later commits are refused unsent, ROLE is asked at most every 250 ms, and replicas acknowledging past the master offset end it', async () => {
    const h = harness();
    const c = h.commit();
    await settle();
    h.sent[0]!.answer('A');
    h.pending('WAIT')[0]!.answer(0);
    await assert.rejects(c, (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /reached 0 of 1 replicas within 500 ms/.test((err as Error).message));
    assert.ok(h.guard.isShort());

    const before = h.sent.length;
    await assert.rejects(h.commit(), (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /not sent/.test((err as Error).message));
    await assert.rejects(h.commit(), (err: unknown) => /not sent/.test((err as Error).message));
    assert.deepEqual(h.sent.slice(before).map((s) => s.args[0]), ['ROLE'], 'no script, no WAIT: one ROLE for both');
    h.pending('ROLE')[0]!.answer([Buffer.from('master'), 1000, [[Buffer.from('127.0.0.1'), Buffer.from('6380'), Buffer.from('900')]]]);
    await settle();
    assert.ok(h.guard.isShort(), 'the first look notes the offset to pass');

    await new Promise((resolve) => setTimeout(resolve, 260));
    await assert.rejects(h.commit(), (err: unknown) => /not sent/.test((err as Error).message));
    // Listed, but acknowledging nothing past 1,000: a frozen replica is not back.
    h.pending('ROLE')[1]!.answer([Buffer.from('master'), 1200, [[Buffer.from('127.0.0.1'), Buffer.from('6380'), Buffer.from('950')]]]);
    await settle();
    assert.ok(h.guard.isShort());

    await new Promise((resolve) => setTimeout(resolve, 260));
    await assert.rejects(h.commit(), (err: unknown) => /not sent/.test((err as Error).message));
    h.pending('ROLE')[2]!.answer([Buffer.from('master'), 1300, [[Buffer.from('127.0.0.1'), Buffer.from('6380'), Buffer.from('1000')]]]);
    await settle();
    assert.ok(!h.guard.isShort(), 'acknowledging past 1,000: back');
    const again = h.commit();
    await settle();
    assert.deepEqual(h.sent.slice(-2).map((s) => s.args[0]), ['EVALSHA', 'WAIT'], 'sent and waited for again');
    h.sent.at(-2)!.answer('A');
    h.sent.at(-1)!.answer(1);
    assert.equal(await again, 'A');
  });

  it('a failed WAIT fails the commits sharing it and frees its connection for the next one', async () => {
    const h = harness();
    const first = h.commit();
    const second = h.commit();
    await settle();
    h.sent[0]!.answer('A');
    h.pending('WAIT')[0]!.fail(new Error('Socket closed unexpectedly'));
    await assert.rejects(first, (err: unknown) => isKilnError(err));
    await settle();
    assert.equal(h.pending('WAIT').length, 2, "the next batch's WAIT goes out");
    h.pending('EVALSHA')[1]!.answer('A');
    h.pending('WAIT')[1]!.answer(1);
    assert.equal(await second, 'A');
  });

  it('on a cluster each master has its own WAITs and its own shortage', async () => {
    const ids = [generateSessionId(), generateSessionId()];
    const h = harness({ connectionOf: (key) => (key.includes(ids[0]!) ? '127.0.0.1:7000' : '127.0.0.1:7001') });
    const a = h.commit(ids[0]);
    const b = h.commit(ids[1]);
    await settle();
    assert.deepEqual(
      h.pending('WAIT').map((s) => s.connection),
      ['127.0.0.1:7000', '127.0.0.1:7001'],
      'a WAIT out on each master at once',
    );
    for (const s of h.pending('EVALSHA')) s.answer('A');
    h.pending('WAIT')[0]!.answer(0);
    h.pending('WAIT')[1]!.answer(1);
    await assert.rejects(a, (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
    assert.equal(await b, 'A');
    assert.ok(h.guard.isShort('127.0.0.1:7000'));
    assert.ok(!h.guard.isShort('127.0.0.1:7001'), 'the other shard commits on');
  });

  it('on a cluster a script that ran on a node its table does not name (an ASK during a migration, a MOVED not yet seen) is not acknowledged; on the same node it is', async () => {
    const h = harness({ connectionOf: () => '127.0.0.1:7000', namesNodes: true });
    const moved = h.commit();
    await settle();
    assert.deepEqual(h.sent.map((s) => s.args.slice(0, 2)), [['EVALSHA', SCRIPTS.commit.nodeNamed.sha], ['CLUSTER', 'MYID'], ['WAIT', '1']], 'the node-naming script, then the node its WAIT asks');
    h.sent[0]!.answer(['A', 'node-b']);
    h.pending('CLUSTER')[0]!.answer('node-a');
    h.pending('WAIT')[0]!.answer(1);
    const err = await moved.then(() => undefined, (e: unknown) => e);
    assert.ok(isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /ran on Redis node node-b.*WAIT on node node-a/.test(err.message), String(err));
    assert.equal(err.details?.['applied'], true, 'it ran: the caller is told so');
    assert.equal(unconfirmedReplyOf(err), 'A', "with the script's own reply, not the pair");
    await settle();
    const same = h.commit();
    await settle();
    h.pending('EVALSHA')[1]!.answer(['A', 'node-a']);
    h.pending('CLUSTER')[1]!.answer('node-a');
    h.pending('WAIT')[1]!.answer(1);
    assert.equal(await same, 'A');
  });

  it("on a cluster a write outside the scripts (a principal's set) names its node and waits for its own shard's replicas", async () => {
    const h = harness({ connectionOf: (key) => (key.includes('principal') ? '127.0.0.1:7001' : '127.0.0.1:7000'), namesNodes: true });
    const write = h.runner.replicatedWrite('kiln:principal:pat', 'SADD', 'session-id');
    await settle();
    assert.deepEqual(h.sent.map((s) => [s.args[0], s.connection]), [['EVAL', '127.0.0.1:7001'], ['CLUSTER', '127.0.0.1:7001'], ['WAIT', '127.0.0.1:7001']]);
    assert.deepEqual(h.sent[0]!.args.slice(2), ['1', 'kiln:principal:pat', 'SADD', 'session-id']);
    h.sent[0]!.answer([1, 'node-b']);
    h.pending('CLUSTER')[0]!.answer('node-b');
    h.pending('WAIT')[0]!.answer(0);
    await assert.rejects(write, (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /SADD of kiln:principal:pat reached 0 of 1 replicas/.test(err.message));
    assert.ok(h.guard.isShort('127.0.0.1:7001'), "that shard's shortage is known");
    assert.ok(!h.guard.isShort('127.0.0.1:7000'));
  });

  it("a script refused after it ran still reports its lease moves (a retry finds them done, and reports none)", async () => {
    const h = harness();
    const c = h.commit();
    await settle();
    h.sent[0]!.answer(['A', [1, 0, 0, 0, 1]]);
    h.pending('WAIT')[0]!.answer(0);
    await assert.rejects(c, (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE'));
    assert.deepEqual(h.leaseStats, [[1, 0, 0, 0, 1]]);
  });

  it("a lane's WAIT that a refreshed slot table sent to another master confirms none of its writes, even one that ran there", async () => {
    let table = '127.0.0.1:7000';
    const h = harness({ connectionOf: () => table, namesNodes: true });
    const first = h.commit();
    await settle();
    const second = h.commit(); // sent to 7000, joins the lane's next WAIT (sent when the one out returns)
    await settle();
    table = '127.0.0.1:7001'; // refreshed meanwhile
    h.sent[0]!.answer(['A', 'node-a']);
    h.pending('CLUSTER')[0]!.answer('node-a');
    h.pending('WAIT')[0]!.answer(1);
    assert.equal(await first, 'A');
    await settle();
    const laneWait = h.pending('WAIT')[1]!;
    assert.equal(laneWait.connection, '127.0.0.1:7001', 'the table sends the next lane WAIT to 7001');
    // Its script MOVED from 7000 and ran on 7001, after that WAIT: node ids match, and it still says nothing of it.
    h.pending('EVALSHA')[1]!.answer(['A', 'node-b']);
    h.pending('CLUSTER')[1]!.answer('node-b');
    laneWait.answer(1);
    await assert.rejects(second, (err: unknown) => isKilnError(err, 'KILN_ERR_ENGINE_UNAVAILABLE') && /ran on Redis node node-b/.test(err.message));
    assert.equal(h.pending('WAIT').length, 2, 'no WAIT of its own: one out per connection');
  });

  it("a principal-set write under best effort past its grace is not counted as an under-replicated commit (its commit counts itself), and its damage names the key", async () => {
    const guard = new ReplicaGuard(2, 'best-effort', 1000, 250);
    guard.observe(1, Date.now() - 5000, '127.0.0.1:7001');
    const h = harness({ connectionOf: () => '127.0.0.1:7001', namesNodes: true, guard });
    const write = h.runner.replicatedWrite('kiln:principal:pat', 'SADD', 'session-id');
    await settle();
    assert.deepEqual(h.sent.map((s) => [s.args[0], s.args.at(-2) ?? '']), [['EVAL', 'SADD'], ['CLUSTER', 'CLUSTER'], ['WAIT', '1']], 'degraded: a WAIT for the one replica left');
    h.sent[0]!.answer([1, 'node-a']);
    h.pending('CLUSTER')[0]!.answer('node-a');
    h.pending('WAIT')[0]!.answer(1);
    await write;
    assert.deepEqual(h.counted.filter((n) => n === 'underReplicatedCommits'), [], 'under-replicated, but not a commit: not counted');
    const strict = harness({ connectionOf: () => '127.0.0.1:7001', namesNodes: true });
    const damaged = strict.runner.replicatedWrite('kiln:principal:pat', 'SADD', 'session-id');
    await settle();
    strict.sent[0]!.fail(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'));
    strict.pending('CLUSTER')[0]!.answer('node-a');
    strict.pending('WAIT')[0]!.answer(1);
    await assert.rejects(damaged, (err: unknown) => isKilnError(err, 'KILN_ERR_STORAGE_DAMAGED') && err.message.startsWith('kiln:principal:pat: '));
  });
});
