import { PagedArray } from '../util/paged-array.js';

/**
 * Which sessions name each principal ("log out everywhere", the per-principal cap), by
 * the sessions' stable slots in the SessionArena. A Set of id strings per principal cost
 * about 200 bytes of JavaScript heap per logged-in session (the Set, its table, a string
 * per id), more than the session's own bytes. Here a principal costs one Map entry (its
 * name and the slot heading its list), and per slot, in typed arrays: the next slot of
 * its principal's list; the previous one, or at the head the list's length (so counting
 * is O(1)); and when it joined the list (a count of joins, not a clock), so "log out
 * everywhere" tells the sessions it found from later logins. The arrays (PagedArray: they
 * grow by a page, never by a copy) cover every slot up to the highest one a principal was
 * given (16 bytes a session once most sessions have one); a table that never sees a
 * principal makes none.
 * Pure.
 */
export class PrincipalIndex {
  private readonly heads = new Map<string, number>();
  private readonly next = new PagedArray(Int32Array, NONE);
  /** The previous slot (≥ 0); at a list's head, HEAD - length; UNLINKED when in no list. */
  private readonly prev = new PagedArray(Int32Array, UNLINKED);
  /** When each slot joined its list, counted in joins (exact to 2^53: a 32-bit count would wrap within weeks of logins, making an old session look new): a bulk job's sessions are told from later logins. */
  private readonly joinedAt = new PagedArray(Float64Array);
  private joins = 0;

  /** How many principals have a session. */
  get principals(): number {
    return this.heads.size;
  }

  /** How many sessions name this principal. */
  count(principal: string): number {
    const head = this.heads.get(principal);
    return head === undefined ? 0 : HEAD - this.prev.get(head);
  }

  /** The slots of this principal's sessions, newest first. */
  slotsOf(principal: string): number[] {
    const out: number[] = [];
    const count = this.count(principal);
    // Bounded by the count: a list damaged by a caller's mistake cannot loop.
    for (let slot = this.heads.get(principal) ?? NONE; slot !== NONE && out.length < count; slot = this.next.get(slot)) out.push(slot);
    return out;
  }

  /**
   * One page of this principal's slots, newest login first. `after` says where the last
   * page ended: a slot to start from (-1: the list's head) and a join; slots that joined
   * at or after it were met already and are skipped. A list runs newest first, so its
   * joins fall along it: from the previous page's last slot, still in the list, skipping
   * is one step. From the head (that slot left meanwhile, or a cursor the caller could
   * not place), skipping may take a step per session of the principal, so at most
   * `maxSteps` are taken per call: the answer is then an empty page and where to go on
   * (`resume`: `to` is the slot reached, with the same join), and no call does work that
   * grows with the principal's sessions. The caller checks that `after.slot` is in this
   * principal's list: the index does not know whose list a slot is in.
   * A session that logs in again while pages are read joins at the head and is not met
   * again; sessions present throughout are each met once.
   */
  pageOf(principal: string, limit: number, after?: { slot: number; join: number }, maxSteps = PAGE_WALK_STEPS): PrincipalIndexPage {
    const slots: number[] = [];
    const count = this.count(principal);
    let slot = this.heads.get(principal) ?? NONE;
    let steps = 0;
    if (after !== undefined) {
      if (this.inList(after.slot)) slot = after.slot;
      while (slot !== NONE && this.joinedAt.get(slot) >= after.join) {
        // Bounded by the count as well: a damaged list cannot loop.
        if (steps >= maxSteps || steps >= count) return { slots, steps, resume: steps >= count ? undefined : { to: slot, join: after.join } };
        slot = this.next.get(slot);
        steps++;
      }
    }
    for (; slot !== NONE && slots.length < limit && slots.length < count; slot = this.next.get(slot)) slots.push(slot);
    const last = slots[slots.length - 1];
    const resume = last !== undefined && slots.length === limit && this.next.get(last) !== NONE ? { to: last, join: this.joinedAt.get(last) } : undefined;
    return { slots, steps, resume };
  }

  /** Whether `slot` is in a list. */
  private inList(slot: number): boolean {
    return slot >= 0 && slot < this.prev.length && this.prev.get(slot) !== UNLINKED;
  }

  /** A mark of now: joinedBy tells a slot that joined a list up to now from one that joined after. */
  mark(): number {
    return this.joins;
  }

  /** Whether the session in `slot` joined its list at or before `mark` (a login after it, or a slot reused since, did not). */
  joinedBy(slot: number, mark: number): boolean {
    return slot < this.joinedAt.length && this.joinedAt.get(slot) <= mark;
  }

  /** The session in `slot` names `principal` (it did not before). */
  add(principal: string, slot: number): void {
    this.ensure(slot);
    this.joins++;
    this.joinedAt.set(slot, this.joins);
    const head = this.heads.get(principal);
    if (head === undefined) {
      this.next.set(slot, NONE);
      this.prev.set(slot, HEAD - 1);
    } else {
      this.next.set(slot, head);
      this.prev.set(slot, this.prev.get(head) - 1); // one more than the old head's count
      this.prev.set(head, slot);
    }
    this.heads.set(principal, slot);
  }

  /**
   * The session in `slot`, which named `principal`, no longer does (changed, or removed).
   * A slot that is not in that principal's list (a caller's mistake) changes nothing:
   * unlinking it would join other sessions to the list.
   */
  remove(principal: string, slot: number): void {
    const head = this.heads.get(principal);
    if (head === undefined || slot >= this.prev.length) return;
    const before = this.prev.get(slot);
    const after = this.next.get(slot);
    if (before <= HEAD) {
      if (slot !== head) return;
      if (after === NONE) this.heads.delete(principal);
      else {
        this.prev.set(after, before + 1); // the new head carries the count, one less
        this.heads.set(principal, after);
      }
    } else {
      if (before === UNLINKED || this.next.get(before) !== slot) return;
      this.next.set(before, after);
      if (after !== NONE) this.prev.set(after, before);
      this.prev.set(head, this.prev.get(head) + 1);
    }
    this.prev.set(slot, UNLINKED);
  }

  private ensure(slot: number): void {
    this.next.ensure(slot);
    this.prev.ensure(slot);
    this.joinedAt.ensure(slot);
  }
}

/** A page of a principal's list: its slots, the skipping steps taken, and where the next page starts (none after the last). */
export interface PrincipalIndexPage {
  slots: number[];
  steps: number;
  resume: { to: number; join: number } | undefined;
}

/** Steps of skipping one call takes at most (see pageOf): some tens of microseconds. */
export const PAGE_WALK_STEPS = 4096;

const NONE = -1;
const UNLINKED = -1;
/** prev of a head: HEAD - count, so -3 for a list of one. */
const HEAD = -2;
