/**
 * Absolute deadlines (Date.now() milliseconds) carried through a request's waits, so
 * that one bound holds for the whole request however many steps it takes (queue, lease,
 * load, commit, retries) and whatever fails. Each step still keeps its own timeout: the
 * deadline only ever shortens it.
 */

/** What one call may still take: its own timeout, cut to the deadline (at least 1 ms). */
export function within(timeoutMs: number, deadline: number | undefined): number {
  if (deadline === undefined) return timeoutMs;
  return Math.max(1, Math.min(timeoutMs, deadline - Date.now()));
}

/** Whether the deadline has passed (no deadline never passes). */
export function passed(deadline: number | undefined): boolean {
  return deadline !== undefined && Date.now() >= deadline;
}
