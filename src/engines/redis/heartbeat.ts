/**
 * The heartbeat, once per `heartbeatMs`: announce this process (the owners index), check
 * the connection, notice failovers, hand back leases left over from trouble, count the
 * replicas online and renew the held leases. It keeps the failover rule: a new master
 * may lack the last writes, including lease writes, so when the masters change every
 * lease here is dropped (the client reloads) instead of being trusted on a stale record.
 */
import { KilnError } from '../../errors/index.js';
import { roleView, type Reply } from './replies.js';
import { withTimeout } from '../../util/deadline.js';
import type { RoleView } from './replica-guard.js';

/** Whether the leases are due for renewal: at a third of their time limit, give or take half a beat. */
export function renewDue(now: number, lastRenew: number, leaseTimeMs: number, heartbeatMs: number): boolean {
  return now - lastRenew >= leaseTimeMs / 3 - heartbeatMs / 2;
}

/** How long one round of renewals may hold the heartbeat: until the next round is due (at least a beat). */
export function renewWindowMs(leaseTimeMs: number, heartbeatMs: number): number {
  return Math.max(heartbeatMs, leaseTimeMs / 3 - heartbeatMs / 2);
}

export interface HeartbeatOptions {
  heartbeatMs: number;
  leaseTimeMs: number;
  /** Replicas commits wait for: 0 skips the ROLE check. */
  replicas: number;
  /** How long a WAIT may hold its connection (see answerBoundMs). */
  replicaTimeoutMs: number;
  ownerId: string;
  /** The owners index (ZSET owner → last beat) and the key ROLE is routed by. */
  ownersKey: string;
  epochKey: string;
  send: (firstKey: string | undefined, args: (string | Buffer)[], timeoutMs?: number) => Promise<unknown>;
  masterIdentity: () => Promise<string>;
  isClosed: () => boolean;
  isConnected: () => boolean;
  /** Redis answers again after trouble: the engine says so and checks the epoch. */
  reconnected: () => Promise<void>;
  /** The beat failed: the engine treats the connection as lost. */
  failed: (error?: Error) => void;
  /** The masters changed: every lease goes. */
  failover: (reason: string) => void;
  /** Leases left over from trouble, each handed back once. */
  takeToRelease: () => [string, number][];
  giveBack: (sessionId: string, token: number) => void;
  /** ROLE on a master ('' where there is one connection): how many replicas it lists, and their acknowledged offsets. */
  sawRole: (view: RoleView, connection?: string) => void;
  /** The masters' connections where there are several (RedisTransport.masterConnections). */
  masterConnections: () => string[] | undefined;
  /** A keyless command on one master's connection (ScriptRunner.sendTo). */
  sendTo: (connection: string, args: string[], timeoutMs: number) => Promise<unknown>;
  /** Renews the held leases, sending none at or after `deadline` and returning by then (see Ownership.renewAll). */
  renewAll: (deadline: number) => Promise<void>;
}

export class Heartbeat {
  private running = false;
  private lastRenew = 0;
  /** The master(s) as last seen; a change is a failover. */
  masters: string | undefined;

  constructor(private readonly o: HeartbeatOptions) {}

  /**
   * How long the beat waits for Redis to answer on a connection commits use: two beats,
   * or, with replicas, a WAIT's whole timeout and a beat. A WAIT holds its connection
   * (Redis reads nothing more from it meanwhile), so a beat bound shorter than the WAIT
   * took a replica shortage for a lost connection, and dropped every lease.
   */
  private answerBoundMs(): number {
    const o = this.o;
    return o.replicas > 0 ? Math.max(2 * o.heartbeatMs, o.replicaTimeoutMs + o.heartbeatMs) : 2 * o.heartbeatMs;
  }

  /** Checks the connection, notices failovers, renews leases, announces this process. */
  async beat(): Promise<void> {
    const o = this.o;
    if (this.running || o.isClosed()) return;
    this.running = true;
    try {
      await o.send(o.ownersKey, ['ZADD', o.ownersKey, String(Date.now()), o.ownerId], this.answerBoundMs());
      const masters = await withTimeout(o.masterIdentity(), this.answerBoundMs(), () => new KilnError('KILN_ERR_TIMEOUT', 'master check timed out'));
      if (!o.isConnected()) await o.reconnected();
      const before = this.masters;
      this.masters = masters;
      if (before !== undefined && masters !== before) o.failover(`failover (masters ${before} → ${masters})`);
      for (const [sessionId, token] of o.takeToRelease()) o.giveBack(sessionId, token);
      if (o.replicas > 0) await this.countReplicasOnline();
      if (renewDue(Date.now(), this.lastRenew, o.leaseTimeMs, o.heartbeatMs)) {
        this.lastRenew = Date.now();
        // Bounded by the renewal interval: thousands of renewals timing out (a cluster
        // shard down) held this beat, and so failover and replica checks, for minutes.
        await o.renewAll(this.lastRenew + renewWindowMs(o.leaseTimeMs, o.heartbeatMs));
      }
    } catch (err) {
      o.failed(err instanceof Error ? err : undefined);
    } finally {
      this.running = false;
    }
  }

  /**
   * ROLE on the master: how many replicas it has online now (a replica back is waited for
   * again). On a cluster, on every master: each shard's replicas are its own, and so is
   * best effort's grace.
   */
  private async countReplicasOnline(): Promise<void> {
    const masters = this.o.masterConnections();
    if (masters) {
      // A master that does not answer is left out of this beat.
      const roles = await Promise.allSettled(masters.map((connection) => this.o.sendTo(connection, ['ROLE'], this.answerBoundMs())));
      roles.forEach((role, i) => {
        const view = role.status === 'fulfilled' ? roleView(role.value as Reply[]) : undefined;
        if (view) this.o.sawRole(view, masters[i]);
      });
      return;
    }
    const role = (await this.o.send(this.o.epochKey, ['ROLE'], this.answerBoundMs())) as Reply[];
    const view = roleView(role);
    if (view) this.o.sawRole(view);
  }
}
