/**
 * Delay before reconnect attempt `attempt` (1, 2, …): 50 ms doubling to 2 s, each delay
 * jittered to between half and all of it, so a fleet of app servers does not reconnect
 * in step after a server restart. Every engine reconnects on this schedule.
 */
export function defaultReconnect(attempt: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(attempt - 1, 10));
  return Math.round(base / 2 + (Math.random() * base) / 2);
}
