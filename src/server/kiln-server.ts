import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { hostname } from 'node:os';
import { KilnError } from '../errors/index.js';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame } from '../protocol/frame.js';
import { encodeBody, MessageType } from '../protocol/messages.js';
import type { SessionLimits } from '../session/limits.js';
import { Tier } from '../tier/tier.js';
import { createLogger, type Logger } from '../util/log.js';
import { listen } from '../util/net.js';
import { OptionReader } from '../util/options.js';
import { Connection, type ClientInfo } from './connection.js';
import { AppendLog, type FsyncPolicy, type LoadReport } from './storage/append-log.js';
import { Keyring, readKeyFile } from './storage/record-codec.js';

/**
 * The kiln server: the session tier behind a TCP port. One process, sessions in memory,
 * every change appended to disk before it is acknowledged (per the fsync policy).
 *
 * @example
 * const server = new KilnServer({ port: 9510, token: process.env.KILN_TOKEN, dataDir: './kiln-data' });
 * const { port } = await server.start();
 * process.on('SIGTERM', () => server.stop().then(() => process.exit(0)));
 */
export interface KilnServerOptions {
  host?: string;
  /** 0 picks a free port (start() returns it). Default 9510. */
  port?: number;
  /** Shared secret clients must present. Required unless `insecureNoAuth`. */
  token?: string;
  insecureNoAuth?: boolean;
  /** Where sessions are persisted; omitted = memory only (lost on restart). */
  dataDir?: string;
  fsync?: FsyncPolicy;
  maxConnections?: number;
  maxFrameBytes?: number;
  /** A connection that sends nothing (not even a ping) for this long is closed. Default 60 s. */
  idleConnectionTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  limits?: Partial<SessionLimits>;
  recallTimeoutMs?: number;
  expirySweepMs?: number;
  touchGraceMs?: number;
  compactMinBytes?: number;
  /** Serve TLS (clients use kilns://): PEM certificate and key, as strings or file paths. */
  tls?: { cert: string; key: string };
  /**
   * Encrypt stored records (AES-256-GCM): a key file (`id:base64` lines, the first the
   * current key; see docs/security.md) or the keys themselves, the first the current one.
   */
  encryption?: { keyFile: string } | { keys: { id: string; key: Uint8Array }[] };
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
}

/** What the admin console and metrics watch on a running server. */
export type ServerActivity =
  | { type: 'client-joined' | 'client-left'; client: ClientInfo & { ownerId: string }; at: number }
  | { type: 'request'; message: number; ms: number; code: string | undefined; at: number };

const KNOWN = ['host', 'port', 'token', 'insecureNoAuth', 'dataDir', 'fsync', 'maxConnections', 'maxFrameBytes', 'idleConnectionTimeoutMs', 'handshakeTimeoutMs', 'limits', 'recallTimeoutMs', 'expirySweepMs', 'touchGraceMs', 'compactMinBytes', 'tls', 'encryption', 'logger'];

export class KilnServer {
  readonly tier: Tier;
  private readonly server: Server;
  private readonly connections = new Set<Connection>();
  private readonly storage: AppendLog | undefined;
  private readonly log: Logger;
  private readonly tokenDigest: Buffer | undefined;
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
  private stopping: Promise<void> | undefined;
  private loaded: LoadReport | undefined;
  private boundPort = 0;
  private readonly startedAt = Date.now();

  constructor(options: KilnServerOptions = {}) {
    const o = new OptionReader('KilnServer', options, KNOWN);
    this.host = o.string('host', '127.0.0.1');
    this.port = o.int('port', 9510, 0, 65535);
    const token = o.string('token', undefined);
    const insecure = o.bool('insecureNoAuth', false);
    if (!token && !insecure) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "token" is required (or set insecureNoAuth for a trusted network)', { details: { option: 'token' } });
    this.tokenDigest = token ? digest(token) : undefined;
    this.dataDir = o.string('dataDir', undefined);
    this.fsync = o.oneOf('fsync', ['always', 'everysec', 'never'], 'everysec');
    this.maxConnections = o.int('maxConnections', 10_000, 1);
    this.maxFrameBytes = o.int('maxFrameBytes', DEFAULT_MAX_FRAME_BYTES, 1024, 1 << 30);
    this.idleTimeoutMs = o.int('idleConnectionTimeoutMs', 60_000, 0);
    this.handshakeTimeoutMs = o.int('handshakeTimeoutMs', 5000, 1);
    this.log = (o.any('logger') as Logger | undefined) ?? createLogger('kiln-server');
    if (options.encryption !== undefined && !this.dataDir) throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "encryption" needs a "dataDir" (nothing is stored without one)', { details: { option: 'encryption' } });
    // Storage reaches the tier lazily (dump, liveBytes): it is built first so the tier can append to it.
    if (this.dataDir) {
      this.storage = new AppendLog({
        dir: this.dataDir,
        fsync: this.fsync,
        compactMinBytes: o.int('compactMinBytes', 64 * 1024 * 1024, 0),
        liveBytes: () => this.tier.stats().sessionBytes + this.tier.sessionCount * 96,
        dump: () => this.tier.dump(),
        onError: (err) => this.log.error('storage error', { error: err.message }),
        keyring: keyringOf(o.any('encryption')),
      });
    }
    this.tier = new Tier({
      limits: o.any('limits') as Partial<SessionLimits> | undefined,
      recallTimeoutMs: o.int('recallTimeoutMs', 3000, 1),
      expirySweepMs: o.int('expirySweepMs', 1000, 10),
      touchGraceMs: o.int('touchGraceMs', 2000, 0),
      storage: this.storage,
    });
    this.tier.onEvent((event) => {
      for (const conn of this.connections) conn.sendEvent(event);
    });
    const limits = this.tier.limits;
    if (limits.maxSessionBytes + 64 * 1024 > this.maxFrameBytes) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `KilnServer: maxFrameBytes (${this.maxFrameBytes}) must exceed limits.maxSessionBytes (${limits.maxSessionBytes}) by 64 KiB so any valid session fits in a frame`, { details: { option: 'maxFrameBytes' } });
    }
    const tls = o.any('tls') as KilnServerOptions['tls'];
    if (tls !== undefined && (typeof tls?.cert !== 'string' || typeof tls?.key !== 'string')) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'KilnServer: option "tls" must be { cert, key } (PEM text or file paths)', { details: { option: 'tls' } });
    }
    this.secure = tls !== undefined;
    this.server = tls
      ? createTlsServer({ cert: pem(tls.cert), key: pem(tls.key) }, (socket) => this.accept(socket))
      : createServer((socket) => this.accept(socket));
  }

  private readonly secure: boolean;

  /** Loads the data directory, then listens. */
  async start(): Promise<KilnServerInfo> {
    if (this.storage) {
      this.loaded = this.storage.load((record) => this.tier.restore(record));
      await this.storage.open();
      this.log.info('data loaded', { dir: this.dataDir, sessions: this.tier.sessionCount, ...this.loaded });
    }
    this.boundPort = await listen(this.server, this.port, this.host);
    this.log.info('listening', { host: this.host, port: this.boundPort, epoch: this.tier.epoch, fsync: this.fsync, tls: this.secure });
    return this.info();
  }

  info(): KilnServerInfo {
    return { serverId: this.serverId, host: this.host, port: this.boundPort, epoch: this.tier.epoch, startedAt: this.startedAt, dataDir: this.dataDir, fsync: this.fsync, tls: this.secure, loaded: this.loaded };
  }

  clients(): (ClientInfo & { ownerId: string; leases: number; requests: number; stats: Record<string, unknown> | null })[] {
    return [...this.connections]
      .filter((c) => c.isReady)
      .map((c) => ({ ...c.info, ownerId: c.ownerId, leases: this.tier.leasesHeldBy(c.ownerId), requests: c.counters.requests, stats: c.clientStats ?? null }));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  onActivity(listener: (event: ServerActivity) => void): () => void {
    this.activityListeners.add(listener);
    return () => this.activityListeners.delete(listener);
  }

  /** Storage figures for the admin console (undefined without a data directory). */
  storageInfo(): { dataDir: string; fsync: FsyncPolicy; bytesOnDisk: number; counters: Record<string, number> } | undefined {
    if (!this.storage || !this.dataDir) return undefined;
    return { dataDir: this.dataDir, fsync: this.fsync, bytesOnDisk: this.storage.bytesOnDisk, counters: { ...this.storage.counters } };
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
   * the disk, then every connection closes. Safe to call twice.
   */
  stop(): Promise<void> {
    if (!this.stopping) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.log.info('stopping');
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const conn of this.connections) conn.close();
    });
    this.tier.close();
    await this.storage?.close();
    this.log.info('stopped');
  }

  private accept(socket: Socket): void {
    if (this.stopping) {
      refuse(socket, new KilnError('KILN_ERR_SERVER_SHUTTING_DOWN', 'the server is stopping'));
      return;
    }
    if (this.connections.size >= this.maxConnections) {
      this.log.warn('connection refused: maxConnections reached', { maxConnections: this.maxConnections, client: socket.remoteAddress });
      refuse(socket, new KilnError('KILN_ERR_TOO_MANY_CONNECTIONS', `the server holds its limit of ${this.maxConnections} connections`));
      return;
    }
    const conn = new Connection(socket, ++this.nextConnectionId, {
      tier: this.tier,
      log: this.log,
      serverId: this.serverId,
      checkToken: (token) => this.checkToken(token),
      maxFrameBytes: this.maxFrameBytes,
      handshakeTimeoutMs: this.handshakeTimeoutMs,
      idleTimeoutMs: this.idleTimeoutMs,
      maxAcquireTimeoutMs: 60_000,
      maxInflight: 4096,
      maxBufferedBytes: 64 * 1024 * 1024,
      shuttingDown: () => this.stopping !== undefined,
      onClosed: (c) => {
        this.connections.delete(c);
        if (c.isAttachedOnce) this.announce({ type: 'client-left', client: { ...c.info, ownerId: c.ownerId }, at: Date.now() });
      },
      onReady: (c) => this.announce({ type: 'client-joined', client: { ...c.info, ownerId: c.ownerId }, at: Date.now() }),
      // Nobody watching (no console, no metrics): no timing on the request path.
      watched: () => this.activityListeners.size > 0,
      onAnswered: (message, ms, code) => this.announce({ type: 'request', message, ms, code, at: Date.now() }),
    });
    this.connections.add(conn);
  }

  private checkToken(token: string): boolean {
    if (!this.tokenDigest) return true;
    // Comparing fixed-length digests keeps the comparison constant-time whatever the length of the guess.
    return timingSafeEqual(digest(token), this.tokenDigest);
  }
}

/** PEM text as is; anything else is a path to read it from. */
function pem(value: string): string {
  return value.includes('-----BEGIN') ? value : readFileSync(value, 'utf8');
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
