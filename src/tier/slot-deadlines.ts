/**
 * When each session of the table is next due for an expiry check, by slot: a u32 of
 * whole seconds a session, found by passes over every slot rather than kept in buckets. Pure: the
 * caller supplies `now` and decides when each part of a pass runs.
 *
 * Why a scan. A timer wheel finds what is due without looking at the rest, but holds an
 * entry per session besides the deadline (12 to 20 bytes each at a million, and entries
 * that outlive a reused slot). A pass reads 4 bytes a session in order, about a
 * millisecond for a million, and runs in slices of SCAN_SLICE slots, so a server with
 * many sessions spends under 0.2 % of a core a second on it and never holds the event
 * loop for long.
 *
 * Deadlines are kept in whole seconds, rounded down: a session is checked up to a second
 * early, and its owner's re-check puts it back for the next pass, never late.
 *
 * A deadline only moves earlier here: a later one (a touch, a commit) is found by the
 * owner's re-check when the earlier comes due, as with the wheel. A slot reused by
 * another session keeps the earlier deadline of the one before, which costs the new
 * session one early re-check.
 */

import { PAGE_BITS, PAGE_SIZE, PagedArray } from '../util/paged-array.js';

/** Slots one slice of a pass reads. */
export const SCAN_SLICE = 65_536;

export class SlotDeadlines {
  /** Per slot, in whole seconds since 1970; 0 = nothing to check. */
  private readonly deadlines = new PagedArray(Uint32Array);
  private cursor = 0;
  private passing = false;

  /** A pass is under way (scan has more slices to run). */
  get scanning(): boolean {
    return this.passing;
  }

  /** The slot is checked no later than `at` (an infinite `at` asks for nothing). */
  schedule(slot: number, at: number): void {
    if (!Number.isFinite(at)) return;
    this.deadlines.ensure(slot);
    // Past 2106 a check comes in 2106 and finds a later deadline; second 0 means "nothing".
    const second = Math.min(Math.max(Math.floor(at / 1000), 1), 0xffffffff);
    const current = this.deadlines.get(slot);
    if (current === 0 || second < current) this.deadlines.set(slot, second);
  }

  /** Begins a pass over every slot, unless one is under way. */
  startPass(): void {
    if (this.passing) return;
    this.passing = true;
    this.cursor = 0;
  }

  /**
   * Reads the next `max` slots of the pass; calls onDue for each whose deadline has come
   * (its deadline cleared: the caller re-checks and schedules again). Returns true while
   * the pass has slots left.
   */
  scan(now: number, onDue: (slot: number) => void, max = SCAN_SLICE): boolean {
    if (!this.passing) return false;
    const length = this.deadlines.length;
    const second = Math.floor(now / 1000);
    const stop = Math.min(length, this.cursor + max);
    // Page by page: a plain loop over each typed array, as fast as one array of them all.
    for (let slot = this.cursor; slot < stop; ) {
      const page = this.deadlines.page(slot >>> PAGE_BITS);
      const base = slot - (slot & (PAGE_SIZE - 1));
      const pageStop = Math.min(stop, base + PAGE_SIZE);
      for (; slot < pageStop; slot++) {
        const at = page[slot - base]!;
        if (at !== 0 && at <= second) {
          page[slot - base] = 0;
          onDue(slot);
        }
      }
    }
    this.cursor = stop;
    if (stop < length) return true;
    this.passing = false;
    return false;
  }
}
