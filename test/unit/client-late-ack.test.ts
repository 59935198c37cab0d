import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createSessionClient } from '../../src/client/session-client.js';
import type { Engine } from '../../src/engines/engine.js';
import { createMemoryTier } from '../../src/engines/memory/memory-engine.js';
import { MAX_BATCHES_PER_SESSION } from '../../src/client/write-behind.js';

/**
 * Acknowledgements that come late, on the real in-process tier: two clients (two app
 * servers) share one tier, and one client's engine delivers a commit's acknowledgement
 * only when the test lets it (the tier has applied the commit at once; only the answer
 * is held, as a slow network or disk would hold it).
 */
function withHeldAcks(engine: Engine, hold: 'the acknowledgement' | 'the send' = 'the acknowledgement'): { engine: Engine; hold(): void; deliver(): void } {
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  const wrapped = new Proxy(engine, {
    get(target, prop) {
      if (prop === 'commit') {
        return async (...args: Parameters<Engine['commit']>) => {
          if (hold === 'the send' && gate) await gate;
          const ack = await target.commit(...args);
          if (hold === 'the acknowledgement' && gate) await gate;
          return ack;
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return {
    engine: wrapped,
    hold: () => {
      gate = new Promise<void>((resolve) => (open = resolve));
    },
    deliver: () => {
      gate = undefined;
      open?.();
    },
  };
}

describe('write-behind changes that outlive their lease (real in-process tier, two clients)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 200, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it("are sent on the version they were made on: refused (and reported) once another process changed the session, never written over its change", async () => {
    const serverA = createSessionClient({ engine: tier.engine(), commitMode: 'async', asyncFlushMs: 60_000 });
    const serverB = createSessionClient({ engine: tier.engine() });
    const reported: string[] = [];
    serverA.onAsyncCommitError((err) => reported.push(err.code));
    try {
      const first = await serverA.open();
      first.set('cart', 'empty');
      await first.commit({ final: true }); // a new session: stored at once
      first.close();
      const id = first.id;

      const r1 = await serverA.open(id);
      r1.set('cart', 'A1'); // waits in A's write-behind (flushed within a minute)
      await r1.commit({ final: true });
      r1.close();
      // A request on A holds the session past the recall deadline: the tier takes the lease back.
      const r2 = await serverA.open(id);
      const rb = await serverB.open(id);
      r2.close();
      assert.equal(rb.get('cart'), 'empty', "A's change never reached the tier");
      rb.set('cart', 'B1');
      await rb.commit({ final: true });
      rb.close();

      const r3 = await serverA.open(id);
      assert.equal(r3.get('cart'), 'B1', 'A serves what the tier holds');
      r3.close();
      await serverA.flush();
      const check = await serverB.open(id);
      assert.equal(check.get('cart'), 'B1', "B's change stands: A's late change did not overwrite it");
      check.close();
      assert.deepEqual(reported, ['KILN_ERR_CONFLICT'], "A's refused change was reported");
    } finally {
      await serverA.close();
      await serverB.close();
    }
  });
});

describe('write-behind changes made on a reload while older ones were on their way (real in-process tier, two clients)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 200, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it('still go out when the older ones are refused: only the changes made on the lost lease are given up', async () => {
    const a = withHeldAcks(tier.engine(), 'the send');
    const serverA = createSessionClient({ engine: a.engine, commitMode: 'async', asyncFlushMs: 60_000 });
    const serverB = createSessionClient({ engine: tier.engine() });
    const reported: string[] = [];
    serverA.onAsyncCommitError((err) => reported.push(err.code));
    try {
      const first = await serverA.open();
      first.set('cart', 'empty');
      await first.commit({ final: true });
      first.close();
      const id = first.id;

      const r1 = await serverA.open(id);
      r1.set('cart', 'A1'); // waits in A's write-behind
      await r1.commit({ final: true });
      r1.close();
      // A's lease is taken back while a request holds the session; B changes the session.
      const r2 = await serverA.open(id);
      const rb = await serverB.open(id);
      r2.close();
      rb.set('cart', 'B1');
      await rb.commit({ final: true });
      rb.close();

      // A's next request sends A1 first, but the send is slow: the request stops waiting
      // for it at its deadline, takes the lease anew and loads the session (B's version).
      // The request after it finds that copy in the near cache, and changes it.
      a.hold();
      const r3 = await serverA.open(id, { timeoutMs: 300 });
      assert.equal(r3.get('cart'), 'B1', 'A loaded what the tier holds');
      r3.close();
      const r4 = await serverA.open(id);
      assert.equal(r4.get('cart'), 'B1');
      r4.set('note', 'A4');
      await r4.commit({ final: true });
      r4.close();
      // A1 now reaches the tier, on the version it was made on: refused. A4 was made on B's
      // version and must still be sent.
      a.deliver();
      await serverA.flush();
      const check = await serverB.open(id);
      assert.equal(check.get('cart'), 'B1', "B's change stands");
      assert.equal(check.get('note'), 'A4', 'the change made on the reload was sent after the refused one');
      check.close();
      assert.deepEqual(reported, ['KILN_ERR_CONFLICT'], 'only the refused change was reported');
    } finally {
      a.deliver();
      await serverA.close();
      await serverB.close();
    }
  });
});

describe('write-behind changes made on a reload that older changes of this process landed after (real in-process tier)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 200, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it('are refused and reported, never written over the older ones (what they read lacked them)', async () => {
    const a = withHeldAcks(tier.engine(), 'the send');
    const serverA = createSessionClient({ engine: a.engine, commitMode: 'async', asyncFlushMs: 60_000 });
    const serverB = createSessionClient({ engine: tier.engine() });
    const reported: string[] = [];
    serverA.onAsyncCommitError((err) => reported.push(err.code));
    try {
      const first = await serverA.open();
      first.set('x', 'start');
      await first.commit({ final: true });
      first.close();
      const id = first.id;
      const r1 = await serverA.open(id);
      r1.set('x', 'O1'); // waits in A's write-behind
      await r1.commit({ final: true });
      r1.close();
      // A's lease is taken back while a request holds the session; B changes nothing.
      const r2 = await serverA.open(id);
      const rb = await serverB.open(id);
      r2.close();
      rb.close();
      // O1's send is slow: the next request loads the session without O1; the one after
      // reads x there and writes it back changed.
      a.hold();
      const r3 = await serverA.open(id, { timeoutMs: 300 });
      r3.close();
      const r4 = await serverA.open(id);
      assert.equal(r4.get('x'), 'start', 'the reload lacks O1');
      r4.set('x', `${String(r4.get('x'))}+R`);
      await r4.commit({ final: true });
      r4.close();
      a.deliver(); // O1 lands, on the version it was made on: nothing changed it
      await serverA.flush();
      const check = await serverB.open(id);
      assert.equal(check.get('x'), 'O1', "O1 stands: the change read before it landed did not undo it");
      check.close();
      assert.deepEqual(reported, ['KILN_ERR_CONFLICT'], 'the refused change was reported');
    } finally {
      a.deliver();
      await serverA.close();
      await serverB.close();
    }
  });
});

describe('write-behind batches of one session behind a send that does not end (real in-process tier)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 50, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it(`are at most ${MAX_BATCHES_PER_SESSION}: past that the oldest unsent one is given up and reported, the others still go`, async () => {
    const a = withHeldAcks(tier.engine(), 'the send');
    const serverA = createSessionClient({ engine: a.engine, commitMode: 'async', asyncFlushMs: 60_000 });
    const serverB = createSessionClient({ engine: tier.engine() });
    const reported: string[] = [];
    serverA.onAsyncCommitError((err) => reported.push(err.code));
    try {
      const first = await serverA.open();
      first.set('n', 0);
      await first.commit({ final: true });
      first.close();
      const id = first.id;
      const r0 = await serverA.open(id);
      r0.set('k0', true);
      await r0.commit({ final: true });
      r0.close();
      a.hold(); // every send of A waits from here
      for (let i = 1; i <= MAX_BATCHES_PER_SESSION + 1; i++) {
        // A loses the lease while a request holds the session (B asks for it)...
        const holding = await serverA.open(id);
        const rb = await serverB.open(id);
        holding.close();
        rb.close();
        // ...and its next request stops waiting for the stuck send, loads the session
        // again and changes it: a batch of its own.
        const reload = await serverA.open(id, { timeoutMs: 150 });
        reload.close();
        const change = await serverA.open(id);
        change.set(`k${i}`, true);
        await change.commit({ final: true });
        change.close();
      }
      assert.deepEqual(reported, ['KILN_ERR_TIMEOUT'], 'one batch given up, and said so');
      a.deliver();
      await serverA.flush();
      assert.ok(reported.length > 1, 'the others were sent (and refused: each was made on a load its older changes landed after)');
      assert.ok(reported.slice(1).every((code) => code === 'KILN_ERR_CONFLICT'), reported.join(', '));
    } finally {
      a.deliver();
      await serverA.close();
      await serverB.close();
    }
  });
});

describe('late acknowledgements (real in-process tier, two clients)', () => {
  // Leases stay with whoever took them last (no release after use for a session that
  // moves): the acknowledgement then finds its own process holding the session again.
  const tier = createMemoryTier({ pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it("a save's acknowledgement that comes after the lease went elsewhere and came back does not put the older copy back in the near cache", async () => {
    const a = withHeldAcks(tier.engine());
    const serverA = createSessionClient({ engine: a.engine });
    const serverB = createSessionClient({ engine: tier.engine() });
    try {
      const first = await serverA.open();
      first.set('n', 1);
      await first.commit({ final: true });
      first.close();
      const id = first.id;

      // A request on A saves (not its last commit), and its client goes before the answer.
      const r1 = await serverA.open(id);
      r1.set('n', 2);
      a.hold();
      const late = r1.commit();
      r1.close();

      // B takes the session and changes it; then A takes it back and loads B's version.
      const rb = await serverB.open(id);
      assert.equal(rb.get('n'), 2, 'the tier applied the save');
      rb.set('n', 3);
      rb.set('byB', true);
      await rb.commit({ final: true });
      rb.close();
      const r2 = await serverA.open(id);
      assert.equal(r2.get('n'), 3);
      r2.close();

      a.deliver();
      await late;
      const r3 = await serverA.open(id);
      assert.equal(r3.get('n'), 3, "B's change is still what A serves");
      assert.equal(r3.get('byB'), true);
      r3.set('n', 4);
      await r3.commit({ final: true });
      r3.close();
      const rb2 = await serverB.open(id);
      assert.equal(rb2.get('n'), 4, 'and A builds on it');
      rb2.close();
    } finally {
      await serverA.close();
      await serverB.close();
    }
  });
});
