/**
 * Session ids in order, for the paged listing (admin, console, KilnStore.all). Sorting a
 * million ids takes about a second, so the order is not rebuilt after every create or
 * removal: changes since the last listing are kept aside and merged in (linear, tens of
 * milliseconds at a million) when the next listing asks. Only the first listing, or one
 * after more changes than half the sessions, sorts everything. Pure.
 */
export class SortedIds {
  private sorted: string[] | undefined;
  private readonly added = new Set<string>();
  private readonly removed = new Set<string>();

  constructor(private readonly all: () => Iterable<string>) {}

  /** Forget the order (bulk load): the next listing sorts everything. */
  reset(): void {
    // Nothing kept yet (add and remove keep nothing before the first listing): a restart
    // calls this once per record, and clearing two empty Sets a million times took 0.7 s.
    if (!this.sorted) return;
    this.sorted = undefined;
    this.added.clear();
    this.removed.clear();
  }

  add(id: string): void {
    if (!this.sorted) return;
    // Removed and made again before a listing: it is in the sorted array already.
    if (this.removed.delete(id)) return;
    this.added.add(id);
    this.limitPending();
  }

  remove(id: string): void {
    if (!this.sorted) return;
    if (this.added.delete(id)) return;
    this.removed.add(id);
    this.limitPending();
  }

  /** The ids in order (do not keep the array: the next change may replace it). */
  view(): string[] {
    if (!this.sorted) {
      this.sorted = [...this.all()].sort();
    } else if (this.added.size > 0 || this.removed.size > 0) {
      this.sorted = this.merged();
      this.added.clear();
      this.removed.clear();
    }
    return this.sorted;
  }

  private merged(): string[] {
    const base = this.sorted!;
    const extra = [...this.added].sort();
    const removed = this.removed;
    const checkRemoved = removed.size > 0;
    const out = new Array<string>(base.length + extra.length);
    let n = 0;
    let j = 0;
    for (let i = 0; i < base.length; i++) {
      const id = base[i]!;
      while (j < extra.length && extra[j]! < id) out[n++] = extra[j++]!;
      if (!checkRemoved || !removed.has(id)) out[n++] = id;
    }
    while (j < extra.length) out[n++] = extra[j++]!;
    out.length = n;
    return out;
  }

  private limitPending(): void {
    if (this.added.size + this.removed.size > Math.max(1024, this.sorted!.length / 2)) this.reset();
  }
}
