import { randomBytes } from 'node:crypto';
import { KilnError } from '../../errors/index.js';
import type { CommitAck, CommitRequest, LeaseGrant, SessionEvent, SessionMeta, SessionSnapshot, TouchItem } from '../../session/model.js';
import { sessionLimitsOption } from '../../session/limits.js';
import { Tier, type TierOptions } from '../../tier/tier.js';
import { StatusStream } from '../../util/status.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS, MAX_LIST_LIMIT, type ListOptions, type ListPage, type Engine, type EngineLimits, type EngineStats, type EngineStatus, type LeaseHandler, type CallOptions } from '../engine.js';
import { copyBytes } from '../../util/bytes.js';
import { within } from '../../util/deadline.js';

/**
 * The server tier in this process: for single-process apps, tests and development.
 * Several engines made from one MemoryTier behave like several processes sharing a
 * kiln server (each is its own lease owner), which is how the conformance suite
 * exercises contention without the network.
 *
 * @example
 * const tier = createMemoryTier();
 * const kiln = createSessionClient({ engine: tier.engine() });
 */
export class MemoryTier {
  readonly tier: Tier;
  private engines = 0;

  constructor(options: TierOptions = {}) {
    // The tier trusts its limits (a kiln server checks its own); here they come from the app.
    this.tier = new Tier(options.limits === undefined ? options : { ...options, limits: sessionLimitsOption(options.limits, 'MemoryTier') });
  }

  engine(name = `memory-${++this.engines}`): MemoryEngine {
    return new MemoryEngine(this.tier, name);
  }

  close(): void {
    this.tier.close();
  }
}

export function createMemoryTier(options: TierOptions = {}): MemoryTier {
  return new MemoryTier(options);
}

export class MemoryEngine implements Engine {
  readonly kind = 'memory';
  readonly ownerId: string;
  readonly status = new StatusStream<EngineStatus>();
  private handler: LeaseHandler | undefined;
  private attached = false;
  private closed = false;
  private fixedLimits: EngineLimits | undefined;
  private readonly unsubscribers: (() => void)[] = [];

  constructor(
    private readonly tier: Tier,
    name: string,
  ) {
    this.ownerId = `${name}-${randomBytes(4).toString('hex')}`;
  }

  get epoch(): string {
    return this.tier.epoch;
  }

  /** Fixed for the tier's life: one object, since clients read it on every request. */
  get limits(): EngineLimits {
    return (this.fixedLimits ??= Object.freeze({ ...this.tier.limits, touchGraceMs: this.tier.touchGraceMs }));
  }

  async connect(): Promise<void> {
    this.ensureAttached();
  }

  // Recalls and revocations reach the holder on a later tick, as they would over a
  // socket, so client code never runs re-entrantly inside another owner's call.
  private ensureAttached(): void {
    if (this.closed) throw new KilnError('KILN_ERR_CLOSED', 'engine is closed');
    if (this.attached) return;
    this.attached = true;
    this.tier.attach({
      id: this.ownerId,
      onRecall: (sessionId, token) => queueMicrotask(() => this.handler?.recall(sessionId, token)),
      onRevoke: (sessionId, token, reason) => queueMicrotask(() => this.handler?.revoked(sessionId, token, reason)),
    });
    this.status.push({ type: 'connected', epoch: this.tier.epoch });
  }

  setLeaseHandler(handler: LeaseHandler): void {
    this.handler = handler;
  }

  async acquire(sessionId: string, options?: { timeoutMs?: number } & CallOptions): Promise<LeaseGrant> {
    this.ensureAttached();
    return this.tier.acquire(this.ownerId, sessionId, within(options?.timeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS, options?.deadline));
  }

  async release(sessionId: string, token: number, lastAccessedAt?: number): Promise<void> {
    this.ensureAttached();
    this.tier.release(this.ownerId, sessionId, token, lastAccessedAt);
  }

  async load(sessionId: string, token: number): Promise<SessionSnapshot | null> {
    this.ensureAttached();
    return copySnapshot(this.tier.load(this.ownerId, sessionId, token));
  }

  async commit(request: CommitRequest): Promise<CommitAck> {
    this.ensureAttached();
    // Copy what the tier keeps: the caller may reuse its buffers.
    return this.tier.commit(this.ownerId, { ...request, set: request.set.map(([n, v]) => [n, copyBytes(v)]), del: [...request.del] });
  }

  async touch(items: readonly TouchItem[]): Promise<void> {
    this.ensureAttached();
    this.tier.touch(this.ownerId, items);
  }

  async destroy(sessionId: string, options?: { reason?: string }): Promise<boolean> {
    this.ensureAttached();
    return this.tier.destroy(this.ownerId, sessionId, options?.reason);
  }

  async findByPrincipal(principal: string): Promise<SessionMeta[]> {
    this.ensureAttached();
    return this.tier.findByPrincipal(principal);
  }

  async list(options: ListOptions): Promise<ListPage> {
    this.ensureAttached();
    return this.tier.list({ ...options, limit: Math.min(options.limit, MAX_LIST_LIMIT) });
  }

  async destroyByPrincipal(principal: string): Promise<number> {
    this.ensureAttached();
    return this.tier.destroyByPrincipal(principal);
  }

  onEvent(listener: (event: SessionEvent) => void): () => void {
    const off = this.tier.onEvent((event) => queueMicrotask(() => listener(event)));
    this.unsubscribers.push(off);
    return off;
  }

  async stats(): Promise<EngineStats> {
    const s = this.tier.stats();
    return { kind: this.kind, ...s, counters: { ...s.counters } };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const off of this.unsubscribers) off();
    if (this.attached) this.tier.detach(this.ownerId);
    this.status.push({ type: 'closed' });
    this.status.end();
  }
}

function copySnapshot(s: SessionSnapshot | null): SessionSnapshot | null {
  return s ? { meta: { ...s.meta }, attributes: new Map(s.attributes) } : null;
}
