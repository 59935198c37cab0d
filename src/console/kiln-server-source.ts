import { KilnError } from '../errors/index.js';
import { MessageType } from '../protocol/messages.js';
import type { KilnServer } from '../server/kiln-server.js';
import type { ListOptions } from '../engines/engine.js';
import { DEFAULT_NAMESPACE, Namespace, namespaceOfKey } from '../server/namespaces.js';
import type { SessionEvent, SessionMeta, SessionSnapshot } from '../session/model.js';
import { LatencyRecorder } from '../util/latency.js';
import type { PrincipalCursor } from '../tier/session-table.js';
import type { SizedSession } from './largest-sessions.js';
import { announce, type ConsoleDescription, type ConsoleEvent, type ConsoleFigures, type ConsoleListPage, type ConsoleSessionMeta, type ConsoleSource } from './source.js';

function recentOf(commit: { count: number; p50Ms: number }, wait: { count: number; p50Ms: number }): ConsoleFigures['recent'] {
  return { commitMsP50: commit.p50Ms, leaseWaitMsP50: wait.p50Ms, commits: commit.count, leaseWaits: wait.count };
}

/** Sessions per slice of a size scan: a few milliseconds of the event loop. */
const SIZE_SLICE = 2000;

/**
 * The console's view of a kiln server, in the server's own process: figures come from
 * the tier's counters, latencies and errors from the requests the server answers (timed
 * only while someone watches, which this source does).
 */
export class KilnServerSource implements ConsoleSource {
  readonly kind = 'kiln';
  private readonly listeners = new Set<(event: ConsoleEvent) => void>();
  private readonly unsubscribe: (() => void)[] = [];
  private readonly commitLatency = new LatencyRecorder();
  private readonly leaseWait = new LatencyRecorder();
  private readonly errors: Record<string, number> = {};
  private requests = 0;

  constructor(private readonly server: KilnServer) {
    const tier = server.tier;
    this.unsubscribe.push(
      tier.onEvent((data) => announce(this.listeners, { type: 'session', data: this.event(data) })),
      tier.onLeaseActivity((data) => {
        const ns = this.namespace(namespaceOfKey(data.sessionId));
        announce(this.listeners, { type: 'lease', data: { ...data, sessionId: ns.idOf(data.sessionId), namespace: ns.name } });
      }),
      server.onActivity((e) => {
        if (e.type !== 'request') {
          announce(this.listeners, { type: 'client', data: e });
          return;
        }
        this.requests++;
        if (e.code) {
          this.errors[e.code] = (this.errors[e.code] ?? 0) + 1;
          if (this.listeners.size > 0) announce(this.listeners, { type: 'error', data: { code: e.code, request: e.message, at: e.at } });
        } else if (e.message === MessageType.Commit) this.commitLatency.observe(e.ms, e.at);
        else if (e.message === MessageType.Acquire) this.leaseWait.observe(e.ms, e.at);
      }),
    );
  }

  get epoch(): string {
    return this.server.tier.epoch;
  }

  describe(): ConsoleDescription {
    const info = this.server.info();
    const storage = this.server.storageInfo();
    return {
      role: 'standalone',
      address: `${info.host}:${info.port}`,
      startedAt: info.startedAt,
      tls: info.tls,
      storage: storage
        ? { kind: 'kiln-log', dataDir: storage.dataDir, fsync: storage.fsync, bytesOnDisk: storage.bytesOnDisk, tornTail: info.loaded?.tornTail ?? null, lastRepair: info.lastRepair }
        : { kind: 'memory', dataDir: null, fsync: null, bytesOnDisk: 0 },
    };
  }

  async figures(recentWindowMs = 5000): Promise<ConsoleFigures> {
    const stats = this.server.tier.stats();
    const storage = this.server.storageInfo();
    return {
      sessions: stats.sessions,
      sessionBytes: stats.sessionBytes,
      tombstones: stats.tombstones,
      leases: stats.leases,
      leaseWaiters: stats.leaseWaiters,
      connections: this.server.connectionCount,
      counters: { ...stats.counters } as unknown as Record<string, number>,
      requests: this.requests,
      errors: { ...this.errors },
      commitLatency: this.commitLatency.snapshot(),
      leaseWait: this.leaseWait.snapshot(),
      recent: recentOf(this.commitLatency.recent(recentWindowMs), this.leaseWait.recent(recentWindowMs)),
      clients: this.server.clients(),
      storageBytes: storage?.bytesOnDisk ?? 0, // no storage: nothing on disk
      ...(storage ? { storageBacklog: { bytes: storage.backlog.bytes, stalledMs: storage.backlog.stalledMs, compactingMs: storage.backlog.compactingMs, refusing: storage.refusing ?? null } } : {}),
    };
  }

  /**
   * Sessions in key order: the default namespace's, then each other's (their keys sort
   * after every id), or one namespace's. `prefix` is an id prefix, searched in each
   * namespace in turn. `next` is a tier key (`~<namespace>~<id>` past the default
   * namespace), handed back as `after` unchanged. `total` counts the namespace's sessions,
   * or every session.
   */
  async list(options: ListOptions & { namespace?: string }): Promise<ConsoleListPage> {
    const tier = this.server.tier;
    const prefix = options.prefix ?? '';
    if (options.namespace === undefined && prefix === '') {
      const page = await tier.list({ after: options.after, limit: options.limit });
      return { ...page, sessions: page.sessions.map((m) => this.meta(m)) };
    }
    const namespaces = this.walkOrder(options.namespace);
    let from = 0;
    if (options.after !== undefined) {
      from = namespaces.findIndex((ns) => ns.name === namespaceOfKey(options.after!));
      if (from < 0) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `"after" is not a key of ${options.namespace === undefined ? 'this server' : `namespace ${JSON.stringify(options.namespace)}`}`);
    }
    const sessions: ConsoleSessionMeta[] = [];
    let lastKey: string | undefined;
    let more = false;
    for (let i = from; i < namespaces.length; i++) {
      const ns = namespaces[i]!;
      const room = options.limit - sessions.length;
      // One more than there is room for: whether this namespace goes on past the page.
      const page = await tier.list({ prefix: ns.key(prefix), after: i === from ? options.after : undefined, limit: room + 1 });
      // The default namespace's keys are followed by every other namespace's.
      const own = ns.isDefault ? page.sessions.filter((m) => ns.owns(m.id)) : page.sessions;
      for (const m of own.slice(0, room)) {
        sessions.push(this.meta(m));
        lastKey = m.id;
      }
      if (own.length > room) {
        more = true;
        break;
      }
      if (sessions.length >= options.limit) {
        // Full at this namespace's end: a next page only if a later namespace has a match.
        for (const later of namespaces.slice(i + 1)) {
          const probe = await tier.list({ prefix: later.key(prefix), limit: 1 });
          if (probe.sessions.some((m) => later.owns(m.id))) {
            more = true;
            break;
          }
        }
        break;
      }
    }
    const total = options.namespace === undefined ? tier.sessionCount : namespaces.length === 0 ? 0 : tier.groupSize(namespaces[0]!.name);
    return { sessions, next: more && lastKey !== undefined ? lastKey : null, total };
  }

  /** The namespaces a listing walks, in key order (default first, then by `~<name>~`). */
  private walkOrder(namespace: string | undefined): Namespace[] {
    const known = [...this.namespacesFor(namespace)];
    if (namespace === undefined && !known.some((ns) => ns.isDefault)) known.push(new Namespace(DEFAULT_NAMESPACE));
    return known.sort((a, b) => (a.key('') < b.key('') ? -1 : a.key('') > b.key('') ? 1 : 0));
  }

  /**
   * Newest login first, one namespace after another. `next` is the namespace and the
   * tier's cursor in it (PrincipalCursor): `<namespace>.<join>.<key>`, fit for a shell.
   */
  async findByPrincipal(principal: string, options: { limit: number; after?: string; namespace?: string }): Promise<ConsoleListPage> {
    const tier = this.server.tier;
    const namespaces = this.namespacesFor(options.namespace);
    let from = 0;
    let cursor: PrincipalCursor | undefined;
    if (options.after !== undefined) {
      const [name, id, join] = parsePrincipalCursor(options.after);
      from = namespaces.findIndex((ns) => ns.name === name);
      if (from < 0) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `"after" names namespace ${JSON.stringify(name)}, which this listing does not cover`);
      cursor = { id, join };
    }
    const sessions: ConsoleSessionMeta[] = [];
    let next: string | null = null;
    let total = 0;
    for (const [i, ns] of namespaces.entries()) {
      const key = ns.principalKey(principal);
      total += tier.principalCount(key);
      if (i < from || next !== null || sessions.length >= options.limit) continue;
      let page = tier.findByPrincipalPage(key, options.limit - sessions.length, i === from ? cursor : undefined);
      // A walk the tier cut (an empty page going on): a few more in this one answer, each
      // bounded, so people are rarely shown an empty page.
      for (let cut = 0; page.sessions.length === 0 && page.next !== null && cut < CUT_WALKS_PER_ANSWER; cut++) page = tier.findByPrincipalPage(key, options.limit - sessions.length, page.next);
      for (const m of page.sessions) sessions.push(this.meta(m));
      // A namespace cut short, or a bounded walk that stopped: the next page goes on in it.
      if (page.next !== null) next = `${ns.name}.${page.next.join}.${page.next.id}`;
      else if (sessions.length >= options.limit) {
        const rest = namespaces.slice(i + 1).find((n) => tier.principalCount(n.principalKey(principal)) > 0);
        if (rest) next = `${rest.name}.${Number.MAX_SAFE_INTEGER}.`;
      }
    }
    return { sessions, next, total };
  }

  /** The session's snapshot, its meta saying which namespace it is of. */
  async snapshot(sessionId: string, namespace?: string): Promise<SessionSnapshot | null> {
    const key = this.keyOf(sessionId, namespace);
    if (key === undefined) return null;
    const ns = this.namespace(namespaceOfKey(key));
    const snapshot = ns.snapshot(this.server.tier.snapshotForAdmin(key));
    return snapshot === null ? null : { ...snapshot, meta: { ...snapshot.meta, namespace: ns.name } as ConsoleSessionMeta };
  }

  async destroy(sessionId: string, namespace?: string): Promise<boolean> {
    const key = this.keyOf(sessionId, namespace);
    return key === undefined ? false : this.server.tier.destroy(null, key, 'admin');
  }

  async destroyByPrincipal(principal: string, namespace?: string): Promise<number> {
    let n = 0;
    for (const ns of this.namespacesFor(namespace)) n += await this.server.tier.destroyByPrincipal(ns.principalKey(principal));
    return n;
  }

  /**
   * The tier key of a session the console names: in its namespace, or in the one
   * namespace holding that id. Clients choose ids, so two tenants may share one: without
   * a namespace, an id held in several is refused rather than guessed (showing or
   * destroying the wrong tenant's session).
   */
  private keyOf(sessionId: string, namespace: string | undefined): string | undefined {
    const holding = this.namespacesFor(namespace).filter((ns) => this.server.tier.peek(ns.key(sessionId)));
    if (holding.length > 1) {
      const names = holding.map((ns) => ns.name);
      throw new KilnError('KILN_ERR_INVALID_ARGUMENT', `session id ${JSON.stringify(sessionId.slice(0, 8) + '…')} is in ${names.length} namespaces (${names.join(', ')}): name one (namespace=, kiln sessions --namespace)`, { details: { namespaces: names } });
    }
    return holding[0]?.key(sessionId);
  }

  private namespacesFor(namespace: string | undefined): readonly Namespace[] {
    if (namespace === undefined) return this.server.namespaces();
    const ns = this.server.namespaces().find((n) => n.name === namespace);
    return ns ? [ns] : [];
  }

  private namespace(name: string): Namespace {
    return this.server.namespaces().find((n) => n.name === name) ?? new Namespace(name);
  }

  private meta(m: SessionMeta): ConsoleSessionMeta {
    const ns = this.namespace(namespaceOfKey(m.id));
    return { ...ns.meta(m), namespace: ns.name };
  }

  private event(e: SessionEvent): SessionEvent & { namespace: string } {
    const ns = this.namespace(namespaceOfKey(e.sessionId));
    return { ...ns.event(e), namespace: ns.name };
  }

  /**
   * Walks the tier's records (its compaction dump) SIZE_SLICE sessions at a time; the
   * generator resumes where it stopped, and its walk over the table's slots stays valid
   * while sessions come and go between slices.
   */
  async *sizes(): AsyncGenerator<SizedSession[]> {
    let slice: SizedSession[] = [];
    for (const r of this.server.tier.dump()) {
      if (r.t !== 's') break; // tombstones follow the sessions
      slice.push({ meta: this.meta(r.meta), bytes: r.pb ?? 0 });
      if (slice.length === SIZE_SLICE) {
        yield slice;
        slice = [];
      }
    }
    if (slice.length > 0) yield slice;
  }

  onEvent(listener: (event: ConsoleEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe) off();
    this.listeners.clear();
  }
}

/** A console principal cursor, `<namespace>.<join>.<tier key>` (the key '' from a namespace's start). */
function parsePrincipalCursor(after: string): [string, string, number] {
  const m = /^([A-Za-z0-9_-]{1,64})\.(\d{1,16})\.(.{0,512})$/s.exec(after);
  const join = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(join)) throw new KilnError('KILN_ERR_INVALID_ARGUMENT', 'not a "next" of a principal listing');
  return [m[1]!, m[3]!, join];
}

/** Cut walks one console answer follows (each at most 4,096 steps of the principal index). */
const CUT_WALKS_PER_ANSWER = 16;
