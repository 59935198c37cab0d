import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import type { ConnectionOptions } from 'node:tls';
import type * as RedisClient from '@redis/client';
import { KilnError } from '../../errors/index.js';
import { hashSlot } from './hash-slot.js';
import type { RedisTopology } from './topology.js';

/**
 * The Redis engine's only view of the network: run a command on the node that owns a
 * key, subscribe to a channel, and notice failovers. One implementation per topology,
 * all on node-redis (chosen over ioredis by measurement, see docs/engines.md); the
 * engine above is the same for all three.
 */
export interface RedisTransport {
  readonly kind: RedisTopology['kind'];
  connect(): Promise<void>;
  /** Runs a command on the node that owns `firstKey` (any node when undefined). Bulk strings come back as Buffers. */
  send(firstKey: string | undefined, args: (string | Buffer)[]): Promise<unknown>;
  /** Names the current master(s); a change means a failover happened. */
  masterIdentity(): Promise<string>;
  /** Which connection `firstKey`'s commands take (its master's address; '' when there is one connection). */
  connectionOf(firstKey: string): string;
  /**
   * Bumped by every event after which a command may run on another connection than the
   * commands sent before it: a connection error, a reconnect, a master change. A WAIT
   * confirms only its own connection's writes, so a commit whose WAIT answered at another
   * generation than its script was sent at is not confirmed.
   */
  readonly generation: number;
  /**
   * Runs a keyless command (WAIT, ROLE, CLUSTER MYID) on the connection `connectionOf`
   * named, whatever the slot table says by now: a WAIT confirms only the writes sent
   * before it on its own connection.
   */
  sendTo(connection: string, args: string[]): Promise<unknown>;
  /**
   * The connections (connectionOf's names) of the masters now, where there are several (a
   * cluster: each shard's replicas are its own, and the heartbeat reads ROLE on each);
   * undefined where there is one connection (the heartbeat's own ROLE covers it).
   */
  masterConnections(): string[] | undefined;
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** Every channel matching a glob pattern (the console watching lease traffic). */
  subscribePattern(pattern: string, listener: (message: string, channel: string) => void): Promise<void>;
  /** Connection-level errors and topology changes, for the engine's status stream. */
  onTrouble(listener: (event: TransportEvent) => void): void;
  close(): Promise<void>;
}

export type TransportEvent = { type: 'error'; error: Error } | { type: 'failover'; detail: string };

export interface TransportOptions {
  connectTimeoutMs: number;
  /** Delay before reconnect attempt n (node-redis counts from 0). */
  reconnectDelayMs: (attempt: number) => number;
  /** TLS settings of the data nodes (used when the topology says tls). */
  tls?: ConnectionOptions;
  /** TLS to the sentinels, separate from the data nodes': undefined = plaintext. */
  sentinelTls?: ConnectionOptions;
}

type RedisModule = typeof RedisClient;

/** Bulk strings as Buffers (session data is binary). */
function buffersOf(redis: RedisModule) {
  return { typeMapping: { [redis.RESP_TYPES.BLOB_STRING]: Buffer } } as const;
}

/**
 * node-redis is an optional peer dependency (8.5 MB that users of the kiln server or the
 * memory engine never need): it is loaded the first time a Redis engine connects.
 */
let loading: Promise<RedisModule> | undefined;
export function loadRedisClient(): Promise<RedisModule> {
  loading ??= import('@redis/client').catch((err: unknown) => {
    loading = undefined;
    throw new KilnError('KILN_ERR_MISSING_DEPENDENCY', 'the Redis engine needs the @redis/client package: npm install @redis/client@5', { cause: err, details: { package: '@redis/client' } });
  });
  return loading;
}

// node-redis's client types are generic over modules and scripts we do not use; the
// transport talks to them through these narrow shapes.
interface CommandClient {
  sendCommand(...args: unknown[]): Promise<unknown>;
  connect(): Promise<unknown>;
  close(): Promise<unknown>;
  destroy(): void;
  on(event: string, listener: (...args: never[]) => void): unknown;
  subscribe(channel: string, listener: (message: string) => void): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  pSubscribe(pattern: string, listener: (message: string, channel: string) => void): Promise<unknown>;
}

export function createTransport(topology: RedisTopology, options: TransportOptions): RedisTransport {
  return new DeferredTransport(topology, options);
}

function transportFor(redis: RedisModule, topology: RedisTopology, options: TransportOptions): RedisTransport {
  switch (topology.kind) {
    case 'standalone':
      return new StandaloneTransport(redis, topology, options);
    case 'sentinel':
      return new SentinelTransport(redis, topology, options);
    case 'cluster':
      return new ClusterTransport(redis, topology, options);
  }
}

/** The transport of a topology, made once node-redis is loaded (at the first connect). */
class DeferredTransport implements RedisTransport {
  private inner: RedisTransport | undefined;
  private readonly troubleListeners: ((event: TransportEvent) => void)[] = [];
  /** Subscriptions asked for before the first connect wait for the transport to exist, as node-redis's clients queued them. */
  private innerMade!: (transport: RedisTransport) => void;
  private readonly made = new Promise<RedisTransport>((resolve) => (this.innerMade = resolve));

  constructor(
    private readonly topology: RedisTopology,
    private readonly options: TransportOptions,
  ) {}

  get kind(): RedisTopology['kind'] {
    return this.topology.kind;
  }

  async connect(): Promise<void> {
    if (!this.inner) {
      const inner = transportFor(await loadRedisClient(), this.topology, this.options);
      for (const listener of this.troubleListeners) inner.onTrouble(listener);
      this.inner = inner;
      this.innerMade(inner);
    }
    await this.inner.connect();
  }

  private notYet(): KilnError {
    return new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', 'the Redis engine is not connected yet');
  }

  send(firstKey: string | undefined, args: (string | Buffer)[]): Promise<unknown> {
    return this.inner ? this.inner.send(firstKey, args) : Promise.reject(this.notYet());
  }

  masterIdentity(): Promise<string> {
    return this.inner ? this.inner.masterIdentity() : Promise.reject(this.notYet());
  }

  connectionOf(firstKey: string): string {
    return this.inner ? this.inner.connectionOf(firstKey) : '';
  }

  get generation(): number {
    return this.inner?.generation ?? 0;
  }

  sendTo(connection: string, args: string[]): Promise<unknown> {
    return this.inner ? this.inner.sendTo(connection, args) : Promise.reject(this.notYet());
  }

  masterConnections(): string[] | undefined {
    return this.inner?.masterConnections();
  }

  subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    return this.inner ? this.inner.subscribe(channel, listener) : this.made.then((t) => t.subscribe(channel, listener));
  }

  unsubscribe(channel: string): Promise<void> {
    return this.inner ? this.inner.unsubscribe(channel) : Promise.resolve();
  }

  subscribePattern(pattern: string, listener: (message: string, channel: string) => void): Promise<void> {
    return this.inner ? this.inner.subscribePattern(pattern, listener) : this.made.then((t) => t.subscribePattern(pattern, listener));
  }

  onTrouble(listener: (event: TransportEvent) => void): void {
    this.troubleListeners.push(listener);
    this.inner?.onTrouble(listener);
  }

  close(): Promise<void> {
    return this.inner ? this.inner.close() : Promise.resolve();
  }
}

function socketOptions(options: TransportOptions, tls: ConnectionOptions | undefined) {
  return {
    connectTimeout: options.connectTimeoutMs,
    reconnectStrategy: (retries: number) => options.reconnectDelayMs(retries),
    ...(tls ? { ...tls, tls: true as const } : {}),
  };
}

function nodeTls(topology: RedisTopology, options: TransportOptions): ConnectionOptions | undefined {
  return topology.tls ? (options.tls ?? {}) : undefined;
}

abstract class BaseTransport {
  protected readonly listeners = new Set<(event: TransportEvent) => void>();
  generation = 0;

  /** Counts `events` of `emitter` as connection changes (see RedisTransport.generation). */
  protected countChanges(emitter: { on(event: string, listener: () => void): unknown }, events: readonly string[]): void {
    for (const event of events) emitter.on(event, () => this.generation++);
  }

  onTrouble(listener: (event: TransportEvent) => void): void {
    this.listeners.add(listener);
  }

  abstract send(firstKey: string | undefined, args: (string | Buffer)[]): Promise<unknown>;

  /** One connection (standalone, Sentinel): every command takes it. */
  sendTo(_connection: string, args: string[]): Promise<unknown> {
    return this.send(undefined, args);
  }

  masterConnections(): string[] | undefined {
    return undefined;
  }

  protected emit(event: TransportEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}

class StandaloneTransport extends BaseTransport implements RedisTransport {
  readonly kind = 'standalone';
  private readonly client: CommandClient;
  /** Subscriptions need their own connection in RESP2. */
  private readonly subscriber: CommandClient;

  private readonly buffers: ReturnType<typeof buffersOf>;

  constructor(redis: RedisModule, topology: Extract<RedisTopology, { kind: 'standalone' }>, options: TransportOptions) {
    super();
    this.buffers = buffersOf(redis);
    this.client = redis.createClient({
      socket: { host: topology.host, port: topology.port, ...socketOptions(options, nodeTls(topology, options)) },
      ...(topology.username ? { username: topology.username } : {}),
      ...(topology.password ? { password: topology.password } : {}),
      ...(topology.db ? { database: topology.db } : {}),
    }) as unknown as CommandClient;
    this.subscriber = (this.client as unknown as { duplicate(): CommandClient }).duplicate();
    for (const c of [this.client, this.subscriber]) {
      c.on('error', (error: Error) => this.emit({ type: 'error', error }));
    }
    // Only the command connection: WAITs never go through the subscriber.
    this.countChanges(this.client as unknown as { on(event: string, listener: () => void): unknown }, ['error', 'reconnecting', 'ready', 'end']);
  }

  async connect(): Promise<void> {
    await Promise.all([this.client.connect(), this.subscriber.connect()]);
  }

  send(_firstKey: string | undefined, args: (string | Buffer)[]): Promise<unknown> {
    return this.client.sendCommand(args, this.buffers);
  }

  async masterIdentity(): Promise<string> {
    return runIdOf(await this.client.sendCommand(['INFO', 'server']));
  }

  connectionOf(): string {
    return '';
  }

  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    await this.subscriber.subscribe(channel, listener);
  }

  async unsubscribe(channel: string): Promise<void> {
    await this.subscriber.unsubscribe(channel);
  }

  async subscribePattern(pattern: string, listener: (message: string, channel: string) => void): Promise<void> {
    await this.subscriber.pSubscribe(pattern, listener);
  }

  async close(): Promise<void> {
    await Promise.all([this.client, this.subscriber].map((c) => closeOrDestroy(c)));
  }
}

class SentinelTransport extends BaseTransport implements RedisTransport {
  readonly kind = 'sentinel';
  private readonly sentinel: CommandClient & { getMasterNode(): { host: string; port: number } | undefined };

  private readonly buffers: ReturnType<typeof buffersOf>;

  constructor(redis: RedisModule, topology: Extract<RedisTopology, { kind: 'sentinel' }>, options: TransportOptions) {
    super();
    this.buffers = buffersOf(redis);
    const auth = { ...(topology.username ? { username: topology.username } : {}), ...(topology.password ? { password: topology.password } : {}) };
    this.sentinel = redis.createSentinel({
      name: topology.masterName,
      sentinelRootNodes: topology.sentinels,
      // node-redis types these as plain TCP, but hands the socket options to its client as they are.
      nodeClientOptions: { ...auth, socket: socketOptions(options, nodeTls(topology, options)) as ReturnType<typeof socketOptions> & { tls?: false } },
      sentinelClientOptions: { ...(topology.sentinelPassword ? { password: topology.sentinelPassword } : {}), socket: socketOptions(options, options.sentinelTls) as ReturnType<typeof socketOptions> & { tls?: false } },
      // One reserved connection to the master: a WAIT then follows the write it confirms
      // on the same connection, and commands keep their order.
      reserveClient: true,
      scanInterval: 1000,
    }) as unknown as typeof this.sentinel;
    this.sentinel.on('error', (error: Error) => this.emit({ type: 'error', error }));
    this.sentinel.on('topology-change', (event: { type: string; node?: { host: string; port: number } }) => {
      if (event.type === 'MASTER_CHANGE') {
        this.generation++;
        this.emit({ type: 'failover', detail: `master is now ${event.node?.host}:${event.node?.port}` });
      }
    });
    // A master connection's error: node-redis sends the commands it failed again, on whichever connection is ready next.
    this.sentinel.on('client-error', (event: { type?: string }) => {
      if (event.type === 'MASTER') this.generation++;
    });
  }

  async connect(): Promise<void> {
    await this.sentinel.connect();
  }

  send(_firstKey: string | undefined, args: (string | Buffer)[]): Promise<unknown> {
    return this.sentinel.sendCommand(false, args, this.buffers);
  }

  async masterIdentity(): Promise<string> {
    const node = this.sentinel.getMasterNode();
    return `${node?.host}:${node?.port}/${runIdOf(await this.sentinel.sendCommand(false, ['INFO', 'server']))}`;
  }

  /** One reserved connection to whichever node is master. */
  connectionOf(): string {
    return '';
  }

  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    await this.sentinel.subscribe(channel, listener);
  }

  async unsubscribe(channel: string): Promise<void> {
    await this.sentinel.unsubscribe(channel);
  }

  async subscribePattern(pattern: string, listener: (message: string, channel: string) => void): Promise<void> {
    await this.sentinel.pSubscribe(pattern, listener);
  }

  async close(): Promise<void> {
    await closeOrDestroy(this.sentinel);
  }
}

class ClusterTransport extends BaseTransport implements RedisTransport {
  readonly kind = 'cluster';
  private readonly cluster: CommandClient & {
    masters: { id: string; address: string }[];
    slots: ({ master?: { address?: string } } | undefined)[];
    nodeClient(node: { address: string }): CommandClient | Promise<CommandClient>;
  };

  private readonly buffers: ReturnType<typeof buffersOf>;

  constructor(redis: RedisModule, topology: Extract<RedisTopology, { kind: 'cluster' }>, options: TransportOptions) {
    super();
    this.buffers = buffersOf(redis);
    this.cluster = redis.createCluster({
      rootNodes: topology.nodes.map((n) => ({ socket: { host: n.host, port: n.port, ...socketOptions(options, nodeTls(topology, options)) } })),
      defaults: {
        ...(topology.username ? { username: topology.username } : {}),
        ...(topology.password ? { password: topology.password } : {}),
        socket: socketOptions(options, nodeTls(topology, options)),
      },
      useReplicas: false,
    }) as unknown as typeof this.cluster;
    this.cluster.on('error', (error: Error) => this.emit({ type: 'error', error }));
    this.countChanges(this.cluster as unknown as { on(event: string, listener: () => void): unknown }, ['node-error', 'node-reconnecting', 'node-ready', 'node-disconnect']);
    subscribe(REDIS_ERROR_CHANNEL, this.onRedirect);
  }

  /**
   * node-redis follows MOVED and ASK itself, and says so only on its diagnostics channel
   * (for every cluster client of the process: another's redirect counts too, which costs
   * at most a refusal a retry undoes). A redirected command ran later, and maybe
   * elsewhere, than where it was first queued, behind which its WAIT was: a redirect is a
   * connection change (RedisTransport.generation).
   */
  private readonly onRedirect = (message: unknown): void => {
    const { origin, internal, error } = (message ?? {}) as { origin?: unknown; internal?: unknown; error?: { message?: unknown } };
    if (origin === 'cluster' && internal === true && /^(MOVED|ASK) /.test(String(error?.message))) this.generation++;
  };

  async connect(): Promise<void> {
    await this.cluster.connect();
  }

  send(firstKey: string | undefined, args: (string | Buffer)[]): Promise<unknown> {
    return this.cluster.sendCommand(firstKey, false, args, this.buffers);
  }

  /** The master serving the key's slot, as node-redis's slot table has it now (the slot number before the table is read). */
  connectionOf(firstKey: string): string {
    const slot = hashSlot(firstKey);
    return this.cluster.slots[slot]?.master?.address ?? `slot ${slot}`;
  }

  override sendTo(connection: string, args: string[]): Promise<unknown> {
    const master = this.cluster.masters.find((m) => m.address === connection);
    if (!master) return Promise.reject(new KilnError('KILN_ERR_ENGINE_UNAVAILABLE', `no Redis master at ${connection} in the cluster's slot table now`));
    return Promise.resolve(this.cluster.nodeClient(master)).then((client) => client.sendCommand(args));
  }

  override masterConnections(): string[] {
    return this.cluster.masters.map((m) => m.address);
  }

  async masterIdentity(): Promise<string> {
    return this.cluster.masters
      .map((m) => m.id)
      .sort()
      .join(',');
  }

  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    await this.cluster.subscribe(channel, listener);
  }

  async unsubscribe(channel: string): Promise<void> {
    await this.cluster.unsubscribe(channel);
  }

  async subscribePattern(pattern: string, listener: (message: string, channel: string) => void): Promise<void> {
    await this.cluster.pSubscribe(pattern, listener);
  }

  async close(): Promise<void> {
    unsubscribe(REDIS_ERROR_CHANNEL, this.onRedirect);
    await closeOrDestroy(this.cluster);
  }
}

/** node-redis's diagnostics channel of errors, internal ones (redirects it follows) included. */
const REDIS_ERROR_CHANNEL = 'node-redis:error';

function runIdOf(info: unknown): string {
  const text = Buffer.isBuffer(info) ? info.toString() : String(info);
  return /run_id:(\w+)/.exec(text)?.[1] ?? 'unknown';
}

/** A graceful close waits for queued commands, which a client stuck reconnecting never sends: after a short wait it is destroyed. */
const CLOSE_GRACE_MS = 1000;

async function closeOrDestroy(client: { close(): Promise<unknown>; destroy(): void }): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const graceful = client.close().then(() => true, () => false);
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_GRACE_MS)));
  const closed = await Promise.race([graceful, late]);
  clearTimeout(timer);
  if (!closed) {
    try {
      client.destroy();
    } catch {
      // already gone
    }
  }
}
