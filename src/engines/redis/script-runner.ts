/**
 * Every command and script the Redis engine sends goes through here: the time bound of
 * each call, the traffic and error figures, EVALSHA with its NOSCRIPT fallback, and the
 * WAIT that follows a commit. It keeps the durability rule of `replicaPolicy`: a commit
 * is acknowledged only once as many replicas as the policy demands have it, else
 * refused so the client retries (ReplicaGuard decides: best effort acknowledges with
 * fewer only once the shortage has outlasted its grace, and counts it, never hidden).
 * It also keeps the one gate every session key passes (assertSessionId), since the id
 * becomes a hash tag.
 */
import { KilnError } from '../../errors/index.js';
import { assertSessionId } from '../../session/id.js';
import { within } from '../../util/deadline.js';
import type { EngineTraffic } from '../engine.js';
import type { Count } from './counters.js';
import { sessionKeyList } from './keys.js';
import { num, respBytes, toEngineError, withTimeout, type Reply } from './replies.js';
import type { ReplicaGuard } from './replica-guard.js';
import type { RedisScript } from './scripts.js';

export interface ScriptRunnerOptions {
  /** The transport's send: one command on the node that owns `firstKey`. */
  send: (firstKey: string | undefined, args: (string | Buffer)[]) => Promise<unknown>;
  /** Connects first if need be (the engine's lifecycle), within the deadline. */
  ensureConnected: (deadline?: number) => Promise<void>;
  /** Where Redis is, without credentials (error messages). */
  address: string;
  prefix: string;
  operationTimeoutMs: number;
  replicas: number;
  replicaTimeoutMs: number;
  /** What replica confirmations mean under replicaPolicy (the heartbeat feeds it ROLE). */
  replicaGuard: ReplicaGuard;
  /** ARGV 3–8 of every script: the same for every call, built once. */
  scriptSettings: readonly string[];
  count: Count;
  /** Where a lease-moving script's counters go. */
  addScriptStats: (stat: Reply) => void;
}

export interface RunScriptOptions {
  timeoutMs?: number;
  waitForReplicas?: boolean;
  deadline?: number;
}

export class ScriptRunner {
  private readonly sent: EngineTraffic = { requests: 0, bytes: 0 };
  /** Failed calls by error code, reported to the console with the client's figures. */
  private readonly errorCounts: Record<string, number> = {};
  constructor(private readonly o: ScriptRunnerOptions) {}

  get replicasOnline(): number {
    return this.o.replicaGuard.seenOnline;
  }

  /** ROLE's count of replicas online: the guard's clock for a shortage, and a replica back is waited for again. */
  sawReplicasOnline(n: number): void {
    this.o.replicaGuard.observe(n, Date.now());
  }

  /** A failover: the new master's replicas are counted afresh. */
  newMaster(): void {
    this.o.replicaGuard.reset();
  }

  traffic(): EngineTraffic {
    return { ...this.sent };
  }

  errors(): Record<string, number> {
    return { ...this.errorCounts };
  }

  countError(code: string): void {
    this.errorCounts[code] = (this.errorCounts[code] ?? 0) + 1;
  }

  /** One command, bounded by `timeoutMs`; its failure as a KilnError, counted by code. */
  readonly send = async (firstKey: string | undefined, args: (string | Buffer)[], timeoutMs = this.o.operationTimeoutMs): Promise<unknown> => {
    this.sent.requests++;
    this.sent.bytes += respBytes(args);
    try {
      return await withTimeout(this.o.send(firstKey, args), timeoutMs, () => new KilnError('KILN_ERR_TIMEOUT', `Redis did not answer ${String(args[0])} within ${timeoutMs} ms`));
    } catch (err) {
      const error = toEngineError(err, this.o.address);
      if (!error.message.includes('NOSCRIPT')) this.countError(error.code);
      throw error;
    }
  };

  /** A command outside the session scripts, after connecting if need be. */
  readonly command = async (firstKey: string, args: (string | Buffer)[], deadline?: number): Promise<unknown> => {
    await this.o.ensureConnected(deadline);
    return this.send(firstKey, args, within(this.o.operationTimeoutMs, deadline));
  };

  /**
   * Runs a session script (EVALSHA, loading it on NOSCRIPT). With `waitForReplicas` and
   * `replicas` > 0, a WAIT follows on the same connection (see ReplicaGuard for what
   * fewer confirmations mean under each replicaPolicy).
   */
  readonly runScript = async (script: RedisScript, sessionId: string, owner: string, extra: (string | Buffer)[], options: RunScriptOptions = {}): Promise<unknown> => {
    // The one gate every session key passes: the id becomes a hash tag, so `}` or `{`
    // in it would choose another slot, and an unchecked id could name keys it should not.
    assertSessionId(sessionId);
    const o = this.o;
    const deadline = options.deadline;
    await o.ensureConnected(deadline);
    const keys = sessionKeyList(o.prefix, sessionId);
    const args: (string | Buffer)[] = [String(keys.length), ...keys, String(Date.now()), owner, ...o.scriptSettings, sessionId, ...extra];
    const timeoutMs = within(options.timeoutMs ?? o.operationTimeoutMs, deadline);
    const replicated = options.waitForReplicas === true && o.replicas > 0;
    const waitFor = replicated ? o.replicaGuard.waitFor(Date.now()) : 0;
    const waitMs = within(o.replicaTimeoutMs, deadline);
    const run = async (op: 'EVALSHA' | 'EVAL'): Promise<unknown> => {
      const reply = this.send(keys[0], [op, op === 'EVALSHA' ? script.sha : script.source, ...args], timeoutMs);
      // Sent right behind the script on the same connection, so it confirms exactly it.
      const acked = waitFor > 0 ? this.send(keys[0], ['WAIT', String(waitFor), String(waitMs)], within(timeoutMs + waitMs, deadline)) : undefined;
      acked?.catch(() => undefined);
      const result = await reply;
      const n = acked ? num(await acked) : 0;
      if (replicated) this.afterWait(n, waitMs);
      return result;
    };
    let reply: unknown;
    try {
      reply = await run('EVALSHA');
    } catch (err) {
      if (!(err instanceof KilnError && err.message.includes('NOSCRIPT'))) throw err;
      reply = await run('EVAL');
    }
    if (script.countsLeases && Array.isArray(reply)) o.addScriptStats(reply[reply.length - 1]);
    return reply;
  };

  private afterWait(confirmed: number, waitMs: number): void {
    const guard = this.o.replicaGuard;
    const verdict = guard.verdict(confirmed, Date.now());
    if (verdict === 'confirmed') return;
    if (verdict === 'under-replicated') {
      this.o.count('underReplicatedCommits');
      return;
    }
    this.countError('KILN_ERR_ENGINE_UNAVAILABLE');
    throw new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `the commit reached ${confirmed} of ${this.o.replicas} replicas within ${waitMs} ms; it may or may not survive a failover, so it is not acknowledged (replicaPolicy ${guard.policy}; a retry is safe)`, { details: { replicas: this.o.replicas, confirmed } });
  }
}
