import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RUN_IDS, SortedIds } from '../../src/tier/sorted-ids.js';

/**
 * An index over `live` whose pauses between slices wait for the test (`resumeNext`), with
 * a clock that runs only while `ticking` (a stopped clock: every build or merge in one go).
 */
function pausingIndex(live: Set<string>) {
  const paused: (() => void)[] = [];
  let clock = 0;
  const state = { ticking: false };
  const index = new SortedIds(
    () => live,
    () => new Promise<void>((resume) => paused.push(resume)),
    () => (state.ticking ? (clock += 1) : clock),
  );
  /** Lets every callback and promise of this turn run. */
  const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const change = (prefix: string): void => {
    for (let i = 0; i < 2 * RUN_IDS; i++) {
      live.add(`${prefix}${i}`);
      index.add(`${prefix}${i}`);
    }
  };
  const resumeAll = async (): Promise<void> => {
    while (paused.length > 0) {
      paused.shift()!();
      await settle();
    }
  };
  return { index, paused, state, settle, change, resumeAll };
}

describe('SortedIds (the listing order kept by merging changes)', () => {
  it('matches a fresh sort after any sequence of adds and removes', async () => {
    let seed = 3;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const live = new Set<string>();
    for (let i = 0; i < 3000; i++) live.add(`id${Math.floor(rand() * 1e9)}`);
    const index = new SortedIds(() => live);
    assert.deepEqual(await index.view(), [...live].sort());
    for (let round = 0; round < 50; round++) {
      for (let k = 0; k < 40; k++) {
        if (rand() < 0.5) {
          const id = `id${Math.floor(rand() * 1e9)}`;
          if (!live.has(id)) {
            live.add(id);
            index.add(id);
          }
        } else {
          const victim = [...live][Math.floor(rand() * live.size)]!;
          live.delete(victim);
          index.remove(victim);
          if (rand() < 0.2) {
            // Made again before the next listing.
            live.add(victim);
            index.add(victim);
          }
        }
      }
      assert.deepEqual(await index.view(), [...live].sort(), `round ${round}`);
    }
  });

  it('after more changes than half the ids, sorts everything again (the pending sets stay bounded)', async () => {
    const live = new Set(['b', 'a']);
    const index = new SortedIds(() => live);
    await index.view();
    for (let i = 0; i < 5000; i++) {
      live.add(`x${i}`);
      index.add(`x${i}`);
    }
    assert.deepEqual(await index.view(), [...live].sort());
  });

  it('builds the order in slices, yielding between them, and keeps the changes made meanwhile', async () => {
    let seed = 11;
    const rand = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
    const live = new Set<string>();
    while (live.size < 3 * RUN_IDS + 17) live.add(`s${Math.floor(rand() * 1e12)}`);
    let clock = 0;
    let clockRuns = true;
    let yields = 0;
    const gathered = [...live].slice(0, 50);
    const index = new SortedIds(
      () => live,
      async () => {
        yields++;
        // Between slices the server goes on: sessions are made and removed, some of them
        // already gathered, some made again after their removal.
        const made = `s${Math.floor(rand() * 1e12)}`;
        live.add(made);
        index.add(made);
        const gone = gathered[yields % gathered.length]!;
        if (live.delete(gone)) index.remove(gone);
        if (yields % 3 === 0) {
          live.add(gone);
          index.add(gone);
        }
      },
      () => (clockRuns ? (clock += 1) : clock), // 4 ms pass every few readings: many slices
    );
    const asked = [...live];
    const order = await index.view();
    assert.ok(yields >= 5, `the build yielded (${yields} times)`);
    assert.deepEqual(order, [...order].sort());
    assert.equal(new Set(order).size, order.length, 'every id once');
    const listed = new Set(order);
    assert.deepEqual(asked.filter((id) => live.has(id) && !listed.has(id)), [], 'every id there before the listing and still there is listed');
    // The merge after the build yields too, and what changed meanwhile waits for the next listing.
    clockRuns = false;
    assert.deepEqual(await index.view(), [...live].sort(), 'the changes made meanwhile are kept');
  });

  it('a reset while the order is built starts the build again; listings made meanwhile wait for it', async () => {
    const live = new Set(Array.from({ length: 2 * RUN_IDS + 5 }, (_, i) => `id${(i * 7919) % 100_003}`));
    let clock = 0;
    let resets = 1;
    const index: SortedIds = new SortedIds(
      () => live,
      async () => {
        if (resets-- > 0) {
          live.add('zz-after-reset');
          index.reset();
        }
      },
      () => (clock += 1),
    );
    const [first, second] = await Promise.all([index.view(), index.view()]);
    assert.deepEqual(first, [...live].sort());
    assert.deepEqual(second, first);
    assert.ok(first.includes('zz-after-reset'));
  });

  it('an id removed and made again where the gathering has not reached yet is listed once', async () => {
    const live = new Set(Array.from({ length: 3 * RUN_IDS }, (_, i) => `id${String(i).padStart(6, '0')}`));
    let clock = 0;
    let yields = 0;
    const index: SortedIds = new SortedIds(
      () => live,
      async () => {
        if (++yields === 1) {
          // Gathered already; removed, then made again: a Set puts it last, where the
          // gathering will meet it a second time (as a slot the arena had not reached).
          live.delete('id000000');
          index.remove('id000000');
          live.add('id000000');
          index.add('id000000');
        }
      },
      () => (clock += 1),
    );
    const order = await index.view();
    assert.equal(order.filter((id) => id === 'id000000').length, 1);
    assert.deepEqual(order, [...live].sort());
  });

  it('a reset while the order is built throws the stale work away at the next slice', async () => {
    const live = new Set(Array.from({ length: 4 * RUN_IDS }, (_, i) => `k${i}`));
    const build = async (resetAtFirstYield: boolean): Promise<{ yields: number; gathered: number }> => {
      let clock = 0;
      let yields = 0;
      let gathered = 0;
      const index: SortedIds = new SortedIds(
        () => {
          gathered++;
          return live;
        },
        async () => {
          if (++yields === 1 && resetAtFirstYield) index.reset();
        },
        () => (clock += 1),
      );
      assert.deepEqual(await index.view(), [...live].sort());
      return { yields, gathered };
    };
    const whole = await build(false);
    const reset = await build(true);
    assert.ok(whole.yields > 4, `a whole build yields often (${whole.yields})`);
    assert.equal(reset.gathered, 2, 'gathered again from the start after the reset');
    assert.equal(reset.yields, whole.yields + 1, 'the stale build stopped at the slice after the reset');
  });

  it('merges the changes since the last listing in slices, leaving those made meanwhile to the next listing', async () => {
    const live = new Set(Array.from({ length: 6 * RUN_IDS }, (_, i) => `b${String(i * 3).padStart(7, '0')}`));
    let clock = 0;
    let ticking = false;
    let yields = 0;
    const index: SortedIds = new SortedIds(
      () => live,
      async () => {
        yields++;
        // The server goes on between slices: one session made, one ended.
        const made = `m${yields}`;
        live.add(made);
        index.add(made);
        const gone = `b${String(yields * 3).padStart(7, '0')}`;
        if (live.delete(gone)) index.remove(gone);
      },
      () => (ticking ? (clock += 1) : clock),
    );
    await index.view(); // the order, built in one slice (the clock stands still)
    assert.equal(yields, 0);
    // Changes since: ids between the listed ones, after them, and removals.
    for (let i = 0; i < 2 * RUN_IDS; i++) {
      const id = `b${String(i * 3 + 1).padStart(7, '0')}`;
      live.add(id);
      index.add(id);
    }
    for (let i = 0; i < 500; i++) {
      const id = `b${String(i * 30 + 6000).padStart(7, '0')}`;
      live.delete(id);
      index.remove(id);
    }
    const asked = [...live].sort();
    ticking = true;
    const order = await index.view();
    ticking = false;
    assert.ok(yields >= 3, `the merge yielded (${yields} times)`);
    assert.deepEqual(order, asked, 'the changes made before the listing, and only those');
    assert.deepEqual(await index.view(), [...live].sort(), 'the next listing has those made meanwhile');
  });

  it('a reset during a merge throws it away: the listing builds the order again, with every change', async () => {
    const live = new Set(Array.from({ length: 4 * RUN_IDS }, (_, i) => `c${String(i).padStart(6, '0')}`));
    let clock = 0;
    let ticking = false;
    let resets = 0;
    const index: SortedIds = new SortedIds(
      () => live,
      async () => {
        if (resets++ === 0) {
          live.add('zz-after-reset');
          index.reset();
        }
      },
      () => (ticking ? (clock += 1) : clock),
    );
    await index.view();
    for (let i = 0; i < RUN_IDS; i++) {
      live.add(`d${i}`);
      index.add(`d${i}`);
    }
    ticking = true;
    const [first, second] = await Promise.all([index.view(), index.view()]);
    assert.ok(resets > 1, 'the merge yielded, and the build after the reset too');
    assert.deepEqual(first, [...live].sort());
    assert.deepEqual(second, first);
    assert.ok(first.includes('zz-after-reset') && first.includes(`d${RUN_IDS - 1}`));
  });

  it('a listing that finds a merge running still has every change made before it was called', async () => {
    const live = new Set(Array.from({ length: 4 * RUN_IDS }, (_, i) => `e${String(i).padStart(6, '0')}`));
    const { index, paused, state, settle, change, resumeAll } = pausingIndex(live);
    await index.view();
    change('f');
    state.ticking = true;
    const first = index.view(); // its merge takes the f ids, then pauses between slices
    await settle();
    assert.equal(paused.length, 1, 'the merge paused');
    live.add('made-before-the-second');
    index.add('made-before-the-second');
    const second = index.view();
    await resumeAll();
    assert.ok(!(await first).includes('made-before-the-second'), 'made after the first listing was called');
    assert.deepEqual(await second, [...live].sort());
  });

  it('a merge thrown away by a reset does not let a later listing start a second merge beside the running one', async () => {
    const live = new Set(Array.from({ length: 4 * RUN_IDS }, (_, i) => `g${String(i).padStart(6, '0')}`));
    const { index, paused, state, settle, change, resumeAll } = pausingIndex(live);
    await index.view();
    change('h');
    state.ticking = true;
    const staleListing = index.view(); // merge 1 pauses
    await settle();
    const resumeStale = paused.shift()!;
    index.reset(); // merge 1 is stale from here
    state.ticking = false;
    await index.view(); // the order built again, in one go
    const beforeK = [...live].sort();
    change('k');
    state.ticking = true;
    const running = index.view(); // merge 2 pauses
    await settle();
    assert.equal(paused.length, 1);
    resumeStale(); // merge 1 sees it is stale and ends
    await settle();
    const later = index.view(); // must wait for merge 2, not start merge 3
    await settle();
    assert.equal(paused.length, 1, 'one merge running, paused once');
    await resumeAll();
    const all = [...live].sort();
    assert.deepEqual(await running, all);
    assert.deepEqual(await later, all);
    assert.deepEqual(await staleListing, beforeK, 'the first listing, called before the k ids were made');
    assert.deepEqual(await index.view(), all);
  });

  it('after close, a listing gets no ids and nothing is built again', async () => {
    const live = new Set(Array.from({ length: 2 * RUN_IDS }, (_, i) => `z${i}`));
    let gathers = 0;
    let clock = 0;
    const index: SortedIds = new SortedIds(
      () => {
        gathers++;
        return live;
      },
      async () => index.close(), // the tier closes while the first listing builds
      () => (clock += 1),
    );
    assert.deepEqual(await index.view(), []);
    assert.equal(gathers, 1);
    index.add('late');
    assert.deepEqual(await index.view(), []);
    assert.equal(gathers, 1);
  });
});
