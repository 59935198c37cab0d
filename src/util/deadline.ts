import { KilnError } from '../errors/index.js';

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

/** `promise`, or `error()` once `ms` have passed; the timer is cleared either way. */
export function withTimeout<T>(promise: Promise<T>, ms: number, error: () => KilnError): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(error()), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Whether `promise` settles (either way) within `ms`; past them it carries on unwatched. */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = promise.then(
    () => true,
    () => true,
  );
  return withTimeout(settled, ms, () => new KilnError('KILN_ERR_TIMEOUT', `not settled within ${ms} ms`)).catch(() => false);
}
