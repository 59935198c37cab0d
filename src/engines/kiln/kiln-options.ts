/**
 * What `connect(url, options)` accepts and what it resolves to. Rule kept: every option
 * is read and checked once, when the engine is made, so a typo or a bad URL fails at
 * start-up (KILN_ERR_INVALID_OPTION) and never on the first request.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { ConnectionOptions } from 'node:tls';
import { KilnError } from '../../errors/index.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../../protocol/frame.js';
import { defaultReconnect } from '../../util/backoff.js';
import { redactCredentials } from '../../util/log.js';
import { checkTokenStrength, readTokenFile } from '../../util/secret-file.js';
import { OptionReader } from '../../util/options.js';
import { DEFAULT_ACQUIRE_TIMEOUT_MS, DEFAULT_OPERATION_TIMEOUT_MS } from '../engine.js';

export interface KilnEngineOptions {
  /** Shared secret; else read from tokenFile, else from the KILN_TOKEN environment variable. */
  token?: string;
  tokenFile?: string;
  /** Shown in the server's client list. */
  name?: string;
  app?: string;
  connectTimeoutMs?: number;
  operationTimeoutMs?: number;
  acquireTimeoutMs?: number;
  /**
   * Delay before reconnect attempt `attempt` (1, 2, …), or false to give up. Default:
   * 50 ms doubling to 2 s, each delay jittered to between half and all of it.
   */
  reconnect?: (attempt: number, cause: Error | undefined) => number | false;
  /** Heartbeat interval; default a third of the server's idle timeout (at most 10 s). */
  pingIntervalMs?: number;
  /** TLS options for `kilns://` URLs. */
  tls?: ConnectionOptions;
  maxFrameBytes?: number;
}

/** The options with their defaults applied and the URL taken apart. */
export interface ResolvedKilnOptions {
  host: string;
  port: number;
  secure: boolean;
  token: string;
  ownerId: string;
  app: string;
  connectTimeoutMs: number;
  operationTimeoutMs: number;
  acquireTimeoutMs: number;
  reconnect: (attempt: number, cause: Error | undefined) => number | false;
  /** undefined: derived from the server's idle timeout (see pingIntervalFor). */
  pingIntervalMs: number | undefined;
  tls: ConnectionOptions | undefined;
  maxFrameBytes: number;
}

export function resolveKilnOptions(url: string, options: KilnEngineOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedKilnOptions {
  const o = new OptionReader('connect', options, ['token', 'tokenFile', 'name', 'app', 'connectTimeoutMs', 'operationTimeoutMs', 'acquireTimeoutMs', 'reconnect', 'pingIntervalMs', 'tls', 'maxFrameBytes']);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // What is wrong, said without echoing the part that is (it may be a password cut short).
    const port = /^kilns?:\/\/(?:[^@/]*@)?(?:\[[^\]]*\]|[^:/]*):([^/]*)/i.exec(url)?.[1];
    const why = port !== undefined && !/^\d{1,5}$/.test(port) ? 'its port is not a number from 1 to 65535' : port !== undefined && Number(port) > 65535 ? 'its port is above 65535' : 'it does not parse as a URL';
    throw new KilnError('KILN_ERR_INVALID_OPTION', `connect: the engine URL ${JSON.stringify(redactCredentials(url).slice(0, 80))} is not like kiln://127.0.0.1:9510: ${why}`, { details: { option: 'url' } });
  }
  if (parsed.protocol !== 'kiln:' && parsed.protocol !== 'kilns:') throw new KilnError('KILN_ERR_INVALID_OPTION', `connect: URL scheme must be kiln:// or kilns:// (got ${parsed.protocol}//)`, { details: { option: 'url' } });
  const tokenFile = o.string('tokenFile', undefined);
  const token = clientToken(o.string('token', undefined), tokenFile, parsed, env);
  const name = o.string('name', `${hostname()}-${process.pid}`);
  return {
    secure: parsed.protocol === 'kilns:',
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1',
    port: parsed.port ? Number(parsed.port) : 9510,
    token,
    ownerId: `${name}-${randomBytes(3).toString('hex')}`,
    app: o.string('app', process.argv[1]?.split('/').pop() ?? 'node'),
    connectTimeoutMs: o.int('connectTimeoutMs', 5000, 1),
    operationTimeoutMs: o.int('operationTimeoutMs', DEFAULT_OPERATION_TIMEOUT_MS, 1),
    acquireTimeoutMs: o.int('acquireTimeoutMs', DEFAULT_ACQUIRE_TIMEOUT_MS, 1),
    reconnect: o.fn<(attempt: number, cause: Error | undefined) => number | false>('reconnect') ?? defaultReconnect,
    pingIntervalMs: o.int('pingIntervalMs', 0, 0) || undefined,
    tls: o.any('tls') as ConnectionOptions | undefined,
    maxFrameBytes: o.int('maxFrameBytes', DEFAULT_MAX_FRAME_BYTES, 1024),
  };
}

/**
 * The token, from the first place that gives one: option "token", option "tokenFile", the
 * URL's password, KILN_TOKEN; '' when none does (a server run with insecureNoAuth). A
 * token shorter than any kiln server accepts (MIN_TOKEN_BYTES) is refused here, naming
 * where it came from, rather than as a failed handshake at every connection attempt.
 */
function clientToken(option: string | undefined, tokenFile: string | undefined, url: URL, env: NodeJS.ProcessEnv): string {
  if (option !== undefined) {
    checkTokenStrength(option, 'connect: option "token"');
    return option;
  }
  if (tokenFile) return readTokenFile(tokenFile, 'connect: option "tokenFile"');
  if (url.password) {
    let fromUrl: string;
    try {
      fromUrl = decodeURIComponent(url.password);
    } catch (err) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'connect: the token in the engine URL is not valid percent-encoding', { cause: err, details: { option: 'url' } });
    }
    checkTokenStrength(fromUrl, 'connect: the token in the engine URL');
    return fromUrl;
  }
  const fromEnv = env['KILN_TOKEN'] ?? '';
  if (fromEnv !== '') checkTokenStrength(fromEnv, 'connect: KILN_TOKEN');
  return fromEnv;
}
