/**
 * Waiting for a lease: the acquire script is tried, its reply read, and tried again
 * (after a recall's deadline, or shortly when Redis is failing over) until the grant
 * comes or the wait is abandoned. Every acquire() of one session shares one attempt at a
 * time. The rules it keeps: a wait has one bound (its timer abandons it whatever the
 * attempt in flight is doing, and every attempt and retry fits inside it); a grant that
 * arrives after everyone stopped waiting is handed straight back; and abandoning the last
 * wait takes this process out of the session's queue in Redis, so no grant is parked on
 * a process that no longer wants it.
 */
import { KilnError } from '../../errors/index.js';
import { assertSessionId } from '../../session/id.js';
import type { LeaseGrant, SessionSnapshot } from '../../session/model.js';
import { num, snapshotFrom, text, toEngineError, TRANSIENT_CODES, type Reply } from './replies.js';

interface AcquireWait {
  resolve: (grant: LeaseGrant) => void;
  reject: (err: KilnError) => void;
  deadline: number;
  timeoutMs: number;
  timer: NodeJS.Timeout;
  /** performance.now() when acquire() was called: the lease-wait figure. */
  startedAt: number;
}

/** The acquire script's reply: wait (held elsewhere, recalled until `recallDeadline`) or a grant. */
export type AcquireReply =
  | { kind: 'wait'; recallDeadline: number }
  | { kind: 'grant'; token: number; releaseAfterUse: boolean; recallDeadline: number; snapshot: SessionSnapshot | null };

export function decodeAcquireReply(sessionId: string, reply: Reply[]): AcquireReply {
  if (text(reply[0]) === 'W') return { kind: 'wait', recallDeadline: num(reply[1]) };
  return { kind: 'grant', token: num(reply[1]), releaseAfterUse: num(reply[2]) === 1, recallDeadline: num(reply[3]), snapshot: snapshotFrom(sessionId, reply[4]) };
}

/**
 * After a 'W' reply: the hand-over comes as a message; if that message is lost or the
 * holder is dead, ask again just after its recall deadline (`jitter` in [0, 1) spreads
 * the processes asking).
 */
export function retryAfterRecallMs(recallDeadline: number, now: number, jitter: number): number {
  return Math.max(20, recallDeadline - now + 20 + jitter * 30);
}

/** After a transient failure (Redis failing over or unreachable): ask again shortly. */
export function retryAfterTroubleMs(jitter: number): number {
  return 100 + jitter * 150;
}

/** When a retry runs: after `delayMs`, but before the latest wait's deadline (5 ms of slack). */
export function retryAtMs(delayMs: number, latestDeadline: number, now: number): number {
  return Math.min(delayMs, Math.max(0, latestDeadline - now - 5));
}

export interface LeaseAcquirerOptions {
  address: string;
  operationTimeoutMs: number;
  /** Runs the acquire script for this owner, waiting until `waitUntil`. */
  requestLease: (sessionId: string, waitUntil: number, timeoutMs: number) => Promise<unknown>;
  /** Hands a lease back (fire and forget). */
  giveBack: (sessionId: string, token: number) => void;
  /** Leaves the session's queue in Redis (fire and forget). */
  cancelWait: (sessionId: string) => void;
  /** A grant for a waiting acquire(): it is held from now on. */
  granted: (sessionId: string, token: number, recallDeadline: number, sentAt: number) => void;
  epoch: () => string;
  isClosed: () => boolean;
  countError: (code: string) => void;
  observeWait: (ms: number) => void;
}

export class LeaseAcquirer {
  private readonly waits = new Map<string, AcquireWait[]>();
  private readonly acquiring = new Set<string>();
  private readonly acquireAgain = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();

  constructor(private readonly o: LeaseAcquirerOptions) {}

  isWaiting(sessionId: string): boolean {
    return this.waits.has(sessionId);
  }

  isAcquiring(sessionId: string): boolean {
    return this.acquiring.has(sessionId);
  }

  /** acquire() calls waiting now, for stats and reports. */
  waiterCount(): number {
    let n = 0;
    for (const list of this.waits.values()) n += list.length;
    return n;
  }

  acquire(sessionId: string, timeoutMs: number): Promise<LeaseGrant> {
    // The wait has one timer: at the deadline it is abandoned, whatever the attempt in
    // flight is doing (each attempt is bounded by the wait's deadline too).
    return new Promise<LeaseGrant>((resolve, reject) => {
      if (this.o.isClosed()) {
        reject(new KilnError('KILN_ERR_CLOSED', 'engine is closed'));
        return;
      }
      try {
        assertSessionId(sessionId);
      } catch (err) {
        reject(err as KilnError);
        return;
      }
      const wait: AcquireWait = {
        resolve,
        reject,
        deadline: Date.now() + timeoutMs,
        timeoutMs,
        timer: setTimeout(() => this.abandonWait(sessionId, wait), timeoutMs),
        startedAt: performance.now(),
      };
      let list = this.waits.get(sessionId);
      if (!list) this.waits.set(sessionId, (list = []));
      list.push(wait);
      this.tryAcquire(sessionId);
    });
  }

  /** Every wait fails with KILN_ERR_CLOSED and no retry is left pending. */
  closeAll(): void {
    for (const [sessionId, list] of this.waits) {
      this.waits.delete(sessionId);
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(new KilnError('KILN_ERR_CLOSED', 'engine is closed'));
      }
    }
    for (const timer of this.retryTimers.values()) clearTimeout(timer);
    this.retryTimers.clear();
  }

  /** One attempt for the session's waits, or a note to make another once the one in flight ends. */
  tryAcquire(sessionId: string): void {
    const list = this.waits.get(sessionId);
    if (!list || list.length === 0 || this.o.isClosed()) return;
    if (this.acquiring.has(sessionId)) {
      this.acquireAgain.add(sessionId);
      return;
    }
    const retry = this.retryTimers.get(sessionId);
    if (retry) {
      clearTimeout(retry);
      this.retryTimers.delete(sessionId);
    }
    this.acquiring.add(sessionId);
    const waitUntil = Math.max(...list.map((w) => w.deadline));
    const sent = Date.now();
    this.o
      .requestLease(sessionId, waitUntil, Math.max(1, Math.min(this.o.operationTimeoutMs, waitUntil - sent)))
      .then(
        (reply) => this.onAcquireReply(sessionId, reply as Reply[], sent),
        (err: unknown) => {
          const error = toEngineError(err, this.o.address);
          if (TRANSIENT_CODES.has(error.code)) {
            // Redis is failing over or unreachable: ask again shortly, within the caller's time.
            this.scheduleRetry(sessionId, retryAfterTroubleMs(Math.random()));
          } else {
            const waiting = this.waits.get(sessionId) ?? [];
            this.waits.delete(sessionId);
            for (const w of waiting) {
              clearTimeout(w.timer);
              w.reject(error);
            }
            this.o.countError(error.code);
          }
        },
      )
      .finally(() => {
        this.acquiring.delete(sessionId);
        if (this.acquireAgain.delete(sessionId)) this.tryAcquire(sessionId);
      });
  }

  private onAcquireReply(sessionId: string, reply: Reply[], sent: number): void {
    const decoded = decodeAcquireReply(sessionId, reply);
    if (decoded.kind === 'wait') {
      // Someone else holds it and has been recalled: the hand-over comes as a message;
      // if that message is lost or the holder is dead, ask again when its time is up.
      this.scheduleRetry(sessionId, retryAfterRecallMs(decoded.recallDeadline, Date.now(), Math.random()));
      return;
    }
    const { token } = decoded;
    const waiting = this.waits.get(sessionId) ?? [];
    this.waits.delete(sessionId);
    if (waiting.length === 0) {
      // Everyone stopped waiting while the grant was on its way: give it straight back.
      this.o.giveBack(sessionId, token);
      return;
    }
    this.o.granted(sessionId, token, decoded.recallDeadline, sent);
    const grant: LeaseGrant = { sessionId, token, epoch: this.o.epoch(), snapshot: decoded.snapshot, releaseAfterUse: decoded.releaseAfterUse };
    const now = performance.now();
    for (const w of waiting) {
      clearTimeout(w.timer);
      this.o.observeWait(now - w.startedAt);
      w.resolve(waiting.length === 1 ? grant : { ...grant, snapshot: grant.snapshot && { meta: { ...grant.snapshot.meta }, attributes: new Map(grant.snapshot.attributes) } });
    }
  }

  private scheduleRetry(sessionId: string, delayMs: number): void {
    const list = this.waits.get(sessionId);
    if (!list || list.length === 0) return;
    clearTimeout(this.retryTimers.get(sessionId));
    const at = retryAtMs(delayMs, Math.max(...list.map((w) => w.deadline)), Date.now());
    this.retryTimers.set(
      sessionId,
      setTimeout(() => {
        this.retryTimers.delete(sessionId);
        this.tryAcquire(sessionId);
      }, at),
    );
  }

  private abandonWait(sessionId: string, wait: AcquireWait): void {
    const list = this.waits.get(sessionId);
    const at = list?.indexOf(wait) ?? -1;
    if (!list || at < 0) return;
    list.splice(at, 1);
    if (list.length === 0) {
      this.waits.delete(sessionId);
      clearTimeout(this.retryTimers.get(sessionId));
      this.retryTimers.delete(sessionId);
      this.o.cancelWait(sessionId);
    }
    this.o.countError('KILN_ERR_LEASE_TIMEOUT');
    wait.reject(new KilnError('KILN_ERR_LEASE_TIMEOUT', `lease for the session was not granted within ${wait.timeoutMs} ms`, { details: { sessionId, timeoutMs: wait.timeoutMs } }));
  }
}
