/**
 * A binary min-heap of deadlines, for "when is the next one due" without scanning
 * everything that has one (the lease table asks after every lease change; with 100,000
 * leases held a scan cost more than the operation itself).
 *
 * Entries are never removed in place: the owner decides whether an entry popped or seen
 * at the top is still current (`isCurrent`), and stale ones are dropped as they surface.
 * The heap therefore holds at most the entries pushed within one deadline period, plus
 * the live ones. Pure: no timers, no clock.
 */
export class DeadlineHeap<T> {
  private readonly at: number[] = [];
  private readonly items: T[] = [];

  constructor(private readonly isCurrent: (item: T, deadline: number) => boolean) {}

  get size(): number {
    return this.at.length;
  }

  push(deadline: number, item: T): void {
    this.at.push(deadline);
    this.items.push(item);
    this.up(this.at.length - 1);
  }

  /** The earliest current deadline, or Infinity; stale entries on top are dropped. */
  next(): number {
    this.dropStale();
    return this.at.length > 0 ? this.at[0]! : Infinity;
  }

  /** Removes and returns every current entry due at or before `now`, earliest first. */
  popDue(now: number): T[] {
    const out: T[] = [];
    for (;;) {
      this.dropStale();
      if (this.at.length === 0 || this.at[0]! > now) return out;
      out.push(this.items[0]!);
      this.removeTop();
    }
  }

  private dropStale(): void {
    while (this.at.length > 0 && !this.isCurrent(this.items[0]!, this.at[0]!)) this.removeTop();
  }

  private removeTop(): void {
    const lastAt = this.at.pop()!;
    const lastItem = this.items.pop()!;
    if (this.at.length === 0) return;
    this.at[0] = lastAt;
    this.items[0] = lastItem;
    this.down(0);
  }

  private up(i: number): void {
    const { at, items } = this;
    const d = at[i]!;
    const item = items[i]!;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (at[parent]! <= d) break;
      at[i] = at[parent]!;
      items[i] = items[parent]!;
      i = parent;
    }
    at[i] = d;
    items[i] = item;
  }

  private down(i: number): void {
    const { at, items } = this;
    const n = at.length;
    const d = at[i]!;
    const item = items[i]!;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && at[child + 1]! < at[child]!) child++;
      if (at[child]! >= d) break;
      at[i] = at[child]!;
      items[i] = items[child]!;
      i = child;
    }
    at[i] = d;
    items[i] = item;
  }
}
