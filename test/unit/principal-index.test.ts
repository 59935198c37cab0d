import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PrincipalIndex } from '../../src/tier/principal-index.js';

describe('principal index', () => {
  it('lists and counts a principal\'s slots through removals at the head, middle and tail', () => {
    const index = new PrincipalIndex();
    assert.equal(index.count('ann'), 0);
    assert.deepEqual(index.slotsOf('ann'), []);
    for (const slot of [3, 7, 9, 12]) index.add('ann', slot);
    index.add('bob', 5);
    assert.deepEqual(index.slotsOf('ann'), [12, 9, 7, 3], 'newest first');
    assert.equal(index.count('ann'), 4);
    // A slot not in that principal's list (a caller's mistake) changes nothing.
    index.remove('ann', 5);
    index.remove('ann', 4);
    index.remove('ann', 100_000);
    assert.deepEqual(index.slotsOf('ann'), [12, 9, 7, 3]);
    assert.equal(index.count('ann'), 4);
    assert.deepEqual(index.slotsOf('bob'), [5]);
    index.remove('ann', 9); // middle
    assert.deepEqual(index.slotsOf('ann'), [12, 7, 3]);
    index.remove('ann', 12); // head: the count moves to the next one
    assert.deepEqual(index.slotsOf('ann'), [7, 3]);
    assert.equal(index.count('ann'), 2);
    index.remove('ann', 3); // tail
    assert.deepEqual(index.slotsOf('ann'), [7]);
    assert.equal(index.count('ann'), 1);
    index.remove('ann', 7);
    assert.equal(index.count('ann'), 0);
    assert.equal(index.principals, 1, 'a principal with no session leaves the index');
    assert.deepEqual(index.slotsOf('bob'), [5]);
    index.remove('nobody', 5);
    assert.deepEqual(index.slotsOf('bob'), [5], 'removing under another principal changes nothing');
  });

  it('stays in step with a model through many adds, moves and removals, slots reused', () => {
    const index = new PrincipalIndex();
    const model = new Map<number, string>(); // slot → principal
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 16) % n;
    };
    for (let step = 0; step < 20_000; step++) {
      const slot = random(3000); // past the first 1,024: the arrays grow
      const principal = `p${random(40)}`;
      const was = model.get(slot);
      if (was === undefined) {
        index.add(principal, slot);
        model.set(slot, principal);
      } else if (random(3) === 0) {
        index.remove(was, slot);
        model.delete(slot);
      } else if (was !== principal) {
        index.remove(was, slot);
        index.add(principal, slot);
        model.set(slot, principal);
      }
    }
    assert.ok(new Set(model.values()).size >= 38, 'most principals in use');
    assert.ok(model.size > 1500, `many slots in use (${model.size})`);
    for (let p = 0; p < 40; p++) {
      const principal = `p${p}`;
      const expected = [...model].filter(([, q]) => q === principal).map(([slot]) => slot).sort((x, y) => x - y);
      assert.deepEqual(index.slotsOf(principal).sort((x, y) => x - y), expected, principal);
      assert.equal(index.count(principal), expected.length, principal);
    }
  });

  describe('pages (FindPrincipal over the wire)', () => {
    /** Every page of a principal's list, each from the last one's resume, with `between` run before each next page. */
    const allPages = (index: PrincipalIndex, principal: string, limit: number, between: (page: number) => void = () => undefined, maxSteps?: number): { pages: number[][]; steps: number[] } => {
      const pages: number[][] = [];
      const steps: number[] = [];
      let after: { slot: number; join: number } | undefined;
      for (let guard = 0; guard < 10_000; guard++) {
        const page = index.pageOf(principal, limit, after, maxSteps);
        pages.push(page.slots);
        steps.push(page.steps);
        if (page.resume === undefined) return { pages, steps };
        after = { slot: page.resume.to, join: page.resume.join };
        between(pages.length);
      }
      throw new Error('pages never ended');
    };

    it('pages a list newest first, each page from the last one in one step, no cursor after the last page', () => {
      const index = new PrincipalIndex();
      for (let slot = 0; slot < 10; slot++) index.add('ann', slot);
      index.add('bob', 50);
      const three = allPages(index, 'ann', 3);
      assert.deepEqual(three.pages, [[9, 8, 7], [6, 5, 4], [3, 2, 1], [0]]);
      assert.deepEqual(three.steps, [0, 1, 1, 1], "from the last page's last slot, still in the list: one step past it");
      assert.deepEqual(allPages(index, 'ann', 5).pages, [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]], 'a full last page: no cursor after it');
      assert.deepEqual(allPages(index, 'nobody', 5).pages, [[]]);
      assert.deepEqual(allPages(index, 'bob', 5).pages, [[50]]);
    });

    it("goes on past a page's last session that logged out meanwhile: a walk from the head past its join", () => {
      const index = new PrincipalIndex();
      for (let slot = 0; slot < 10; slot++) index.add('ann', slot);
      const { pages, steps } = allPages(index, 'ann', 3, (page) => {
        if (page === 1) index.remove('ann', 7); // the first page's last session
        if (page === 2) {
          index.remove('ann', 4); // the second page's last session, and one of the next page's
          index.remove('ann', 3);
        }
      });
      assert.deepEqual(pages, [[9, 8, 7], [6, 5, 4], [2, 1, 0]]);
      assert.deepEqual(steps, [0, 2, 4], 'from the head: a step per session met already');
    });

    it('cuts a long walk into bounded steps: empty pages that go on from where the walk stopped, with the same join', () => {
      const index = new PrincipalIndex();
      for (let slot = 0; slot < 100; slot++) index.add('ann', slot);
      const first = index.pageOf('ann', 40);
      assert.deepEqual(first.resume, { to: 60, join: 61 }, 'slot s joined at s + 1');
      index.remove('ann', 60); // the cursor's session leaves: the next page walks from the head
      const walked: number[][] = [];
      let after = { slot: 60, join: first.resume!.join };
      for (;;) {
        const page = index.pageOf('ann', 40, after, 16);
        assert.ok(page.steps <= 16, `at most 16 steps (${page.steps})`);
        if (page.slots.length > 0) {
          assert.deepEqual(page.slots, Array.from({ length: 40 }, (_, i) => 59 - i));
          break;
        }
        assert.equal(page.resume?.join, 61, 'an empty page goes on with the same join');
        walked.push([page.resume!.to]);
        after = { slot: page.resume!.to, join: page.resume!.join };
      }
      assert.deepEqual(walked, [[83], [67]], 'two cut walks of 16 steps, then the page (99 → 83 → 67 → past 61)');
    });

    it('sessions logging in again meanwhile, the cursor\'s own included, join at the head and are not met twice', () => {
      const index = new PrincipalIndex();
      for (let slot = 0; slot < 9; slot++) index.add('ann', slot);
      const { pages, steps } = allPages(index, 'ann', 3, (page) => {
        if (page === 1) {
          index.remove('ann', 8); // met on page 1; logs in again
          index.add('ann', 8);
          index.remove('ann', 6); // the cursor's session logs in again: the page starts from it, at the head
          index.add('ann', 6);
        }
      });
      assert.deepEqual(pages, [[8, 7, 6], [5, 4, 3], [2, 1, 0]]);
      assert.deepEqual(steps, [0, 3, 1]);
    });

    it('meets every session present throughout exactly once, under random logins and logouts between pages', () => {
      let seed = 11;
      const random = (n: number): number => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return (seed >>> 16) % n;
      };
      for (let trial = 0; trial < 30; trial++) {
        const index = new PrincipalIndex();
        let nextSlot = 0;
        for (let i = 0; i < 200; i++) index.add(random(4) === 0 ? 'other' : 'ann', nextSlot++);
        const annAtStart = new Set(index.slotsOf('ann'));
        const touched = new Set<number>(); // left or logged in again while paging
        const { pages } = allPages(
          index,
          'ann',
          1 + random(20),
          () => {
            for (let k = random(6); k > 0; k--) {
              const slots = index.slotsOf('ann');
              const slot = slots[random(slots.length)];
              if (slot === undefined) break;
              touched.add(slot);
              index.remove('ann', slot);
              if (random(2) === 0) index.add('ann', slot);
            }
            for (let k = random(3); k > 0; k--) index.add('ann', nextSlot++); // new logins
          },
          1 + random(8), // small walks: cut walks happen
        );
        const met = pages.flat();
        assert.equal(new Set(met).size, met.length, `trial ${trial}: a session met twice`);
        for (const slot of met) assert.ok(annAtStart.has(slot), `trial ${trial}: slot ${slot} is not one of ann's sessions at the start`);
        for (const slot of annAtStart) if (!touched.has(slot)) assert.ok(met.includes(slot), `trial ${trial}: slot ${slot} present throughout was missed`);
      }
    });
  });
});
