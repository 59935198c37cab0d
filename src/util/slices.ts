import { settlesWithin } from './deadline.js';

/**
 * Calls `each` on `items` with at most `limit` calls in flight, the next starting as soon
 * as one ends, and answers every outcome in order. Thousands of scripts sent at once
 * (every lease renewed, a batch of touches) queue that many commands in the client and
 * in Redis ahead of the requests that wait on them; slices sent in lockstep (the next
 * once the slowest of the last has answered) let one slow call hold up all that follow.
 *
 * With `deadline` (epoch ms), no call starts at or after it and the answer comes by then
 * at the latest: an item not started, or not settled by then, has `undefined` for its
 * outcome (a call under way carries on unwatched; its own time bound ends it).
 */
export async function settlePooled<T, R>(items: readonly T[], limit: number, each: (item: T) => Promise<R>, deadline?: number): Promise<(PromiseSettledResult<R> | undefined)[]> {
  const outcomes: (PromiseSettledResult<R> | undefined)[] = new Array<PromiseSettledResult<R> | undefined>(items.length).fill(undefined);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length && (deadline === undefined || Date.now() < deadline)) {
      const i = next++;
      try {
        outcomes[i] = { status: 'fulfilled', value: await each(items[i]!) };
      } catch (reason) {
        outcomes[i] = { status: 'rejected', reason };
      }
    }
  };
  const all = Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  if (deadline === undefined) {
    await all;
    return outcomes;
  }
  await settlesWithin(all, Math.max(0, deadline - Date.now()));
  // A copy: calls still under way fill in `outcomes` later, unwatched.
  return [...outcomes];
}
