/**
 * Delay before reconnect attempt `attempt` (1, 2, …): 50 ms doubling to 2 s, each delay
 * jittered to between half and all of it, so a fleet of app servers does not reconnect
 * in step after a server restart. Every engine reconnects on this schedule.
 */
export function defaultReconnect(attempt: number): number {
  const base = doubling(attempt, 50, 2000);
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

/**
 * The delay before try `attempt` (1, 2, …) of a schedule that starts at `firstMs` and
 * doubles up to `maxMs`, without jitter (for one process's own retries, such as the log's
 * writes and compactions on a failing disk).
 */
export function doubling(attempt: number, firstMs: number, maxMs: number): number {
  return Math.min(maxMs, firstMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
}
