/**
 * Every command and script the Redis engine sends goes through here: the time bound of
 * each call, the traffic and error figures, EVALSHA with its NOSCRIPT fallback, and the
 * WAIT that follows a commit. It keeps the durability rule of `replicaPolicy`: a commit
 * is acknowledged only once as many replicas as the policy demands have it, else
 * refused so the client retries (ReplicaGuard decides: best effort acknowledges with
 * fewer only once the shortage has outlasted its grace, and counts it, never hidden).
 * It also keeps the one gate every session key passes (assertSessionId), since the id
 * becomes a hash tag.
 *
 * WAITs are shared: a WAIT confirms every write its connection sent before it, so the
 * commits sent while one WAIT is out all wait for the next one, sent when it returns.
 * One WAIT out per connection at a time: a WAIT holds its connection for up to its
 * timeout, and with replicas short one WAIT per commit queued in Redis would hold
 * everything behind it for the sum of their timeouts.
 */
import { isKilnError, KilnError } from '../../errors/index.js';
import { assertSessionId } from '../../session/id.js';
import { within, withTimeout } from '../../util/deadline.js';
import type { EngineTraffic } from '../engine.js';
import type { Count } from './counters.js';
import { SESSION_KEY_TYPES, sessionKeyList } from './keys.js';
import { num, respBytes, roleView, text, toEngineError, type Reply } from './replies.js';
import type { ConfirmationPlan, ReplicaGuard, RoleView } from './replica-guard.js';
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
  /** Which connection a key's commands take, as far as WAITs go ('' when there is one: standalone, Sentinel). */
  connectionOf: (firstKey: string) => string;
  /** The transport's connection generation (see RedisTransport.generation). */
  generation: () => number;
  /**
   * Each master is a connection of its own, chosen per command by a slot table (Cluster):
   * a replicated script and its WAIT each say which node answered, and a WAIT that went
   * elsewhere than its script confirms nothing of it (see RedisScript.nodeNamed).
   */
  namesNodes: boolean;
  /** A keyless command on the connection `connectionOf` named (RedisTransport.sendTo): a WAIT, ROLE, CLUSTER MYID. */
  sendTo: (connection: string, args: string[]) => Promise<unknown>;
}

/** One write to be confirmed by replicas (ScriptRunner.sendConfirmed). */
interface ConfirmedWrite {
  /** What it is, in messages ('commit', 'SADD of kiln:principal:…'). */
  name: string;
  firstKey: string;
  /** Its lane (connectionOf(firstKey) when it is sent). */
  connection: string;
  /** replicas > 0 and the caller asked for replicas: the guard plans and judges it. */
  replicated: boolean;
  timeoutMs: number;
  deadline: number | undefined;
  /** A write of its own: counted when acknowledged under-replicated (not a login's principal entry, whose commit counts itself). */
  countsUnderReplicated: boolean;
}

/** What one WAIT answered: how many replicas, (namesNodes) which node it ran on, and which connection the slot table sent it to. */
interface WaitAnswer {
  replicas: number;
  node: string | undefined;
  routedTo: string;
}

const NO_WAIT: ConfirmationPlan = { waitFor: 0, refuse: false, probe: false };

/** The replies of scripts that ran on the master but were not acknowledged (see ranUnconfirmed). */
const unconfirmedReplies = new WeakMap<KilnError, unknown>();

/**
 * A script that ran on the master and whose WAIT then failed (replicas short, the WAIT
 * timed out, its connection changed): the write is not acknowledged, yet it is done on
 * the master. The error says so (`details.applied`, for callers holding a cached copy),
 * and carries the script's reply (unconfirmedReplyOf): a destroy or expiry has deleted
 * the data already, so a retry finds nothing and cannot do what follows the script
 * (index entries, counters, the caller's own lease). The caller does it before
 * rethrowing.
 */
function ranUnconfirmed(err: unknown, reply: unknown): unknown {
  if (!(err instanceof KilnError)) return err;
  const error = new KilnError(err.code, err.message, { cause: err.cause, details: { ...err.details, applied: true } });
  unconfirmedReplies.set(error, reply);
  return error;
}

/** The reply of the script whose unacknowledged run `err` reports (see ranUnconfirmed); undefined for any other error. */
export function unconfirmedReplyOf(err: unknown): unknown {
  return err instanceof KilnError ? unconfirmedReplies.get(err) : undefined;
}

/** The commits that one WAIT, not yet sent, will confirm. */
interface WaitBatch {
  firstKey: string;
  replicas: number;
  settle: { resolve: (answer: WaitAnswer) => void; reject: (err: unknown) => void };
  confirmed: Promise<WaitAnswer>;
}

/** One connection's WAITs: the one out, and the batch waiting for it to return. */
interface WaitLane {
  out: boolean;
  next: WaitBatch | undefined;
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
  private readonly lanes = new Map<string, WaitLane>();
  constructor(private readonly o: ScriptRunnerOptions) {}

  get replicasOnline(): number {
    return this.o.replicaGuard.seenOnline;
  }

  /** The heartbeat's ROLE on `connection`'s master ('' where there is one): best effort's clock for its shortage, and the shortage begins or ends. */
  sawRole(view: RoleView, connection = ''): void {
    const now = Date.now();
    this.o.replicaGuard.observe(view.replicaOffsets.length, now, connection);
    this.o.replicaGuard.roleSeen(connection, view, now);
  }

  /** A failover: the new master's replicas are counted afresh. */
  newMaster(masters?: readonly string[]): void {
    this.o.replicaGuard.reset(masters);
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
  readonly send = (firstKey: string | undefined, args: (string | Buffer)[], timeoutMs = this.o.operationTimeoutMs): Promise<unknown> => this.tracked(() => this.o.send(firstKey, args), firstKey, args, timeoutMs);

  /** A keyless command on one connection (see ScriptRunnerOptions.sendTo), bounded and counted as send is. */
  readonly sendTo = (connection: string, args: string[], timeoutMs = this.o.operationTimeoutMs): Promise<unknown> => this.tracked(() => this.o.sendTo(connection, args), undefined, args, timeoutMs);

  private async tracked(sending: () => Promise<unknown>, firstKey: string | undefined, args: (string | Buffer)[], timeoutMs: number): Promise<unknown> {
    this.sent.requests++;
    this.sent.bytes += respBytes(args);
    try {
      return await withTimeout(sending(), timeoutMs, () => new KilnError('KILN_ERR_TIMEOUT', `Redis did not answer ${String(args[0])} within ${timeoutMs} ms`));
    } catch (err) {
      const error = toEngineError(err, this.o.address);
      if (!error.message.includes('NOSCRIPT')) this.countError(error.code);
      // A command names its one key; a script's keys are named by runScript (replicatedWrite's by itself).
      const op = String(args[0]);
      throw firstKey !== undefined && op !== 'EVALSHA' && op !== 'EVAL' ? damageNaming(error, firstKey) : error;
    }
  }

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
    const replicated = options.waitForReplicas === true && o.replicas > 0;
    const connection = replicated ? o.connectionOf(keys[0]!) : '';
    const run = (op: 'EVALSHA' | 'EVAL'): Promise<unknown> =>
      this.sendConfirmed(
        // Each attempt gets what is left of the call's time (an EVAL after NOSCRIPT too).
        { name: script.name, firstKey: keys[0]!, connection, replicated, timeoutMs: within(options.timeoutMs ?? o.operationTimeoutMs, deadline), deadline, countsUnderReplicated: true },
        (named) => {
          const sent = named ? script.nodeNamed : script;
          return [op, op === 'EVALSHA' ? sent.sha : sent.source, ...args];
        },
      );
    let reply: unknown;
    try {
      try {
        reply = await run('EVALSHA');
      } catch (err) {
        if (!(err instanceof KilnError && err.message.includes('NOSCRIPT'))) throw err;
        reply = await run('EVAL');
      }
    } catch (err) {
      if (err instanceof KilnError && err.code === 'KILN_ERR_STORAGE_DAMAGED') throw await this.namingDamage(err, sessionId, keys);
      // Ran, then refused (its WAIT short): its lease moves happened on the master, and a retry reports none.
      const ran = unconfirmedReplyOf(err);
      if (script.countsLeases && Array.isArray(ran)) o.addScriptStats(ran[ran.length - 1]);
      throw err;
    }
    if (script.countsLeases && Array.isArray(reply)) o.addScriptStats(reply[reply.length - 1]);
    return reply;
  };

  /**
   * Sends one write and, as the guard plans it, its connection's next WAIT right behind
   * it (a known shortage refuses it here, unsent). Its reply once the WAIT confirms it;
   * else a refusal carrying the reply (ranUnconfirmed). `request(named)`: the command, in
   * its node-naming form (replying `{reply, CLUSTER MYID}`) where a Cluster's WAIT is to
   * be checked against the node that ran it.
   */
  private async sendConfirmed(w: ConfirmedWrite, request: (named: boolean) => (string | Buffer)[]): Promise<unknown> {
    const o = this.o;
    const { name, firstKey, connection, replicated, timeoutMs, deadline } = w;
    const plan: ConfirmationPlan = replicated ? o.replicaGuard.plan(Date.now(), connection) : NO_WAIT;
    if (plan.refuse) {
      if (plan.probe) this.probeReplicas(connection);
      throw this.refusal(name, 0, 0);
    }
    const named = plan.waitFor > 0 && o.namesNodes;
    const generation = o.generation();
    const reply = this.send(firstKey, request(named), timeoutMs);
    // The connection's next WAIT, asked for right behind the write: one out now at most, and each runs its full timeout.
    const waitBound = within(timeoutMs + 2 * o.replicaTimeoutMs, deadline);
    const acked = plan.waitFor > 0 ? withTimeout(this.confirm(firstKey, connection, plan.waitFor), waitBound, () => waitTimedOut(waitBound)) : undefined;
    acked?.catch(() => undefined);
    let result = await reply;
    let ranOn: string | undefined;
    if (named) [result, ranOn] = nodeNamedReply(result, name);
    try {
      const answer = acked ? await acked : undefined;
      // A WAIT that may have run on another connection than the write, or before it, says
      // nothing of it. The generation moves with every connection change and, on a Cluster,
      // every MOVED or ASK followed (a write redirected ran later than its first attempt,
      // behind which its WAIT was queued, even if the redirects led back to the same node).
      if (replicated && o.generation() !== generation) {
        this.countError('KILN_ERR_ENGINE_UNAVAILABLE');
        throw new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `the connection to Redis changed, or a slot moved, between the ${name} and its WAIT, so no replica confirmation can be trusted; it is not acknowledged (a retry is safe)`);
      }
      // And the WAIT ran where the write did, on the lane's connection (a slot table
      // refreshed before the WAIT was sent sends it elsewhere).
      if (named && (answer?.node !== ranOn || answer?.routedTo !== connection)) throw this.movedRefusal(name, ranOn, answer?.node);
      if (replicated) this.afterWait(name, answer?.replicas ?? 0, plan.waitFor, connection, w.countsUnderReplicated);
    } catch (err) {
      throw ranUnconfirmed(err, result);
    }
    return result;
  }

  private movedRefusal(name: string, ranOn: string | undefined, waitedOn: string | undefined): KilnError {
    this.countError('KILN_ERR_ENGINE_UNAVAILABLE');
    return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `the ${name} ran on Redis node ${ranOn?.slice(0, 12) ?? '?'}… but its WAIT on node ${waitedOn?.slice(0, 12) ?? '?'}… (its slot moved, or is moving, to another master), so no replica confirmation can be trusted; it is not acknowledged (a retry is safe)`, { details: { ranOn, waitedOn } });
  }

  /**
   * A write outside the session scripts that must be on replicas before what follows it
   * is acknowledged: a login's entry in its principal's set, which on a Cluster lives on
   * another shard than the session, where the session script's WAIT does not reach (a
   * failover of that shard alone would lose it, and "log out everywhere" miss the login).
   * On one connection (standalone, Sentinel) the script's own WAIT, later on the same
   * connection, covers it, so it is sent as it is.
   */
  readonly replicatedWrite = async (firstKey: string, command: string, member: string, deadline?: number): Promise<void> => {
    const o = this.o;
    if (o.replicas === 0 || !o.namesNodes) {
      await this.command(firstKey, [command, firstKey, member], deadline);
      return;
    }
    await o.ensureConnected(deadline);
    const write: ConfirmedWrite = { name: `${command} of ${firstKey}`, firstKey, connection: o.connectionOf(firstKey), replicated: true, timeoutMs: within(o.operationTimeoutMs, deadline), deadline, countsUnderReplicated: false };
    try {
      await this.sendConfirmed(write, (named) => (named ? ['EVAL', NODE_NAMED_WRITE, '1', firstKey, command, member] : [command, firstKey, member]));
    } catch (err) {
      // As send names the key of a command (an EVAL's error does not).
      throw isKilnError(err) ? damageNaming(err, firstKey) : err;
    }
  };

  /**
   * A script's damage error, naming what is damaged: a script's own report names its key
   * and field already; otherwise (a key of the wrong type, a runtime error) the session's
   * keys whose type is not Kiln's are looked up (TYPE, on this rare path only).
   */
  private async namingDamage(err: KilnError, sessionId: string, keys: string[]): Promise<KilnError> {
    if (keys.some((key) => err.message.includes(key))) return new KilnError(err.code, `session ${sessionId}: ${err.message}`, { cause: err, details: { sessionId } });
    const types = await Promise.all(keys.map((key) => this.send(key, ['TYPE', key]).then(text, () => 'unknown')));
    const wrong = keys.filter((key, i) => types[i] !== 'none' && types[i] !== SESSION_KEY_TYPES[i]);
    const named = wrong.length > 0 ? `${wrong.map((key) => `${key} is a ${types[keys.indexOf(key)]!}`).join(', ')}, not what Kiln keeps there` : `a field of its keys (${keys[0]!.slice(0, -1)}*) is not what Kiln wrote`;
    return new KilnError(err.code, `session ${sessionId}: ${named}; ${err.message}`, { cause: err, details: { sessionId, keys: wrong } });
  }

  /**
   * The replicas that confirm a write just sent on `firstKey`'s connection: the next WAIT
   * of that connection, sent now if none is out, else when the one out returns.
   */
  private confirm(firstKey: string, connection: string, replicas: number): Promise<WaitAnswer> {
    let lane = this.lanes.get(connection);
    if (!lane) this.lanes.set(connection, (lane = { out: false, next: undefined }));
    const batch = lane.next;
    if (batch) {
      batch.replicas = Math.max(batch.replicas, replicas);
      return batch.confirmed;
    }
    let settle!: WaitBatch['settle'];
    const confirmed = new Promise<WaitAnswer>((resolve, reject) => (settle = { resolve, reject }));
    lane.next = { firstKey, replicas, settle, confirmed };
    this.sendWait(connection, lane);
    return confirmed;
  }

  private sendWait(connection: string, lane: WaitLane): void {
    const batch = lane.next;
    if (lane.out || !batch) return;
    lane.next = undefined;
    lane.out = true;
    // Always the full timeout: a WAIT cut short by one request's deadline would be taken for a shortage.
    const waitMs = this.o.replicaTimeoutMs;
    // Routed as the writes are (by key, through the slot table), so that it is queued
    // behind them on their connection; with the node it ran on, which the runner checks
    // against the lane's node and each write's (a table refreshed meanwhile sends it elsewhere).
    const routedTo = this.o.connectionOf(batch.firstKey); // what the table says now: where the two go
    const node = this.o.namesNodes ? this.send(batch.firstKey, ['CLUSTER', 'MYID']).then((id) => text(id as Reply)) : Promise.resolve(undefined);
    const waited = this.send(batch.firstKey, ['WAIT', String(batch.replicas), String(waitMs)], this.o.operationTimeoutMs + waitMs);
    Promise.all([waited, node])
      .then(([n, id]) => batch.settle.resolve({ replicas: num(n as Reply), node: id, routedTo }), batch.settle.reject)
      .finally(() => {
        lane.out = false;
        if (lane.next) this.sendWait(connection, lane);
        else this.lanes.delete(connection);
      });
  }

  /** Asks ROLE on `connection`'s master whether its replicas are back (once per probe spacing; holds nothing up). */
  private probeReplicas(connection: string): void {
    this.sendTo(connection, ['ROLE'])
      .then((role) => {
        const view = roleView(role as Reply[]);
        if (view) this.o.replicaGuard.roleSeen(connection, view, Date.now());
      })
      .catch(() => undefined);
  }

  private afterWait(what: string, confirmed: number, waitedFor: number, connection: string, countsUnderReplicated = true): void {
    const guard = this.o.replicaGuard;
    const verdict = guard.verdict(confirmed, Date.now(), waitedFor, connection);
    if (verdict === 'confirmed') return;
    if (verdict === 'under-replicated') {
      if (countsUnderReplicated) this.o.count('underReplicatedCommits');
      return;
    }
    throw this.refusal(what, confirmed, waitedFor);
  }

  /**
   * A write (commit, destroy, expiry) not acknowledged for want of replicas (counted): 503.
   * A retry is safe: a commit's id makes it apply once, and a second destroy finds
   * nothing while the tombstone stays (its WAIT still covers the first one's writes).
   */
  private refusal(what: string, confirmed: number, waitedFor: number): KilnError {
    const guard = this.o.replicaGuard;
    this.countError('KILN_ERR_ENGINE_UNAVAILABLE');
    const message =
      waitedFor > 0
        ? `the ${what} reached ${confirmed} of ${this.o.replicas} replicas within ${this.o.replicaTimeoutMs} ms; it may or may not survive a failover, so it is not acknowledged`
        : `the ${what} reached 0 of ${this.o.replicas} replicas: it was not sent, since its master has lacked replicas since a recent check (ROLE, or a WAIT that came back short)`;
    return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `${message} (replicaPolicy ${guard.policy}; a retry is safe)`, { details: { replicas: this.o.replicas, confirmed } });
  }
}

/** One write of a key (`ARGV[1] KEYS[1] ARGV[2]`), replying as a RedisScript.nodeNamed does: `{reply, CLUSTER MYID}`. */
const NODE_NAMED_WRITE = "return {redis.call(ARGV[1], KEYS[1], ARGV[2]), redis.call('CLUSTER', 'MYID')}";

/** A damage error of a command on one key, naming the key if Redis's message does not. */
function damageNaming(error: KilnError, key: string): KilnError {
  if (error.code !== 'KILN_ERR_STORAGE_DAMAGED' || error.message.includes(key)) return error;
  return new KilnError('KILN_ERR_STORAGE_DAMAGED', `${key}: ${error.message}`, { cause: error, details: { key } });
}

function waitTimedOut(bound: number): KilnError {
  return new KilnError('KILN_ERR_TIMEOUT', `Redis did not answer WAIT within ${bound} ms`);
}

/** A RedisScript.nodeNamed reply, `{reply, node id}`, taken apart. */
function nodeNamedReply(reply: unknown, name: string): [unknown, string] {
  if (!Array.isArray(reply) || reply.length !== 2) throw new KilnError('KILN_ERR_PROTOCOL', `Redis answered the ${name} script with no node id beside its reply`);
  return [reply[0], text(reply[1] as Reply)];
}
