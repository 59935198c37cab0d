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
   * One page of this principal's slots, newest login first, and when the page's last slot
   * joined (the next page's cursor). `after` is the previous page's last slot and its
   * join: when that slot is still in the list with that join, the page goes on from it in
   * O(limit). When it left meanwhile (logged out, expired), the list is walked from its
   * head past every slot that joined at or after it: a list runs newest first, so its
   * joins fall along it. `after.slot` is -1 when the caller could not place it.
   * A session that logs in again while pages are read joins at the head and is not met
   * again; sessions present throughout are each met once.
   */
  pageOf(principal: string, limit: number, after?: { slot: number; join: number }): { slots: number[]; lastJoin: number } {
    const slots: number[] = [];
    const count = this.count(principal);
    let slot = this.heads.get(principal) ?? NONE;
    if (after !== undefined) {
      if (this.joinedAtIs(after.slot, after.join)) slot = this.next.get(after.slot);
      else {
        let walked = 0;
        while (slot !== NONE && walked < count && this.joinedAt.get(slot) >= after.join) {
          slot = this.next.get(slot);
          walked++;
        }
        if (walked >= count) slot = NONE;
      }
    }
    let lastJoin = after?.join ?? 0;
    // Bounded by the count as slotsOf: a damaged list cannot loop.
    for (; slot !== NONE && slots.length < limit && slots.length < count; slot = this.next.get(slot)) {
      slots.push(slot);
      lastJoin = this.joinedAt.get(slot);
    }
    return { slots, lastJoin };
  }

  /** Whether a slot of a list has another after it. */
  hasNext(slot: number): boolean {
    return this.next.get(slot) !== NONE;
  }

  /** Whether `slot` is in a list, joined at `join` (joins are never reused, so it is that very membership). */
  private joinedAtIs(slot: number, join: number): boolean {
    return slot >= 0 && slot < this.prev.length && this.prev.get(slot) !== UNLINKED && this.joinedAt.get(slot) === join;
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

const NONE = -1;
const UNLINKED = -1;
/** prev of a head: HEAD - count, so -3 for a list of one. */
const HEAD = -2;
