/**
 * Session ids in order, for the paged listing (admin, console, KilnStore.all). Sorting a
 * million ids takes about a second, so the order is not rebuilt after every create or
 * removal: changes since the last listing are kept aside and merged in (linear, tens of
 * milliseconds at a million) when the next listing asks. Only the first listing, or one
 * after more changes than half the sessions, builds the order from every id, and it does
 * so in slices (ids gathered, sorted in runs of RUN_IDS, runs merged), letting the event
 * loop serve other clients between them: the server never stops for a listing. Changes
 * made while a build runs are kept aside like any other and merged when it ends. Pure
 * apart from the default clock and yield, which tests replace.
 */
import { SLICE_MS } from './sliced-work.js';

/** Ids sorted in one go while the order is built (a few milliseconds' work). */
export const RUN_IDS = 4096;

export class SortedIds {
  private sorted: string[] | undefined;
  private building: Promise<void> | undefined;
  /** Set from the first step of a build (before its promise exists) to its end. */
  private inBuild = false;
  /** Bumped by reset: a build that started before it is thrown away. */
  private generation = 0;
  private readonly added = new Set<string>();
  private readonly removed = new Set<string>();

  constructor(
    private readonly all: () => Iterable<string>,
    private readonly yieldTurn: () => Promise<void> = () => new Promise<void>((resolve) => setImmediate(resolve)),
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Forget the order (bulk load): the next listing builds it again. */
  reset(): void {
    // Nothing kept yet (add and remove keep nothing before the first listing): a restart
    // calls this once per record, and clearing two empty Sets a million times took 0.7 s.
    if (!this.tracking) return;
    this.generation++;
    this.sorted = undefined;
    this.added.clear();
    this.removed.clear();
  }

  add(id: string): void {
    if (!this.tracking) return;
    // Either set may name an id the order already holds (a build may have gathered it
    // before or after the change): the merge keeps every id once.
    this.removed.delete(id);
    this.added.add(id);
    this.limitPending();
  }

  remove(id: string): void {
    if (!this.tracking) return;
    this.added.delete(id);
    this.removed.add(id);
    this.limitPending();
  }

  /** The ids in order (do not keep the array: the next change may replace it). */
  async view(): Promise<string[]> {
    while (!this.sorted) {
      this.building ??= this.build();
      await this.building;
    }
    if (this.added.size > 0 || this.removed.size > 0) {
      this.sorted = this.merged(this.sorted);
      this.added.clear();
      this.removed.clear();
    }
    return this.sorted;
  }

  /** Changes are kept once there is an order to merge them into, or one being built. */
  private get tracking(): boolean {
    return this.sorted !== undefined || this.inBuild;
  }

  private async build(): Promise<void> {
    this.inBuild = true;
    try {
      for (;;) {
        const generation = this.generation;
        this.added.clear();
        this.removed.clear();
        // A reset while the build runs (a bulk load, the tier closing) starts it again at
        // the next slice rather than after a whole build of what the reset threw away.
        const stale = (): boolean => generation !== this.generation;
        const ids = await this.gather(stale);
        const order = ids && (await this.sortInSlices(ids, stale));
        if (order && !stale()) {
          this.sorted = order;
          return;
        }
      }
    } finally {
      this.inBuild = false;
      this.building = undefined;
    }
  }

  /** Every id, gathered in slices; undefined when the build went stale meanwhile. */
  private async gather(stale: () => boolean): Promise<string[] | undefined> {
    const ids: string[] = [];
    let sliceStart = this.now();
    for (const id of this.all()) {
      ids.push(id);
      if ((ids.length & 1023) === 0 && this.now() - sliceStart > SLICE_MS) {
        await this.yieldTurn();
        if (stale()) return undefined;
        sliceStart = this.now();
      }
    }
    return ids;
  }

  /** A bottom-up merge sort: runs of RUN_IDS sorted in one go, then merged in pairs, a slice at a time. */
  private async sortInSlices(ids: string[], stale: () => boolean): Promise<string[] | undefined> {
    let sliceStart = this.now();
    /** False when the build went stale during the pause. */
    const pause = async (): Promise<boolean> => {
      if (this.now() - sliceStart > SLICE_MS) {
        await this.yieldTurn();
        if (stale()) return false;
        sliceStart = this.now();
      }
      return true;
    };
    let from = ids;
    for (let at = 0; at < from.length; at += RUN_IDS) {
      const run = from.slice(at, at + RUN_IDS).sort();
      for (let i = 0; i < run.length; i++) from[at + i] = run[i]!;
      if (!(await pause())) return undefined;
    }
    let to = new Array<string>(from.length);
    for (let width = RUN_IDS; width < from.length; width *= 2) {
      for (let lo = 0; lo < from.length; lo += 2 * width) {
        const mid = Math.min(lo + width, from.length);
        const hi = Math.min(lo + 2 * width, from.length);
        let i = lo;
        let j = mid;
        let k = lo;
        while (k < hi) {
          to[k++] = j >= hi || (i < mid && from[i]! <= from[j]!) ? from[i++]! : from[j++]!;
          if ((k & 1023) === 0 && !(await pause())) return undefined;
        }
      }
      [from, to] = [to, from];
    }
    return from;
  }

  private merged(base: string[]): string[] {
    const extra = [...this.added].sort();
    const removed = this.removed;
    const checkRemoved = removed.size > 0;
    const out = new Array<string>(base.length + extra.length);
    let n = 0;
    let j = 0;
    for (let i = 0; i < base.length; i++) {
      const id = base[i]!;
      while (j < extra.length && extra[j]! < id) out[n++] = extra[j++]!;
      if (j < extra.length && extra[j] === id) j++; // added while the order was built, and gathered too
      // A build can gather an id twice (removed and made again in a slot it had not reached):
      // each id is written once, or paging with `after` would stop at the copy.
      if ((!checkRemoved || !removed.has(id)) && (n === 0 || out[n - 1] !== id)) out[n++] = id;
    }
    while (j < extra.length) out[n++] = extra[j++]!;
    out.length = n;
    return out;
  }

  private limitPending(): void {
    // While an order is built its size is not known; what the build takes is bounded by its duration.
    if (this.sorted && this.added.size + this.removed.size > Math.max(1024, this.sorted.length / 2)) this.reset();
  }
}
