/**
 * The kiln engine's requests in flight, matched to answers by id. Rule kept: every
 * request ends, answered, failed with KILN_ERR_TIMEOUT at its deadline, or rejected with
 * the connection; and one timer serves every deadline, not one per request (a timer per
 * commit cost an allocation and two timer-list updates on the hot path).
 */
import { KilnError } from '../../errors/index.js';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: KilnError) => void;
  /** Epoch ms after which the request fails with KILN_ERR_TIMEOUT. */
  deadline: number;
  type: number;
  timeoutMs: number;
}

export class PendingRequests {
  private readonly pending = new Map<number, Pending>();
  private lastId = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;

  /** `onTimeout` is told of each request that timed out (counters). */
  constructor(
    private readonly onTimeout: () => void = () => undefined,
    private readonly clock: () => number = Date.now,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  /** The next request id: 1 to 0xfffffffe, then round again (0 is the server's own). */
  nextId(): number {
    return (this.lastId = (this.lastId % 0xfffffffe) + 1);
  }

  /** Files a request sent as `id`, to fail at `deadline` (epoch ms) unless answered. */
  add(id: number, type: number, timeoutMs: number, deadline: number, resolve: (value: unknown) => void, reject: (err: KilnError) => void): void {
    this.pending.set(id, { resolve, reject, deadline, type, timeoutMs });
    this.arm(deadline);
  }

  /** An answer: settles the request it belongs to; false when none waits (timed out, or not ours). */
  settle(id: number, ok: boolean, body: unknown, toError: (body: unknown) => KilnError): boolean {
    const p = this.pending.get(id);
    if (!p) return false;
    this.pending.delete(id);
    if (ok) p.resolve(body);
    else p.reject(toError(body));
    return true;
  }

  rejectAll(error: KilnError): void {
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Fires at the earliest deadline (or later), fails what is overdue and re-arms for the rest. */
  private arm(deadline: number): void {
    // Usually armed already for an earlier deadline (same timeout, earlier request).
    if (this.timer !== undefined) {
      if (this.timerAt <= deadline) return;
      clearTimeout(this.timer);
    }
    this.timerAt = deadline;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = this.clock();
      let next = Infinity;
      for (const [id, p] of this.pending) {
        if (p.deadline <= now) {
          this.pending.delete(id);
          this.onTimeout();
          p.reject(new KilnError('KILN_ERR_TIMEOUT', `kiln server did not answer within ${p.timeoutMs} ms`, { details: { type: p.type, timeoutMs: p.timeoutMs } }));
        } else if (p.deadline < next) {
          next = p.deadline;
        }
      }
      if (next !== Infinity) this.arm(next);
    }, Math.max(1, deadline - this.clock()));
    this.timer.unref();
  }
}
