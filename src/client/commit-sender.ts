import { randomBytes } from 'node:crypto';
import type { Engine } from '../engines/engine.js';
import { isKilnError } from '../errors/index.js';
import type { CommitRequest } from '../session/model.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultReconnect } from '../util/backoff.js';
import type { ClientCounters } from './counters.js';
import type { LeaseKeeper } from './lease-keeper.js';

/**
 * Sends one commit to the tier until it is acknowledged or refused for good, for the
 * commit path and write-behind alike. The lease rule it keeps: a commit that lost its
 * lease on the way (revoked, connection dropped) is sent again under a new lease with
 * the *same* commit id and base version, so the engine applies it only if nothing else
 * changed the session meanwhile, acknowledges it again if it had been applied, or
 * refuses it with a conflict — never a lost or doubled update. Every retry stays
 * within the request's deadline.
 */
const RETRYABLE_CODES: ReadonlySet<string> = new Set(['KILN_ERR_LEASE_LOST', 'KILN_ERR_CONNECTION_LOST', 'KILN_ERR_ENGINE_UNAVAILABLE', 'KILN_ERR_TIMEOUT', 'KILN_ERR_STORAGE_BEHIND']);
/** Retried after a pause under the same lease: the tier is there but cannot take the commit yet. */
const PAUSE_CODES: ReadonlySet<string> = new Set(['KILN_ERR_TIMEOUT', 'KILN_ERR_ENGINE_UNAVAILABLE', 'KILN_ERR_STORAGE_BEHIND']);
/** Refusals that mean our copy is stale or the session gone: it must never be served from cache again. */
const STALE_CODES: ReadonlySet<string> = new Set(['KILN_ERR_CONFLICT', 'KILN_ERR_SESSION_DESTROYED', 'KILN_ERR_SESSION_NOT_FOUND', 'KILN_ERR_LEASE_LOST']);
const COMMIT_ATTEMPTS = 3;

export class CommitSender {
  /** Commit ids: unique per process run, so a retry is told from a new commit. */
  private readonly prefix = randomBytes(6).toString('base64url');
  private seq = 0;

  constructor(
    private readonly engine: Engine,
    private readonly keeper: LeaseKeeper,
    private readonly counters: ClientCounters,
    private readonly isClosed: () => boolean,
    /** The deadline of a retry's acquire when the commit has none (write-behind). */
    private readonly fallbackTimeoutMs: number,
  ) {}

  nextCommitId(): string {
    return `${this.prefix}:${(++this.seq).toString(36)}`;
  }

  /**
   * The version the tier acknowledged, and the lease token the acknowledged attempt went
   * under (a retry may have taken the lease anew). `releaseOnFailure` (write-behind,
   * whose request is long gone): a failure of any kind gives back the lease the last
   * attempt went under, if it is still held, instead of keeping it for nobody.
   */
  async send(request: CommitRequest, deadline: number | undefined, options: { releaseOnFailure?: boolean } = {}): Promise<{ version: number; token: number }> {
    let attempt = 0;
    let current = request;
    for (;;) {
      try {
        const ack = await this.engine.commit(current, { deadline });
        return { version: ack.version, token: current.token };
      } catch (err) {
        attempt++;
        // The tier did not answer in time, had no replica to confirm, or its disk is
        // behind (refused before applying): the lease may well still be ours (a lost one
        // is dropped by the engine's handler), and then the same commit goes again under
        // it after a pause (a tier short of replicas or disk refuses at once): 50–100 ms,
        // then 100–200 ms, the reconnects' backoff.
        // Otherwise the lease is taken anew.
        const code = isKilnError(err) ? err.code : '';
        const held = this.keeper.leases.get(current.sessionId)?.token === current.token;
        const pause = held && PAUSE_CODES.has(code) ? defaultReconnect(attempt + 1) : 0;
        // No attempt is sent without the time to pause and run (none at all once the deadline passed).
        const timeLeft = deadline === undefined ? Number.POSITIVE_INFINITY : deadline - Date.now();
        if (!RETRYABLE_CODES.has(code) || attempt >= COMMIT_ATTEMPTS || this.isClosed() || timeLeft <= 2 * pause) {
          // Stale, or given up on without knowing whether the tier applied it (a
          // timeout, a commit no replica confirmed): either way the cached copy may be
          // behind the tier, and the next request would build on it only to be refused.
          if (held && (options.releaseOnFailure === true || STALE_CODES.has(code) || RETRYABLE_CODES.has(code))) {
            this.keeper.releaseUnused(current.sessionId);
            this.keeper.forget(current.sessionId);
          }
          throw err;
        }
        this.counters.commitRetries++;
        if (pause > 0) {
          await sleep(pause);
          continue;
        }
        if (held) this.keeper.forget(current.sessionId);
        const grant = await this.keeper.acquire(current.sessionId, deadline ?? Date.now() + this.fallbackTimeoutMs);
        current = { ...current, token: grant.token };
      }
    }
  }
}
