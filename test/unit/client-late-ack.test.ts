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

type Client = ReturnType<typeof createSessionClient>;
type Handle = Awaited<ReturnType<Client['open']>>;

/** One request: opens the session, lets `work` read and change it, commits (the request's last) and closes. */
async function request(client: Client, id: string | undefined, work: (session: Handle) => void, options?: { timeoutMs?: number }): Promise<string> {
  const session = await client.open(id, options);
  work(session);
  await session.commit({ final: true });
  session.close();
  return session.id;
}

/**
 * A's lease is taken back: a request on A holds the session while B asks for it, and
 * past the recall deadline the tier gives it to B, whose request then does `onB`.
 */
async function leaseTakenFromA(serverA: Client, serverB: Client, id: string, onB: (session: Handle) => void = () => undefined): Promise<void> {
  const holding = await serverA.open(id);
  const rb = await serverB.open(id);
  holding.close();
  onB(rb);
  await rb.commit({ final: true });
  rb.close();
}

/** A write-behind client A (its engine's sends held on demand), a plain client B, and A's reported async errors. */
function twoClients(tier: ReturnType<typeof createMemoryTier>): { a: ReturnType<typeof withHeldAcks>; serverA: Client; serverB: Client; reported: string[]; close(): Promise<void> } {
  const a = withHeldAcks(tier.engine(), 'the send');
  const serverA = createSessionClient({ engine: a.engine, commitMode: 'async', asyncFlushMs: 60_000 });
  const serverB = createSessionClient({ engine: tier.engine() });
  const reported: string[] = [];
  serverA.onAsyncCommitError((err) => reported.push(err.code));
  return {
    a,
    serverA,
    serverB,
    reported,
    close: async () => {
      a.deliver();
      await serverA.close();
      await serverB.close();
    },
  };
}

describe('write-behind changes that outlive their lease (real in-process tier, two clients)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 200, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it("are sent on the version they were made on: refused (and reported) once another process changed the session, never written over its change", async () => {
    const { serverA, serverB, reported, close } = twoClients(tier);
    try {
      const id = await request(serverA, undefined, (s) => s.set('cart', 'empty')); // a new session: stored at once
      await request(serverA, id, (s) => s.set('cart', 'A1')); // waits in A's write-behind (flushed within a minute)
      await leaseTakenFromA(serverA, serverB, id, (rb) => {
        assert.equal(rb.get('cart'), 'empty', "A's change never reached the tier");
        rb.set('cart', 'B1');
      });
      await request(serverA, id, (s) => assert.equal(s.get('cart'), 'B1', 'A serves what the tier holds'));
      await serverA.flush();
      await request(serverB, id, (s) => assert.equal(s.get('cart'), 'B1', "B's change stands: A's late change did not overwrite it"));
      assert.deepEqual(reported, ['KILN_ERR_CONFLICT'], "A's refused change was reported");
    } finally {
      await close();
    }
  });
});

describe('write-behind changes made on a reload while older ones were on their way (real in-process tier, two clients)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 200, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it('still go out when the older ones are refused: only the changes made on the lost lease are given up', async () => {
    const { a, serverA, serverB, reported, close } = twoClients(tier);
    try {
      const id = await request(serverA, undefined, (s) => s.set('cart', 'empty'));
      await request(serverA, id, (s) => s.set('cart', 'A1')); // waits in A's write-behind
      await leaseTakenFromA(serverA, serverB, id, (rb) => rb.set('cart', 'B1'));
      // A's next request sends A1 first, but the send is slow: the request stops waiting
      // for it at its deadline, takes the lease anew and loads the session (B's version).
      // The request after it finds that copy in the near cache, and changes it.
      a.hold();
      await request(serverA, id, (s) => assert.equal(s.get('cart'), 'B1', 'A loaded what the tier holds'), { timeoutMs: 300 });
      await request(serverA, id, (s) => {
        assert.equal(s.get('cart'), 'B1');
        s.set('note', 'A4');
      });
      // A1 now reaches the tier, on the version it was made on: refused. A4 was made on B's
      // version and must still be sent.
      a.deliver();
      await serverA.flush();
      await request(serverB, id, (s) => {
        assert.equal(s.get('cart'), 'B1', "B's change stands");
        assert.equal(s.get('note'), 'A4', 'the change made on the reload was sent after the refused one');
      });
      assert.deepEqual(reported, ['KILN_ERR_CONFLICT'], 'only the refused change was reported');
    } finally {
      await close();
    }
  });
});

describe('write-behind changes made on a reload that older changes of this process landed after (real in-process tier)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 200, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it('are refused and reported, never written over the older ones (what they read lacked them)', async () => {
    const { a, serverA, serverB, reported, close } = twoClients(tier);
    try {
      const id = await request(serverA, undefined, (s) => s.set('x', 'start'));
      await request(serverA, id, (s) => s.set('x', 'O1')); // waits in A's write-behind
      await leaseTakenFromA(serverA, serverB, id); // B changes nothing
      // O1's send is slow: the next request loads the session without O1; the one after
      // reads x there and writes it back changed.
      a.hold();
      await request(serverA, id, () => undefined, { timeoutMs: 300 });
      await request(serverA, id, (s) => {
        assert.equal(s.get('x'), 'start', 'the reload lacks O1');
        s.set('x', `${String(s.get('x'))}+R`);
      });
      a.deliver(); // O1 lands, on the version it was made on: nothing changed it
      await serverA.flush();
      await request(serverB, id, (s) => assert.equal(s.get('x'), 'O1', 'O1 stands: the change read before it landed did not undo it'));
      assert.deepEqual(reported, ['KILN_ERR_CONFLICT'], 'the refused change was reported');
    } finally {
      await close();
    }
  });
});

describe('write-behind batches of one session behind a send that does not end (real in-process tier)', () => {
  const tier = createMemoryTier({ recallTimeoutMs: 50, pingPongThreshold: 1_000_000 });
  after(() => tier.close());

  it(`are at most ${MAX_BATCHES_PER_SESSION}: past that the oldest unsent one is given up and reported, the others still go`, async () => {
    const { a, serverA, serverB, reported, close } = twoClients(tier);
    try {
      const id = await request(serverA, undefined, (s) => s.set('n', 0));
      await request(serverA, id, (s) => s.set('k0', true));
      a.hold(); // every send of A waits from here
      for (let i = 1; i <= MAX_BATCHES_PER_SESSION + 1; i++) {
        // A loses the lease, and its next request stops waiting for the stuck send, loads
        // the session again; the one after changes it: a batch of its own.
        await leaseTakenFromA(serverA, serverB, id);
        await request(serverA, id, () => undefined, { timeoutMs: 150 });
        await request(serverA, id, (s) => s.set(`k${i}`, true));
      }
      assert.deepEqual(reported, ['KILN_ERR_TIMEOUT'], 'one batch given up, and said so');
      a.deliver();
      await serverA.flush();
      assert.ok(reported.length > 1, 'the others were sent (and refused: each was made on a load its older changes landed after)');
      assert.ok(reported.slice(1).every((code) => code === 'KILN_ERR_CONFLICT'), reported.join(', '));
    } finally {
      await close();
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
