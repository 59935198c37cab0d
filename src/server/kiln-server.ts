import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { hostname } from 'node:os';
import { KilnError } from '../errors/index.js';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame } from '../protocol/frame.js';
import { encodeBody, MessageType } from '../protocol/messages.js';
import { sessionLimitsOption, type SessionLimits } from '../session/limits.js';
import { Tier } from '../tier/tier.js';
import { createLogger, type Logger } from '../util/log.js';
import { listen } from '../util/net.js';
import { OptionReader } from '../util/options.js';
import { Connection, type ClientInfo } from './connection.js';
import { WaitingRoom } from './waiting-room.js';
import { HandshakeThrottle } from './handshake-throttle.js';
import { checkNamespaceName, DEFAULT_NAMESPACE, Namespace, namespaceOfKey, PRINCIPAL_KEY_EXTRA } from './namespaces.js';
import { checkTokenStrength, tlsCredentials } from '../util/secret-file.js';
import { AppendLog, DEFAULT_LOG_STALL_MS, DEFAULT_MAX_LOG_BACKLOG_BYTES, type FsyncPolicy, type LoadReport, type LogBacklog, type StopOutcome } from './storage/append-log.js';
import { readLastRepair, type RepairSummary } from './storage/last-repair.js';
import { Keyring, readKeyFile } from './storage/record-codec.js';
import { repairDataDir } from './storage/repair.js';

/**
 * The kiln server: the session tier behind a TCP port. One process, sessions in memory,
 * every change appended to disk before it is acknowledged (per the fsync policy).
 *
 * @example
 * const server = new KilnServer({ port: 9510, token: process.env.KILN_TOKEN, dataDir: './kiln-data' });
 * const { port } = await server.start();
 * process.on('SIGTERM', () => server.stop().then(({ clean }) => process.exit(clean ? 0 : 1)));
 */
export interface KilnServerOptions {
  host?: string;
  /** 0 picks a free port (start() returns it). Default 9510. */
  port?: number;
  /** Shared secret of the default namespace's clients (at least 32 bytes). A token or `tokens` is required unless `insecureNoAuth`. */
  token?: string;
  /**
   * More namespaces: name → token (each at least 32 bytes, each its own). A client's
   * token decides its namespace; it sees only that namespace's sessions, principals
   * and events (see namespaces.ts).
   */
  tokens?: Record<string, string>;
  /** Clients without a token, all in the default namespace. Only on a loopback `host`. */
  insecureNoAuth?: boolean;
  /** Where sessions are persisted; omitted = memory only (lost on restart). */
  dataDir?: string;
  fsync?: FsyncPolicy;
  /** Authenticated client connections at most (handshaking ones are counted apart). Default 10,000. */
  maxConnections?: number;
  /** Connections still before their handshake at most; one more closes the oldest of them. Default 128. */
  maxHandshaking?: number;
  /** Failed handshakes from one address within a minute after which its connections are refused at once (0 = never). Default 20. */
  handshakeFailureLimit?: number;
  /** Sessions held at most (0 = no limit); a create beyond it fails with KILN_ERR_SESSION_LIMIT. */
  maxSessions?: number;
  /** Sessions of one principal at most, per namespace (0 = no limit); a login beyond it fails with KILN_ERR_PRINCIPAL_SESSION_LIMIT. */
  maxSessionsPerPrincipal?: number;
  /** Leases one connection may hold; one more acquire fails with KILN_ERR_LEASE_LIMIT. Default 1,000,000 (ten times a client's default maxLeases); 0 = none. */
  maxLeasesPerConnection?: number;
  maxFrameBytes?: number;
  /** A connection that sends nothing (not even a ping) for this long is closed. Default 60 s. */
  idleConnectionTimeoutMs?: number;
  /** How long a new connection has to complete its handshake (the TLS one included). Default 2000 ms. */
  handshakeTimeoutMs?: number;
  limits?: Partial<SessionLimits>;
  recallTimeoutMs?: number;
  expirySweepMs?: number;
  touchGraceMs?: number;
  compactMinBytes?: number;
  /**
   * Bytes of log waiting to be written (fsync "always": synced) at which commits are
   * refused with KILN_ERR_STORAGE_BEHIND before they change anything, so a slow or stalled
   * disk cannot fill the server's memory. Default 64 MiB.
   */
  maxLogBacklogBytes?: number;
  /** A log write or sync outstanding this long (a stalled disk) also refuses commits. Default 5000 ms. */
  logStallMs?: number;
  /** Serve TLS (clients use kilns://): PEM certificate and key, as strings or file paths. */
  tls?: { cert: string; key: string };
  /**
   * Encrypt stored records (AES-256-GCM): a key file (`id:base64` lines, the first the
   * current key; see docs/security.md) or the keys themselves, the first the current one.
   */
  encryption?: { keyFile: string } | { keys: { id: string; key: Uint8Array }[] };
  /**
   * Repair a damaged data directory before loading it (as `kiln repair` does), when the
   * load would refuse it, and only then. Default false: damage refuses the start.
   */
  repair?: boolean;
  logger?: Logger;
}

export interface KilnServerInfo {
  serverId: string;
  host: string;
  port: number;
  epoch: string;
  startedAt: number;
  dataDir: string | undefined;
  fsync: FsyncPolicy;
  tls: boolean;
  loaded: LoadReport | undefined;
  /** The repair this start ran (`repair` option and a damaged directory), else undefined. */
  repaired: RepairSummary | undefined;
  /** The data directory's last repair (last-repair.json), this start's or an earlier one; null when none. */
  lastRepair: RepairSummary | null;
}

/** What the admin console and metrics watch on a running server. */
export type ServerActivity =
  | { type: 'client-joined' | 'client-left'; client: ClientInfo & { ownerId: string }; at: number }
  | { type: 'request'; message: number; ms: number; code: string | undefined; at: number };

const KNOWN = ['host', 'port', 'token', 'tokens', 'insecureNoAuth', 'dataDir', 'fsync', 'maxConnections', 'maxHandshaking', 'handshakeFailureLimit', 'maxSessions', 'maxSessionsPerPrincipal', 'maxLeasesPerConnection', 'maxFrameBytes', 'idleConnectionTimeoutMs', 'handshakeTimeoutMs', 'limits', 'recallTimeoutMs', 'expirySweepMs', 'touchGraceMs', 'compactMinBytes', 'maxLogBacklogBytes', 'logStallMs', 'tls', 'encryption', 'repair', 'logger'];

export class KilnServer {
  readonly tier: Tier;
  private readonly server: Server;
  private readonly connections = new Set<Connection>();
  private readonly storage: AppendLog | undefined;
  private readonly log: Logger;
  /** Token digests and the namespace each opens; empty with insecureNoAuth. */
  private readonly credentials: { digest: Buffer; namespace: Namespace }[] = [];
  private readonly namespaceList: Namespace[];
  private readonly defaultNamespace = new Namespace(DEFAULT_NAMESPACE);
  private readonly maxHandshaking: number;
  private readonly throttle: HandshakeThrottle;
  private readonly clientLimits: SessionLimits;
  /** Connections waiting for their Hello (see WaitingRoom). */
  private readonly handshaking: WaitingRoom<Connection>;
  /**
   * TLS only: sockets in their TLS handshake, before a Connection exists, under the same
   * cap; found again from the TLS socket by both ends' addresses and ports (the TLS
   * socket reads them from the same TCP handle; a peer's address and port alone may
   * repeat, towards another address of this host).
   */
  private readonly tlsHandshaking: WaitingRoom<Socket>;
  private readonly tlsSocketsByPeer = new Map<string, Socket>();
  private ready = 0;
  private readonly serverId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  private readonly host: string;
  private readonly port: number;
  private readonly maxConnections: number;
  private readonly maxFrameBytes: number;
  private readonly idleTimeoutMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly fsync: FsyncPolicy;
  private readonly dataDir: string | undefined;
  private nextConnectionId = 0;
  private readonly activityListeners = new Set<(event: ServerActivity) => void>();
  private stopping: Promise<StopOutcome> | undefined;
  private loaded: LoadReport | undefined;
  private readonly repairOnStart: boolean;
  private readonly keyring: Keyring | undefined;
  private repaired: RepairSummary | undefined;
  private lastRepair: RepairSummary | null = null;
  private boundPort = 0;
  private readonly startedAt = Date.now();

  constructor(options: KilnServerOptions = {}) {
    const o = new OptionReader('KilnServer', options, KNOWN);
    this.host = o.string('host', '127.0.0.1');
    this.port = o.int('port', 9510, 0, 65535);
    const token = o.string('token', undefined);
    const tokens = o.any('tokens') as Record<string, string> | undefined;
    const insecure = o.bool('insecureNoAuth', false);
    this.namespaceList = this.readCredentials(token, tokens, insecure);
    this.dataDir = o.string('dataDir', undefined);
    this.fsync = o.oneOf('fsync', ['always', 'everysec', 'never'], 'everysec');
    this.maxConnections = o.int('maxConnections', 10_000, 1);
    this.maxHandshaking = o.int('maxHandshaking', 128, 1);
    this.handshaking = new WaitingRoom(this.maxHandshaking);
    this.tlsHandshaking = new WaitingRoom(this.maxHandshaking);
    this.throttle = new HandshakeThrottle({ maxFailures: o.int('handshakeFailureLimit', 20, 0), windowMs: 60_000, maxEntries: 4096 });
    this.maxFrameBytes = o.int('maxFrameBytes', DEFAULT_MAX_FRAME_BYTES, 1024, 1 << 30);
    this.idleTimeoutMs = o.int('idleConnectionTimeoutMs', 60_000, 0);
    this.handshakeTimeoutMs = o.int('handshakeTimeoutMs', 2000, 1, 60_000);
    this.log = (o.any('logger') as Logger | undefined) ?? createLogger('kiln-server');
    if (options.encryption !== undefined && !this.dataDir) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "encryption" needs a "dataDir" (nothing is stored without one)', { details: { option: 'encryption' } });
    this.repairOnStart = o.bool('repair', false);
    if (this.repairOnStart && !this.dataDir) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "repair" needs a "dataDir"', { details: { option: 'repair' } });
    this.keyring = keyringOf(o.any('encryption'));
    // Storage reaches the tier lazily (dump, liveBytes): it is built first so the tier can append to it.
    if (this.dataDir) {
      this.storage = new AppendLog({
        dir: this.dataDir,
        fsync: this.fsync,
        compactMinBytes: o.int('compactMinBytes', 64 * 1024 * 1024, 64 * 1024),
        maxBacklogBytes: o.int('maxLogBacklogBytes', DEFAULT_MAX_LOG_BACKLOG_BYTES, 64 * 1024),
        stallMs: o.int('logStallMs', DEFAULT_LOG_STALL_MS, 100),
        liveBytes: () => this.tier.stats().sessionBytes + this.tier.sessionCount * 96,
        dump: () => this.tier.dump(),
        onError: (err) => this.log.error('storage error', { error: err.message }),
        onRecovered: (message) => this.log.warn('storage recovered', { message }),
        keyring: this.keyring,
      });
    }
    this.clientLimits = sessionLimitsOption(o.any('limits'), 'KilnServer');
    this.tier = new Tier({
      // The tier stores principal keys, which carry their namespace (see namespaces.ts);
      // connections hold clients to the limit itself.
      limits: { ...this.clientLimits, maxPrincipalLength: this.clientLimits.maxPrincipalLength + PRINCIPAL_KEY_EXTRA },
      maxSessions: o.int('maxSessions', 0, 0),
      maxSessionsPerPrincipal: o.int('maxSessionsPerPrincipal', 0, 0),
      maxLeasesPerOwner: o.int('maxLeasesPerConnection', 1_000_000, 0),
      keyGroup: namespaceOfKey,
      recallTimeoutMs: o.int('recallTimeoutMs', 3000, 1),
      expirySweepMs: o.int('expirySweepMs', 1000, 10),
      touchGraceMs: o.int('touchGraceMs', 2000, 0),
      storage: this.storage,
    });
    this.tier.onEvent((event) => {
      for (const conn of this.connections) conn.sendEvent(event);
    });
    const limits = this.clientLimits;
    if (limits.maxSessionBytes + 64 * 1024 > this.maxFrameBytes) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `KilnServer: maxFrameBytes (${this.maxFrameBytes}) must exceed limits.maxSessionBytes (${limits.maxSessionBytes}) by 64 KiB so any valid session fits in a frame`, { details: { option: 'maxFrameBytes' } });
    }
    const tls = o.any('tls') as KilnServerOptions['tls'];
    if (tls !== undefined && (typeof tls?.cert !== 'string' || typeof tls?.key !== 'string')) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "tls" must be { cert, key } (PEM text or file paths)', { details: { option: 'tls' } });
    }
    this.secure = tls !== undefined;
    this.server = tls
      ? // An unfinished TLS handshake holds a socket before accept() sees it: the same short deadline.
        createTlsServer({ ...tlsCredentials(tls, 'KilnServer'), handshakeTimeout: this.handshakeTimeoutMs }, (socket) => this.accept(socket))
      : createServer((socket) => this.accept(socket));
    if (tls) {
      // A throttled address gets no TLS handshake either (the expensive part), and a
      // failed or timed-out TLS handshake counts against its address like a bad Hello.
      this.server.on('connection', (socket: Socket) => this.enterTlsHandshake(socket));
      this.server.on('tlsClientError', (_err: Error, socket: Socket) => {
        // A failed or timed-out TLS handshake counts against its address, once: it leaves
        // the waiting room here. A reset one has no address left to read here; its raw
        // socket's close counts it (enterTlsHandshake).
        if (socket.remoteAddress !== undefined) {
          const raw = this.tlsSocketsByPeer.get(tcpKey(socket));
          if (raw) this.tlsHandshaking.leave(raw);
          this.throttle.failed(socket.remoteAddress, Date.now());
        }
        socket.destroy();
      });
    }
  }

  private readonly secure: boolean;

  /** Loads the data directory, then listens. */
  async start(): Promise<KilnServerInfo> {
    try {
      return await this.loadAndListen();
    } catch (err) {
      // A start that fails gives the directory back (its lock, the log file, the sync timer).
      await this.storage?.close().catch(() => undefined);
      throw err;
    }
  }

  private async loadAndListen(): Promise<KilnServerInfo> {
    if (this.storage && this.dataDir) {
      // A directory not made yet (a first start) has nothing to repair.
      if (this.repairOnStart && existsSync(this.dataDir)) {
        // Read first, apart from the tier: a load that refuses has already applied records up to the damage.
        const summary = await repairDataDir({ dir: this.dataDir, keyring: this.keyring, progress: (line) => this.log.info(`repair: ${line}`) });
        if (summary.repaired) {
          this.repaired = summary;
          this.log.warn('storage: data directory repaired', { kept: summary.sessionsKept, dropped: summary.sessionsDropped, ...summary.dropped, damagedSpots: summary.damagedSpots, bytesSkipped: summary.bytesSkipped, movedTo: summary.movedTo });
        }
      }
      this.loaded = this.storage.load((record) => this.tier.restore(record));
      await this.storage.open();
      const { tornTail, ...loaded } = this.loaded;
      this.log.info('data loaded', { dir: this.dataDir, sessions: this.tier.sessionCount, ...loaded });
      // Warn, not info: a cut tail is normal after a crash, but an operator at --log-level warn must still see it.
      if (tornTail) this.log.warn('storage: torn tail cut off the newest log (a write interrupted by a crash; it was never acknowledged)', { ...tornTail });
      if (this.loaded.emptyLogsRemoved > 0) this.log.warn('storage: removed logs cut short inside their header (a crash while a log was being started; they held no record)', { logs: this.loaded.emptyLogsRemoved });
      this.lastRepair = readLastRepair(this.dataDir, (message, fields) => this.log.warn(message, fields));
    }
    this.boundPort = await listen(this.server, this.port, this.host, 'the kiln server (port, --port)');
    this.log.info('listening', { host: this.host, port: this.boundPort, epoch: this.tier.epoch, fsync: this.fsync, tls: this.secure });
    return this.info();
  }

  info(): KilnServerInfo {
    return { serverId: this.serverId, host: this.host, port: this.boundPort, epoch: this.tier.epoch, startedAt: this.startedAt, dataDir: this.dataDir, fsync: this.fsync, tls: this.secure, loaded: this.loaded, repaired: this.repaired, lastRepair: this.lastRepair };
  }

  clients(): (ClientInfo & { ownerId: string; leases: number; requests: number; stats: Record<string, unknown> | null })[] {
    return [...this.connections]
      .filter((c) => c.isReady)
      .map((c) => ({ ...c.info, ownerId: c.ownerId, leases: this.tier.leasesHeldBy(c.ownerId), requests: c.counters.requests, stats: c.clientStats ?? null }));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** The namespaces clients can reach, the default one first. */
  namespaces(): readonly Namespace[] {
    return this.namespaceList;
  }

  onActivity(listener: (event: ServerActivity) => void): () => void {
    this.activityListeners.add(listener);
    return () => this.activityListeners.delete(listener);
  }

  /** Storage figures for the admin console (undefined without a data directory). */
  storageInfo(): { dataDir: string; fsync: FsyncPolicy; bytesOnDisk: number; backlog: LogBacklog; refusing: string | undefined; counters: Record<string, number> } | undefined {
    if (!this.storage || !this.dataDir) return undefined;
    const now = Date.now();
    return { dataDir: this.dataDir, fsync: this.fsync, bytesOnDisk: this.storage.bytesOnDisk, backlog: this.storage.backlog(now), refusing: this.storage.refusal(now), counters: { ...this.storage.counters } };
  }

  private announce(event: ServerActivity): void {
    for (const listener of this.activityListeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is its own.
      }
    }
  }

  /**
   * Graceful stop: no new connections or requests, in-flight commits finish and reach
   * the disk, then every connection closes. Safe to call twice. Resolves `{ clean: false }`
   * when the data directory's last writes could not be made sure of (a disk that hung or
   * failed at stop; the log said why), so a supervisor can tell.
   *
   * @example
   * const { clean } = await server.stop();
   * process.exitCode = clean ? 0 : 1;
   */
  stop(): Promise<StopOutcome> {
    if (!this.stopping) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<StopOutcome> {
    this.log.info('stopping');
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const conn of this.connections) conn.close();
      // Sockets still in their TLS handshake would hold close() up to their deadline.
      for (const socket of this.tlsSocketsByPeer.values()) socket.destroy();
    });
    this.tier.close();
    const outcome = (await this.storage?.close()) ?? { clean: true };
    if (outcome.clean) this.log.info('stopped');
    else this.log.error('stopped, but not cleanly: the last writes to the data directory could not be made sure of (see the storage errors above)');
    return outcome;
  }

  /**
   * A TLS server's new socket, before its TLS handshake: the throttle and the handshake
   * cap apply from here, not from the Hello, or sockets in a TLS handshake (each held up
   * to --handshake-timeout-ms) could be opened without bound from many addresses.
   */
  private enterTlsHandshake(socket: Socket): void {
    const address = socket.remoteAddress;
    if (address === undefined || this.throttle.blocked(address, Date.now())) {
      socket.destroy();
      return;
    }
    const pushedOut = this.tlsHandshaking.makeRoom();
    if (pushedOut) {
      if (pushedOut.blame) this.throttle.failed(pushedOut.address, Date.now());
      pushedOut.key.destroy();
    }
    const peer = tcpKey(socket);
    this.tlsHandshaking.enter(socket, address);
    this.tlsSocketsByPeer.set(peer, socket);
    socket.once('close', () => {
      // Closed while still waiting (not admitted, not pushed out, not counted as a TLS
      // error) after sending something: a TLS handshake the peer began (the server's key
      // exchange and signature done for it) and reset. A bare connect and close (a TCP
      // health check) sent nothing, and is no more a failure than on a plain port.
      if (this.tlsHandshaking.has(socket) && socket.bytesRead > 0) this.throttle.failed(address, Date.now());
      // Only while this socket holds the entry: another one from the same ends since does not leave with it.
      if (this.tlsSocketsByPeer.get(peer) === socket) this.leaveTlsHandshake(peer);
    });
  }

  /** The TLS handshake of the socket from `peer` ended (done, failed, or pushed out). */
  private leaveTlsHandshake(peer: string): void {
    const socket = this.tlsSocketsByPeer.get(peer);
    if (socket === undefined) return;
    this.tlsSocketsByPeer.delete(peer);
    this.tlsHandshaking.leave(socket);
  }

  private accept(socket: Socket): void {
    if (this.secure) this.leaveTlsHandshake(tcpKey(socket));
    if (this.stopping) {
      refuse(socket, new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'the server is stopping'));
      return;
    }
    // Anonymous peers are held apart from clients: they have a cap of their own, a short
    // deadline and a small frame limit, so they can never take the room of an app server.
    const address = socket.remoteAddress ?? '?';
    if (this.throttle.blocked(address, Date.now())) {
      refuse(socket, new KilnError('KILN_ERR_HANDSHAKE_THROTTLED', 'too many failed handshakes from this address; try again later'));
      return;
    }
    const pushedOut = this.handshaking.makeRoom();
    if (pushedOut) pushedOut.key.fail(new KilnError('KILN_ERR_TOO_MANY_CONNECTIONS', `the server holds its limit of ${this.maxHandshaking} connections waiting for their handshake`), pushedOut.blame);
    const conn = new Connection(socket, ++this.nextConnectionId, {
      tier: this.tier,
      log: this.log,
      serverId: this.serverId,
      checkToken: (token) => this.checkToken(token),
      limits: this.clientLimits,
      maxFrameBytes: this.maxFrameBytes,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      idleTimeoutMs: this.idleTimeoutMs,
      maxAcquireTimeoutMs: 60_000,
      maxInflight: 4096,
      maxBufferedBytes: 64 * 1024 * 1024,
      shuttingDown: () => this.stopping !== undefined,
      admit: (c) => {
        this.handshaking.leave(c);
        this.throttle.succeeded(address);
        if (this.ready >= this.maxConnections) {
          this.log.warn('connection refused: maxConnections reached', { maxConnections: this.maxConnections, client: c.info.address });
          return false;
        }
        this.ready++;
        return true;
      },
      onHandshakeFailed: (c) => {
        this.handshaking.leave(c);
        this.throttle.failed(address, Date.now());
      },
      onClosed: (c) => {
        this.connections.delete(c);
        this.handshaking.leave(c);
        if (c.isAttachedOnce) this.ready--;
        if (c.isAttachedOnce) this.announce({ type: 'client-left', client: { ...c.info, ownerId: c.ownerId }, at: Date.now() });
      },
      onReady: (c) => this.announce({ type: 'client-joined', client: { ...c.info, ownerId: c.ownerId }, at: Date.now() }),
      // Nobody watching (no console, no metrics): no timing on the request path.
      watched: () => this.activityListeners.size > 0,
      onAnswered: (message, ms, code) => this.announce({ type: 'request', message, ms, code, at: Date.now() }),
    });
    this.connections.add(conn);
    this.handshaking.enter(conn, address);
  }

  private checkToken(token: string): Namespace | undefined {
    if (this.credentials.length === 0) return this.defaultNamespace;
    // Comparing fixed-length digests keeps the comparison constant-time whatever the
    // length of the guess; every digest is compared, so the time says nothing of which matched.
    const guess = digest(token);
    let found: Namespace | undefined;
    for (const c of this.credentials) if (timingSafeEqual(guess, c.digest)) found = c.namespace;
    return found;
  }

  private readCredentials(token: string | undefined, tokens: Record<string, string> | undefined, insecure: boolean): Namespace[] {
    if (tokens !== undefined && (typeof tokens !== 'object' || tokens === null || Array.isArray(tokens))) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "tokens" must be an object of namespace → token', { details: { option: 'tokens' } });
    }
    const entries = Object.entries(tokens ?? {});
    if (insecure) {
      if (token || entries.length > 0) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: insecureNoAuth cannot go with "token" or "tokens"', { details: { option: 'insecureNoAuth' } });
      if (!isLoopback(this.host)) {
        throw new KilnError('KILN_ERR_INVALID_OPTION', `KilnServer: insecureNoAuth only on a loopback host (127.0.0.1, ::1, localhost), not ${JSON.stringify(this.host)}: anyone who reaches the port would own every session`, { details: { option: 'insecureNoAuth' } });
      }
      return [this.defaultNamespace];
    }
    if (!token && entries.length === 0) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "token" (or "tokens") is required (or set insecureNoAuth on a loopback host)', { details: { option: 'token' } });
    const out: Namespace[] = [];
    const add = (name: string, secret: unknown, option: string): void => {
      if (typeof secret !== 'string') throw new KilnError('KILN_ERR_INVALID_OPTION', `KilnServer: option "${option}" must be a string`, { details: { option } });
      checkTokenStrength(secret, `KilnServer: option "${option}"`);
      const d = digest(secret);
      if (this.credentials.some((c) => c.digest.equals(d))) throw new KilnError('KILN_ERR_INVALID_OPTION', `KilnServer: option "${option}" repeats another namespace's token; each namespace needs its own`, { details: { option } });
      const namespace = name === DEFAULT_NAMESPACE ? this.defaultNamespace : new Namespace(name);
      this.credentials.push({ digest: d, namespace });
      out.push(namespace);
    };
    if (token) add(DEFAULT_NAMESPACE, token, 'token');
    for (const [name, secret] of entries) {
      checkNamespaceName(name, `KilnServer: option "tokens"`);
      if (name === DEFAULT_NAMESPACE && token) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: "tokens" names the default namespace and "token" gives it too', { details: { option: 'tokens' } });
      add(name, secret, `tokens.${name}`);
    }
    return out.sort((a, b) => (a.isDefault ? -1 : b.isDefault ? 1 : a.name < b.name ? -1 : 1));
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || /^::ffff:127\./i.test(host);
}

function keyringOf(encryption: unknown): Keyring | undefined {
  if (encryption === undefined) return undefined;
  const e = encryption as { keyFile?: unknown; keys?: unknown };
  if (typeof e?.keyFile === 'string' && e.keys === undefined) return readKeyFile(e.keyFile);
  if (Array.isArray(e?.keys) && e.keyFile === undefined) return new Keyring(e.keys as { id: string; key: Uint8Array }[]);
  throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "encryption" must be { keyFile } or { keys: [{ id, key }] }', { details: { option: 'encryption' } });
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

function refuse(socket: Socket, error: KilnError): void {
  socket.on('error', () => undefined);
  socket.end(encodeFrame(MessageType.Error, 0, encodeBody(error.toJSON())));
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** One TCP connection's ends, as its raw socket and its TLS socket both report them. */
function tcpKey(socket: Socket): string {
  return `${socket.localAddress}|${socket.localPort}|${socket.remoteAddress}|${socket.remotePort}`;
}
