/**
 * Expiry without keyspace notifications or CONFIG: the engine keeps its own expiry index
 * (ZSET id → earliest possible deadline) and the processes take turns sweeping it. The
 * rules it keeps: one sweeper at a time (a SET NX token with a short life, renewed by
 * its holder), and the index only ever says when to look: the expire script re-reads the
 * real deadline, so a session touched or committed since then is re-filed, not expired,
 * and a lease holder's batched touches get `touchGraceMs` of slack. One bad entry stops
 * nothing: each due session is settled on its own, an entry that is no session id is
 * taken out, and a session whose data is damaged is parked out of the way
 * (DAMAGED_PARK_MS on), where it blocked the head of the index and so all expiry.
 */
import { isKilnError } from '../../errors/index.js';
import { isValidSessionId } from '../../session/id.js';
import type { Count } from './counters.js';
import type { IndexKeys } from './keys.js';
import { num, text, textOrNull, type Reply } from './replies.js';
import { unconfirmedReplyOf, type RunScriptOptions } from './script-runner.js';
import { SCRIPTS, type RedisScript } from './scripts.js';

/** Sessions taken from the index per round (a sweep makes at most 20 rounds). */
export const SWEEP_BATCH = 256;

/** How far ahead a session whose data is damaged is re-filed: looked at again then, out of the sweep's way meanwhile (its failure is counted by code). */
export const DAMAGED_PARK_MS = 3_600_000;

/** How long a sweeper's turn lasts: three sweeps, at least a second. */
export function sweepTurnMs(expirySweepMs: number): number {
  return Math.max(expirySweepMs * 3, 1000);
}

/**
 * The expire script's reply: the session lives on until `deadline` (−1: no deadline,
 * off the index); it expired now (its principal and bytes, to drop it from the indexes
 * and the byte count); or it was already gone.
 */
export type ExpireVerdict = { kind: 'refile'; deadline: number } | { kind: 'expired'; principal: string | null; bytes: number } | { kind: 'gone' };

export function expireVerdict(reply: Reply[]): ExpireVerdict {
  const outcome = num(reply[0]);
  if (outcome === 2) return { kind: 'refile', deadline: num(reply[1]) };
  if (outcome === 1) return { kind: 'expired', principal: textOrNull(reply[1]), bytes: num(reply[2]) };
  return { kind: 'gone' };
}

export interface ExpirySweepOptions {
  ownerId: string;
  idx: Pick<IndexKeys, 'sweeper' | 'expiry'>;
  expirySweepMs: number;
  touchGraceMs: number;
  /** Connected and not closed: a sweep starts only then. */
  isActive: () => boolean;
  send: (firstKey: string, args: string[]) => Promise<unknown>;
  command: (firstKey: string, args: string[]) => Promise<unknown>;
  runScript: (script: RedisScript, sessionId: string, owner: string, extra: string[], options?: RunScriptOptions) => Promise<unknown>;
  dropFromIndexes: (sessionId: string, principal: string | null) => Promise<void>;
  count: Count;
}

export class ExpirySweep {
  /** A sweep is under way: the timer's next ticks are skipped (on a slow Redis they piled up, each sending its own batch). */
  private running = false;

  constructor(private readonly o: ExpirySweepOptions) {}

  /**
   * One process at a time (a SET NX token with a short life) takes the sessions due in
   * the expiry index and lets the expire script decide: a touch or commit since then
   * only moved the deadline, so most are re-filed, not expired. One sweep at a time
   * in this process too.
   */
  async sweep(): Promise<void> {
    if (this.running || !this.o.isActive()) return;
    this.running = true;
    try {
      await this.sweepTurn();
    } finally {
      this.running = false;
    }
  }

  private async sweepTurn(): Promise<void> {
    const { idx, send } = this.o;
    const turn = String(sweepTurnMs(this.o.expirySweepMs));
    const took = await send(idx.sweeper, ['SET', idx.sweeper, this.o.ownerId, 'PX', turn, 'NX']);
    if (took === null) {
      if (text(await send(idx.sweeper, ['GET', idx.sweeper])) !== this.o.ownerId) return;
      await send(idx.sweeper, ['PEXPIRE', idx.sweeper, turn]);
    }
    for (let rounds = 0; rounds < 20; rounds++) {
      const now = Date.now();
      const due = ((await send(idx.expiry, ['ZRANGEBYSCORE', idx.expiry, '-inf', String(now), 'LIMIT', '0', String(SWEEP_BATCH)])) as Reply[]).map(text);
      if (due.length === 0) return;
      const invalid = due.filter((id) => !isValidSessionId(id));
      if (invalid.length > 0) await send(idx.expiry, ['ZREM', idx.expiry, ...invalid]);
      const ids = due.filter((id) => isValidSessionId(id));
      const outcomes = await Promise.allSettled(ids.map((id) => this.expireOne(id)));
      const parkAt = String(Date.now() + DAMAGED_PARK_MS);
      const parked = ids.filter((_, i) => isDamage(outcomes[i]!));
      if (parked.length > 0) await send(idx.expiry, ['ZADD', idx.expiry, ...parked.flatMap((id) => [parkAt, id])]);
      // Redis in trouble, or replicas short: the rest waits for the next sweep.
      if (outcomes.some((o) => o.status === 'rejected' && !isDamage(o))) return;
      if (due.length < SWEEP_BATCH) return;
    }
  }

  private async expireOne(sessionId: string): Promise<void> {
    // Confirmed by replicas like a commit. Refused after it ran (a WAIT short of replicas) it throws, and the session stays in
    // the indexes: a failover may lose the expiry, and the next sweep that finds it gone
    // with its WAIT confirmed takes the entries out then (its principal's set entry is
    // cleaned as it is met).
    let reply: Reply[];
    try {
      reply = (await this.o.runScript(SCRIPTS.expire, sessionId, '', [String(this.o.touchGraceMs)], { waitForReplicas: true })) as Reply[];
    } catch (err) {
      // Counted as the master did it (as a commit or destroy refused after it ran): the
      // next sweep finds the session gone and counts nothing, so counting only on
      // confirmation would leave it out for good, and the sessionBytes gauge with it.
      const applied = unconfirmedReplyOf(err);
      if (Array.isArray(applied)) this.countExpiry(expireVerdict(applied as Reply[]));
      throw err;
    }
    const verdict = expireVerdict(reply);
    this.countExpiry(verdict);
    await this.settle(sessionId, verdict);
  }

  private countExpiry(verdict: ExpireVerdict): void {
    if (verdict.kind !== 'expired') return;
    this.o.count('expired');
    this.o.count('sessionBytes', -verdict.bytes);
  }

  /** Files a session not due yet again, or drops an expired or gone one from the indexes (its principal too). */
  private async settle(sessionId: string, verdict: ExpireVerdict): Promise<void> {
    const { idx, command } = this.o;
    if (verdict.kind === 'refile') {
      if (verdict.deadline >= 0) await command(idx.expiry, ['ZADD', idx.expiry, String(verdict.deadline), sessionId]);
      else await command(idx.expiry, ['ZREM', idx.expiry, sessionId]);
      return;
    }
    await this.o.dropFromIndexes(sessionId, verdict.kind === 'expired' ? verdict.principal : null);
  }
}

function isDamage(outcome: PromiseSettledResult<unknown>): boolean {
  return outcome.status === 'rejected' && isKilnError(outcome.reason, 'KILN_ERR_STORAGE_DAMAGED');
}
