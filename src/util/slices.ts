/**
 * Calls `each` on `items` a slice of `size` at a time, the next slice once the last has
 * settled, and answers every outcome in order. Thousands of scripts sent at once (every
 * lease renewed, a batch of touches) queue that many commands in the client and in Redis
 * ahead of the requests that wait on them.
 */
export async function settleInSlices<T, R>(items: readonly T[], size: number, each: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const outcomes: PromiseSettledResult<R>[] = [];
  for (let at = 0; at < items.length; at += size) outcomes.push(...(await Promise.allSettled(items.slice(at, at + size).map(each))));
  return outcomes;
}
