/**
 * Bulk work (expiry of many sessions, "log out everywhere") cut into slices. Rule kept:
 * no bulk job holds the event loop for more than a few milliseconds, so 100,000 sessions
 * expiring together never hold up the requests of the others. Pure apart from the
 * default clock and yield, which tests replace.
 */

/** Bulk work runs in slices of at most this many items… */
export const SLICE_ITEMS = 2000;
/** …and this long, then lets the event loop serve other requests. */
export const SLICE_MS = 4;

/** A queue drained a slice at a time; the caller decides when the next slice runs. */
export class SlicedQueue<T> {
  private items: T[] = [];
  private head = 0;

  constructor(
    private readonly maxItems = SLICE_ITEMS,
    private readonly maxMs = SLICE_MS,
  ) {}

  push(item: T): void {
    this.items.push(item);
  }

  /** Items queued and not yet handled. */
  get backlog(): number {
    return this.items.length - this.head;
  }

  /**
   * Handles items until the slice is used up (maxItems, or maxMs looked at every 64
   * items). True when items are left for another slice; false when the queue is empty.
   */
  runSlice(handle: (item: T) => void, now: () => number = () => performance.now()): boolean {
    const started = now();
    const stop = Math.min(this.items.length, this.head + this.maxItems);
    while (this.head < stop) {
      handle(this.items[this.head++]!);
      if ((this.head & 63) === 0 && now() - started > this.maxMs) break;
    }
    if (this.head < this.items.length) return true;
    this.items = [];
    this.head = 0;
    return false;
  }
}

/** Runs `fn` on each item in turn, yielding to the event loop whenever sliceMs has passed. */
export async function forEachInSlices<T>(
  items: Iterable<T>,
  fn: (item: T) => Promise<void>,
  sliceMs = SLICE_MS,
  now: () => number = () => performance.now(),
  yieldTurn: () => Promise<void> = () => new Promise<void>((resolve) => setImmediate(resolve)),
): Promise<void> {
  let sliceStart = now();
  for (const item of items) {
    await fn(item);
    if (now() - sliceStart > sliceMs) {
      await yieldTurn();
      sliceStart = now();
    }
  }
}
