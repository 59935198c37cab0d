import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { sleep, startWorker, waitFor, type WorkerProcess } from '../helpers/processes.js';
import type { IncrementResult } from './no-lost-update-suite.js';
import { redisCli, startCluster, startSentinel, type ClusterDeployment, type SentinelDeployment } from '../helpers/redis.js';

/**
 * Losing a Redis machine under load. Three client processes increment counters on 100
 * sessions, 20 in flight each, while the test SIGKILLs the master. With `replicas: 1`
 * a commit is acknowledged only once a replica has it, so no acknowledged increment may
 * be missing afterwards. The killed process is restarted (as systemd would) once the
 * failover is done: with one replica per shard, new commits can be confirmed by a
 * replica only when there is one again.
 */

const OPERATION_TIMEOUT_MS = 2000;
const ACQUIRE_TIMEOUT_MS = 8000;
/** What one increment may take at worst: an acquire, then a commit tried three times. */
const WORST_OPERATION_MS = ACQUIRE_TIMEOUT_MS + 3 * OPERATION_TIMEOUT_MS + 1000;

async function startWorkers(url: string): Promise<WorkerProcess[]> {
  const workers = await Promise.all([startWorker(), startWorker(), startWorker()]);
  await Promise.all(workers.map((w) => w.call({ op: 'connect', url, operationTimeoutMs: OPERATION_TIMEOUT_MS, acquireTimeoutMs: ACQUIRE_TIMEOUT_MS, redis: { replicas: 1, replicaTimeoutMs: 500, recallTimeoutMs: 1000 } })));
  return workers;
}

function runLoad(workers: WorkerProcess[], sessions: string[], perSession: number): Promise<IncrementResult[]> {
  return Promise.all(workers.map((w) => w.call<IncrementResult>({ op: 'increment', sessions, perSession, inFlight: 20, shuffle: true }, 300_000)));
}

/** Acknowledged increments missing from the final counters. */
async function lostAcknowledged(reader: WorkerProcess, sessions: string[], results: IncrementResult[]): Promise<{ lost: number; acked: number; final: Record<string, number> }> {
  const final = await reader.call<Record<string, number>>({ op: 'read', sessions }, 60_000);
  let lost = 0;
  let acked = 0;
  for (const id of sessions) {
    const sum = results.reduce((n, r) => n + (r.acked[id] ?? 0), 0);
    acked += sum;
    lost += Math.max(0, sum - (final[id] ?? 0));
  }
  return { lost, acked, final };
}

describe('Redis Sentinel failover under load', () => {
  let redis: SentinelDeployment | undefined;
  let workers: WorkerProcess[] = [];
  after(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await redis?.stop();
  });

  it('SIGKILL of the master: 0 acknowledged increments lost with replicas: 1, no call past its timeout, work resumes', async () => {
    redis = await startSentinel();
    workers = await startWorkers(redis.url);
    const sessions = await workers[0]!.call<string[]>({ op: 'create', count: 100 });
    const load = runLoad(workers, sessions, 40);
    await sleep(1500);
    const oldMaster = redis.master;
    const killedAt = Date.now();
    await oldMaster.kill();
    const newMasterPort = await waitFor(async () => {
      const port = await redis!.currentMasterPort().catch(() => 0);
      return port !== 0 && port !== oldMaster.port ? port : 0;
    }, 30_000, 'Sentinel to promote the replica');
    const promotedAfter = Date.now() - killedAt;
    // The killed node comes back empty (no persistence in these tests). Restarting it
    // before the promoted replica really acts as master let that replica full-sync from
    // the empty node (chained replication) and drop every session — seen once on a
    // loaded CI machine. Redis's own advice: without persistence, a supervisor must not
    // restart a master before the failover is complete. So wait for ROLE to say master.
    await waitFor(async () => (await redisCli(newMasterPort, 'ROLE').catch(() => '')).startsWith('master'), 30_000, 'the promoted replica to act as master');
    // And every sentinel must name it: one that still names the old address would see
    // the restarted node and could make the promoted replica follow it (seen once more
    // on a loaded machine, with every acknowledged increment gone).
    await waitFor(async () => {
      const named = await Promise.all(redis!.sentinels.map((s) => redisCli(s.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', redis!.masterName).catch(() => '')));
      return named.every((reply) => Number(reply.split('\n')[1]) === newMasterPort);
    }, 30_000, 'every sentinel to name the promoted replica');
    // It comes back empty: with replica-priority 0 Sentinel never promotes it. Without
    // that, a stall of the new master on a loaded machine (down-after is 1 s here) could
    // start a second failover onto the empty node, and the node holding the data would
    // then resync from it: every acknowledged increment gone (seen twice on loaded runs).
    await oldMaster.restart(['--replicaof', '127.0.0.1', String(newMasterPort), '--replica-priority', '0']);
    const results = await load;
    const { lost, acked } = await lostAcknowledged(workers[0]!, sessions, results);
    const longestOp = Math.max(...results.map((r) => r.longestOpMs));
    const longestStall = Math.max(...results.map((r) => r.longestStallMs));
    const errors = results.map((r) => r.errors);
    console.log(`# sentinel failover: promoted after ${promotedAfter} ms; ${acked} increments acknowledged, lost ${lost}; longest stall ${longestStall} ms; longest single operation ${longestOp} ms; errors ${JSON.stringify(errors)}`);
    if (lost > 0) {
      const roles = await Promise.all([newMasterPort, oldMaster.port].map((port) => redisCli(port, 'ROLE').catch((err: Error) => err.message)));
      const named = await Promise.all(redis.sentinels.map((s) => redisCli(s.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', redis!.masterName).catch((err: Error) => err.message)));
      console.log(`# lost increments: ROLE of the promoted node ${JSON.stringify(roles[0])}, of the restarted one ${JSON.stringify(roles[1])}; sentinels name ${JSON.stringify(named)}`);
    }
    assert.equal(lost, 0, 'no acknowledged increment lost');
    assert.ok(longestOp <= WORST_OPERATION_MS, `no operation hangs past its timeout (${longestOp} ms)`);
    // Work resumed by itself: the same processes, no reconnect by hand, all succeed again.
    const after = await runLoad(workers, sessions.slice(0, 20), 5);
    for (const r of after) assert.deepEqual(r.errors, {}, 'after the failover every increment succeeds');
    const check = await lostAcknowledged(workers[1]!, sessions, [...results, ...after]);
    assert.equal(check.lost, 0);
  });
});

describe('Redis Cluster: a master fails under load', () => {
  let redis: ClusterDeployment | undefined;
  let workers: WorkerProcess[] = [];
  after(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await redis?.stop();
  });

  it('SIGKILL of one master: 0 acknowledged increments lost with replicas: 1; the other shards keep serving', async () => {
    redis = await startCluster();
    workers = await startWorkers(redis.url);
    const sessions = await workers[0]!.call<string[]>({ op: 'create', count: 100 });
    const victim = await redis.masterOf(`kiln:{${sessions[0]}}:m`);
    const onVictim = new Set<string>();
    for (const id of sessions) if ((await redis.masterOf(`kiln:{${id}}:m`)) === victim) onVictim.add(id);
    const load = runLoad(workers, sessions, 40);
    await sleep(1500);
    const killedAt = Date.now();
    await victim.kill();
    await waitFor(async () => {
      for (const n of redis!.nodes) {
        if (n === victim) continue;
        const info = await redisCli(n.port, 'CLUSTER', 'INFO').catch(() => '');
        if (!info.includes('cluster_state:ok')) return false;
      }
      const owner = await redis!.masterOf(`kiln:{${sessions[0]}}:m`).catch(() => undefined);
      return owner !== undefined && owner !== victim;
    }, 30_000, 'the replica to take over the shard');
    const promotedAfter = Date.now() - killedAt;
    await victim.restart();
    const results = await load;
    const { lost, acked } = await lostAcknowledged(workers[0]!, sessions, results);
    let otherAttempts = 0;
    let otherFailures = 0;
    for (const id of sessions) {
      if (onVictim.has(id)) continue;
      otherAttempts += 3 * 40;
      otherFailures += results.reduce((n, r) => n + (r.failed[id] ?? 0), 0);
    }
    const ratio = (otherAttempts - otherFailures) / otherAttempts;
    const longestOp = Math.max(...results.map((r) => r.longestOpMs));
    console.log(
      `# cluster failover: shard promoted after ${promotedAfter} ms; ${onVictim.size}/100 sessions on the killed shard; ${acked} acknowledged, lost ${lost}; other shards served ${(ratio * 100).toFixed(2)}% of their increments; longest single operation ${longestOp} ms; errors ${JSON.stringify(results.map((r) => r.errors))}`,
    );
    assert.equal(lost, 0, 'no acknowledged increment lost');
    assert.ok(ratio >= 0.95, `sessions on the other shards kept being served (${(ratio * 100).toFixed(2)}%)`);
    assert.ok(longestOp <= WORST_OPERATION_MS, `no operation hangs past its timeout (${longestOp} ms)`);
    await redis.waitHealthy(30_000);
    const after = await runLoad(workers, sessions.slice(0, 20), 5);
    for (const r of after) assert.deepEqual(r.errors, {}, 'after the failover every increment succeeds');
  });
});
