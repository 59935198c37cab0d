import type { ListOptions, ListPage } from '../engines/engine.js';
import type { SessionMeta, SessionSnapshot } from '../session/model.js';
import type { HistogramSnapshot } from '../util/latency.js';
import type { SizedSession } from './largest-sessions.js';
import type { RepairSummary } from '../server/storage/last-repair.js';

/**
 * Where the admin API, /metrics and the console get their data: one interface, two
 * implementations. A kiln server is its own source (KilnServerSource, in the server
 * process); a Redis tier has no server of ours, so `kiln console --engine redis…` reads
 * Redis and what each app server's client reports there (RedisSource).
 */
export interface ConsoleSource {
  /** 'kiln' or 'redis'. */
  readonly kind: string;
  readonly epoch: string;
  /** What does not change between calls: the tier and its storage. */
  describe(): ConsoleDescription;
  /** Current figures; totals only grow. `recentWindowMs` bounds the recent medians. */
  figures(recentWindowMs?: number): Promise<ConsoleFigures>;
  /**
   * Sessions in key order, a page at a time: every namespace's (kiln server: the default
   * namespace first), or `namespace`'s; `prefix` is an id prefix, in each namespace. A
   * source without namespaces (Redis) has only `default`: any other lists nothing.
   */
  list(options: ListOptions & { namespace?: string }): Promise<ConsoleListPage>;
  /**
   * A page of the principal's sessions in `namespace`, or in every namespace when it is
   * omitted, and how many it has in all; `next` (null after the last page) is handed back
   * as `after`, unchanged. A kiln server reads only the sessions it returns (a principal
   * may have a million: building all of them held the server for seconds).
   */
  findByPrincipal(principal: string, options: { limit: number; after?: string; namespace?: string }): Promise<ConsoleListPage>;
  /**
   * A session's data without taking its lease. Without `namespace`, the session of that
   * id in whichever namespace holds one; an id held in several namespaces (clients choose
   * ids) is refused with KILN_ERR_INVALID_ARGUMENT rather than guessed.
   */
  snapshot(sessionId: string, namespace?: string): Promise<SessionSnapshot | null>;
  /** The session of that id in `namespace` (found as snapshot() finds it when omitted). */
  destroy(sessionId: string, namespace?: string): Promise<boolean>;
  /** "Log out everywhere" in `namespace`, or in every namespace when it is omitted. */
  destroyByPrincipal(principal: string, namespace?: string): Promise<number>;
  /**
   * Every session's size, in slices: the caller takes one per turn of the event loop
   * (largest-sessions.ts), so no single turn walks the whole tier. Optional: without it
   * the sizes are read a page of list() at a time through snapshot().
   */
  sizes?(): AsyncGenerator<SizedSession[]>;
  /** Everything worth streaming to the console's events pane. */
  onEvent(listener: (event: ConsoleEvent) => void): () => void;
  close(): Promise<void>;
}

/**
 * A session as the console sees it: a kiln server with several token namespaces (see
 * src/server/namespaces.ts) says which one it lives in; ids repeat across namespaces.
 */
export type ConsoleSessionMeta = SessionMeta & { namespace?: string };

export type ConsoleListPage = Omit<ListPage, 'sessions'> & { sessions: ConsoleSessionMeta[] };

export interface ConsoleDescription {
  /** 'standalone' for a kiln server; 'redis-standalone', 'redis-sentinel' or 'redis-cluster'. */
  role: string;
  /** Where the tier listens (kiln server) or the Redis nodes (credentials removed). */
  address: string;
  startedAt: number;
  tls: boolean;
  storage: { kind: 'kiln-log' | 'memory' | 'redis'; dataDir: string | null; fsync: string | null; bytesOnDisk: number | null; replicas?: number; /** Redis: what a commit does with fewer replicas, and how many the master has online. */ replicaPolicy?: 'best-effort' | 'strict'; replicasOnline?: number; /** The incomplete last record cut off the newest log at start (kiln server only). */ tornTail?: { file: string; offset: number; bytes: number } | null; /** The data directory's last `kiln repair` (last-repair.json; kiln server only), null when none. */ lastRepair?: RepairSummary | null };
}

export interface ConsoleClient {
  name: string;
  host: string;
  pid: number;
  app: string;
  address: string;
  connectedAt: number;
  ownerId: string;
  /** The namespace its token opened (kiln server). */
  namespace?: string;
  leases: number;
  /** Requests this client sent to the tier. */
  requests: number;
  /** What the client last reported of itself (near cache, leases, commits); null until its first report. */
  stats: Record<string, unknown> | null;
}

export interface ConsoleFigures {
  sessions: number;
  sessionBytes: number;
  /** Tombstones of destroyed sessions; null where counting them would need a scan (Redis). */
  tombstones: number | null;
  leases: number;
  leaseWaiters: number;
  connections: number;
  counters: Record<string, number>;
  /** Requests the tier answered (kiln server) or app servers sent it (Redis), since the source started. */
  requests: number;
  /** Failed requests by error code, since the source started. */
  errors: Record<string, number>;
  commitLatency: HistogramSnapshot;
  leaseWait: HistogramSnapshot;
  /** Medians of the recent window, and how many calls they are of (a median of none reads 0). */
  recent: { commitMsP50: number; leaseWaitMsP50: number; commits?: number; leaseWaits?: number };
  clients: ConsoleClient[];
  /** Bytes of log on disk (0 without storage); null where the source cannot tell (Redis). */
  storageBytes: number | null;
  /**
   * Kiln server with a data directory: the log's bytes not yet written, how long its
   * oldest outstanding write or sync has waited, and why commits are refused now (its
   * disk behind), if they are.
   */
  storageBacklog?: { bytes: number; stalledMs: number; compactingMs: number; refusing: string | null };
  /** Redis with `replicas`: replicas the master has online (absent elsewhere). */
  replicasOnline?: number | null;
}

export type ConsoleEvent =
  | { type: 'session'; data: unknown }
  | { type: 'lease'; data: unknown }
  | { type: 'client'; data: { type: 'client-joined' | 'client-left'; client: Partial<ConsoleClient> & { name: string }; at: number } }
  | { type: 'error'; data: { code: string; /** The protocol message type that failed (kiln server). */ request?: number; at: number; client?: string; count?: number } };

/** Calls every listener, each in its own try: a console's failure is its own. */
export function announce<E>(listeners: Iterable<(event: E) => void>, event: E): void {
  for (const listener of listeners) {
    try {
      listener(event);
    } catch {
      // ignored: see above
    }
  }
}
