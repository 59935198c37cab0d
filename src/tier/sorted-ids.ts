/**
 * Session ids in order, for the paged listing (admin, console, KilnStore.all). Sorting a
 * million ids takes about a second, so the order is not rebuilt after every create or
 * removal: changes since the last listing are kept aside and merged in when the next
 * listing asks. Only the first listing, or one after more changes than half the sessions,
 * builds the order from every id. Both run in slices (a build: ids gathered, sorted in
 * runs of RUN_IDS, runs merged; a merge: the changes sorted the same way, then merged
 * into the order), letting the event loop serve other clients between them: the server
 * never stops for a listing. Changes made while a build or a merge runs are kept aside
 * for the next one. Pure apart from the default clock and yield, which tests replace.
 */
import { SLICE_MS } from './sliced-work.js';

/** Ids sorted in one go while the order is built (a few milliseconds' work). */
export const RUN_IDS = 4096;

export class SortedIds {
  private sorted: string[] | undefined;
  private building: Promise<void> | undefined;
  private merging: Promise<void> | undefined;
  /** Set from the first step of a build (before its promise exists) to its end. */
  private inBuild = false;
  /** Bumped by reset: a build that started before it is thrown away. */
  private generation = 0;
  /** Adds and removes counted since the start (while tracking): what a listing asked after. */
  private changes = 0;
  /** The order holds every change up to this count (-1: merge before listing it). */
  private coveredUpTo = 0;
  private closed = false;
  /** Changes since the order (or the merge running) was taken; a merge takes them and starts new ones. */
  private added = new Set<string>();
  private removed = new Set<string>();

  constructor(
    private readonly all: () => Iterable<string>,
    private readonly yieldTurn: () => Promise<void> = () => new Promise<void>((resolve) => setImmediate(resolve)),
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The tier closed: listings get no ids, and a build or merge running stops at its next slice. */
  close(): void {
    this.closed = true;
    this.generation++;
    this.sorted = undefined;
    this.merging = undefined;
    this.added.clear();
    this.removed.clear();
  }

  /** Forget the order (bulk load): the next listing builds it again. */
  reset(): void {
    // Nothing kept yet (add and remove keep nothing before the first listing): a restart
    // calls this once per record, and clearing two empty Sets a million times took 0.7 s.
    if (!this.tracking) return;
    this.generation++;
    this.sorted = undefined;
    this.merging = undefined; // a merge running stops at its next slice; a new one may start after the build
    this.added.clear();
    this.removed.clear();
  }

  add(id: string): void {
    if (!this.tracking) return;
    // Either set may name an id the order already holds (a build may have gathered it
    // before or after the change): the merge keeps every id once.
    this.changes++;
    this.removed.delete(id);
    this.added.add(id);
    this.limitPending();
  }

  remove(id: string): void {
    if (!this.tracking) return;
    this.changes++;
    this.added.delete(id);
    this.removed.add(id);
    this.limitPending();
  }

  /**
   * The ids in order, with every create and removal made before the call (do not keep the
   * array: the next merge replaces it). A listing that finds a merge running waits for it,
   * and merges again if that one took its changes before some made before the call: at
   * most two merges, so a listing under steady churn ends. Changes made while it waits
   * are left for the next listing. After close, no ids.
   */
  async view(): Promise<string[]> {
    const asked = this.changes;
    for (;;) {
      if (this.closed) return [];
      if (!this.sorted) {
        this.building ??= this.build();
        await this.building;
        continue;
      }
      if (this.coveredUpTo >= asked) return this.sorted;
      this.merging ??= this.mergePending();
      await this.merging;
    }
  }

  /** Changes are kept once there is an order to merge them into, or one being built. */
  private get tracking(): boolean {
    return !this.closed && (this.sorted !== undefined || this.inBuild);
  }

  private async build(): Promise<void> {
    this.inBuild = true;
    try {
      for (;;) {
        if (this.closed) return;
        const generation = this.generation;
        const takenAt = this.changes;
        this.added.clear();
        this.removed.clear();
        // A reset while the build runs (a bulk load, the tier closing) starts it again at
        // the next slice rather than after a whole build of what the reset threw away.
        const stale = (): boolean => generation !== this.generation;
        const ids = await this.gather(this.all(), stale);
        const order = ids && (await this.sortInSlices(ids, stale));
        if (order && !stale()) {
          this.sorted = order;
          // Changes made meanwhile are merged before the order is listed: the merge also
          // drops an id the gathering met twice (removed, then made again further on).
          this.coveredUpTo = this.added.size > 0 || this.removed.size > 0 ? -1 : takenAt;
          return;
        }
      }
    } finally {
      this.inBuild = false;
      this.building = undefined;
    }
  }

  /**
   * The pause of one piece of sliced work: once its slice has run SLICE_MS it yields the
   * event loop, and answers false when the work went stale meanwhile. Callers ask every
   * so many ids, so the clock is read rarely.
   */
  private pauser(stale: () => boolean): () => Promise<boolean> {
    let sliceStart = this.now();
    return async () => {
      if (this.now() - sliceStart > SLICE_MS) {
        await this.yieldTurn();
        if (stale()) return false;
        sliceStart = this.now();
      }
      return true;
    };
  }

  /** Every id of `source`, gathered in slices; undefined when the work went stale meanwhile. */
  private async gather(source: Iterable<string>, stale: () => boolean): Promise<string[] | undefined> {
    const pause = this.pauser(stale);
    const ids: string[] = [];
    for (const id of source) {
      ids.push(id);
      if ((ids.length & 1023) === 0 && !(await pause())) return undefined;
    }
    return ids;
  }

  /** A bottom-up merge sort: runs of RUN_IDS sorted in one go, then merged in pairs, a slice at a time. */
  private async sortInSlices(ids: string[], stale: () => boolean): Promise<string[] | undefined> {
    const pause = this.pauser(stale);
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

  /**
   * Merges the changes kept so far into the order, in slices. New changes go to fresh
   * sets meanwhile. A reset during the merge (a bulk load, too many changes, the tier
   * closing) throws it away: the order is built again.
   */
  private async mergePending(): Promise<void> {
    const generation = this.generation;
    const takenAt = this.changes;
    const stale = (): boolean => generation !== this.generation;
    const base = this.sorted!;
    const added = this.added;
    const removed = this.removed;
    this.added = new Set();
    this.removed = new Set();
    try {
      const gathered = await this.gather(added, stale);
      const extra = gathered && (await this.sortInSlices(gathered, stale));
      const out = extra && (await this.mergeInSlices(base, extra, removed, stale));
      if (!out || stale()) return;
      this.sorted = out;
      this.coveredUpTo = takenAt;
    } finally {
      if (!stale()) this.merging = undefined; // once stale, reset has let go of it and a newer merge may be running
    }
  }

  /** `base` with `extra` (sorted) merged in and `removed` left out, each id once; undefined when stale. */
  private async mergeInSlices(base: string[], extra: string[], removed: ReadonlySet<string>, stale: () => boolean): Promise<string[] | undefined> {
    const checkRemoved = removed.size > 0;
    const out = new Array<string>(base.length + extra.length);
    const pause = this.pauser(stale);
    let n = 0;
    let j = 0;
    for (let i = 0; i < base.length; i++) {
      const id = base[i]!;
      while (j < extra.length && extra[j]! < id) out[n++] = extra[j++]!;
      if (j < extra.length && extra[j] === id) j++; // added while the order was built, and gathered too
      // A build can gather an id twice (removed and made again in a slot it had not reached):
      // each id is written once, or paging with `after` would stop at the copy.
      if ((!checkRemoved || !removed.has(id)) && (n === 0 || out[n - 1] !== id)) out[n++] = id;
      if ((i & 1023) === 1023 && !(await pause())) return undefined;
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
