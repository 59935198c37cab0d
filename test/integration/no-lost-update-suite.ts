import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startWorker, type WorkerProcess } from '../helpers/processes.js';

/**
 * The core promise: three OS processes, each with its own client and its own
 * connection, hammer the same sessions with read-modify-write increments, 20 in flight
 * each. Leases make every increment see the previous one: the counters come out exact.
 */
/** What a client worker's increment command reports (test/fixtures/client-worker.ts). */
export interface IncrementResult {
  acked: Record<string, number>;
  /** Failed increments per session. */
  failed: Record<string, number>;
  total: number;
  attempted: number;
  errors: Record<string, number>;
  lost: number;
  ms: number;
  longestOpMs: number;
  longestStallMs: number;
  stats: { counters: Record<string, number> };
}

export interface SharedTier {
  /** What the worker's connect command gets: url, and token or redis options. */
  connect: Record<string, unknown>;
  stop(): Promise<void>;
}

/** Runs the no-lost-update test against one server tier (kiln server, Redis topologies). */
export function noLostUpdate(name: string, startTier: () => Promise<SharedTier>, options: { manySessionIncrements?: number } = {}): void {
const many = options.manySessionIncrements ?? 200;
describe(`no lost update across processes (${name})`, () => {
  let tier: SharedTier;
  let workers: WorkerProcess[];

  before(async () => {
    tier = await startTier();
    workers = await Promise.all([startWorker(), startWorker(), startWorker()]);
    await Promise.all(workers.map((w) => w.call({ op: 'connect', ...tier.connect })));
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    await tier.stop();
  });

  async function run(sessions: string[], perSession: number): Promise<IncrementResult[]> {
    return Promise.all(workers.map((w) => w.call<IncrementResult>({ op: 'increment', sessions, perSession, inFlight: 20, shuffle: true }, 300_000)));
  }

  async function counters(sessions: string[]): Promise<Record<string, number>> {
    return workers[0]!.call<Record<string, number>>({ op: 'read', sessions });
  }

  it('one session: 3 processes x 200 increments, 20 in flight each -> exactly 600', async () => {
    const [id] = await workers[0]!.call<string[]>({ op: 'create', count: 1 });
    const results = await run([id!], 200);
    for (const r of results) {
      assert.deepEqual(r.errors, {}, 'no increment failed');
      assert.equal(r.lost, 0, 'the session never went missing');
      assert.equal(r.total, 200);
    }
    const final = await counters([id!]);
    assert.equal(final[id!], 600);
    console.log(`# ${name}: one session: 600 increments in ${Math.max(...results.map((r) => r.ms))} ms; handovers ${results.map((r) => r.stats.counters['handovers']).join('/')}`);
  });

  it(`1,000 sessions: 3 processes x ${many} increments on each, 20 in flight each -> every counter exactly ${3 * many}`, async () => {
    const ids = await workers[0]!.call<string[]>({ op: 'create', count: 1000 });
    const results = await run(ids, many);
    for (const r of results) {
      assert.deepEqual(r.errors, {}, 'no increment failed');
      assert.equal(r.lost, 0);
      assert.equal(r.total, many * 1000);
    }
    const final = await counters(ids);
    const wrong = ids.filter((id) => final[id] !== 3 * many);
    assert.deepEqual(wrong, [], `every counter is ${3 * many} (first wrong: ${wrong[0] ? String(final[wrong[0]]) : '-'})`);
    console.log(`# ${name}: 1,000 sessions: ${(3 * many * 1000).toLocaleString('en')} increments in ${Math.max(...results.map((r) => r.ms))} ms`);
  });
});
}
