import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { KilnError } from '../../errors/index.js';
import { AdminServer, packageVersion } from '../../console/admin-server.js';
import { generatedAdminToken } from '../../console/admin-token.js';
import { redactList } from '../../console/preview.js';
import { KilnServerSource } from '../../console/kiln-server-source.js';
import { KilnServer } from '../../server/kiln-server.js';
import { readTokensFile } from '../../server/namespaces.js';
import { checkTokenStrength, readTokenFile } from '../../util/secret-file.js';
import { createLogger } from '../../util/log.js';
import { hostFlag, intFlag, logLevelFlag } from '../args.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln server [options]

Runs the kiln server: the session tier app servers connect to.

Options:
  --host <addr>              address to listen on (default 127.0.0.1)
  --port <n>                 TCP port (default 9510; 0 = any free port)
  --data <dir>               data directory; sessions survive restarts (default ./kiln-data)
  --no-data                  keep sessions in memory only
  --encryption-key-file <file>  encrypt stored records (AES-256-GCM); lines "id:base64-32-bytes",
                             the first the current key; the file must be mode 600
  --repair                   when the data directory is damaged (KILN_ERR_STORAGE_DAMAGED), repair
                             it first as \`kiln repair\` does; a sound one is loaded as it is
  --fsync <policy>           always | everysec | never (default everysec)
  --max-log-backlog-bytes <n>  log bytes waiting for the disk at which commits are refused
                             with KILN_ERR_STORAGE_BEHIND, changing nothing (default 67108864)
  --log-stall-ms <n>         a log write or sync waiting this long on the disk refuses
                             commits too (default 5000)
  --compact-min-bytes <n>    rewrite the logs as one snapshot once they pass this size and
                             twice the live data (default 67108864, at least 65536)
  --token-file <file>        file holding the default namespace's token, 32 bytes or more
                             (else KILN_TOKEN)
  --tokens-file <file>       more namespaces, one a line: "<namespace> <token>" or
                             "<namespace> @<token file>"; a client's token picks its
                             namespace, which is all it can see
  --insecure-no-auth         accept clients without a token (loopback --host only)
  --tls-cert <file>          serve TLS with this PEM certificate (clients use kilns://)
  --tls-key <file>           the certificate's PEM private key
  --max-connections <n>      authenticated client connections (default 10000)
  --max-handshaking <n>      connections before their handshake, counted apart (default 128)
  --handshake-timeout-ms <n> time a new connection has to authenticate (default 2000)
  --handshake-failure-limit <n>  failed handshakes per address and minute before its
                             connections are refused at once (default 20; 0 = off)
  --max-sessions <n>         sessions held at most; one more create fails with
                             KILN_ERR_SESSION_LIMIT (default 0 = no limit)
  --max-sessions-per-principal <n>  sessions per principal (per namespace); one more login
                             fails with KILN_ERR_PRINCIPAL_SESSION_LIMIT (default 0 = no limit)
  --max-leases-per-connection <n>  leases one client connection may hold; one more acquire
                             fails with KILN_ERR_LEASE_LIMIT (default 1000000; 0 = no limit)
  --max-frame-bytes <n>      default 8388608
  --max-session-bytes <n>    default 4194304
  --max-attribute-bytes <n>  default 1048576
  --max-attributes <n>       default 1000
  --idle-connection-ms <n>   close connections silent this long (default 60000; 0 = never)
  --recall-timeout-ms <n>    how long a holder has to hand a session over (default 3000)
  --expiry-sweep-ms <n>      expiry resolution (default 1000)
  --touch-grace-ms <n>       slack for a lease holder's batched touches before idle expiry (default 2000)
  --heap-growth-percent <n>  how far V8's old generation may grow past live data before a full
                             collection (default 30; 0 = V8's own rule, up to 4x)
  --admin-port <n>           serve the admin API, the console data and /metrics on this port (0 = any);
                             HTTPS with the --tls-cert/--tls-key certificate when given
  --admin-host <addr>        address of the admin port (default 127.0.0.1, whatever --host is:
                             it can read and invalidate every session; name an operations network)
  --admin-token-file <file>  admin bearer token, at least 32 bytes (default: one generated into
                             <data dir>/admin.token, or a new temp dir without data, removed at
                             exit; mode 0600; the admin line says where; never the client token)
  --admin-read-token-file <file>  read-only bearer token, at least 32 bytes
  --admin-redact <list>      comma list of attribute/key names whose values the console hides from
                             everybody, matched case-insensitively as substrings (default
                             password,passwd,token,secret,csrf,authorization,cookie,key; '' = none)
  --log-level <level>        debug | info | warn | error | silent (default info)
  -h, --help                 this help

On start it prints one line: "kiln server ready on <host>:<port> ..." (stdout).
SIGTERM or SIGINT: stops accepting, finishes in-flight commits, flushes, exits 0; exits 1
when a log write or sync that has not moved for --log-stall-ms was given up, a write that
keeps failing was given up at its third failure after the stop began, or a sync failed
(the log's lines say which; the data directory may lack the last commits).
`;

/** The numeric flags that are KilnServerOptions of another name, as [flag, option]. */
const NUMERIC_FLAGS = [
  ['max-log-backlog-bytes', 'maxLogBacklogBytes'],
  ['log-stall-ms', 'logStallMs'],
  ['compact-min-bytes', 'compactMinBytes'],
  ['max-connections', 'maxConnections'],
  ['max-handshaking', 'maxHandshaking'],
  ['handshake-timeout-ms', 'handshakeTimeoutMs'],
  ['handshake-failure-limit', 'handshakeFailureLimit'],
  ['max-sessions', 'maxSessions'],
  ['max-sessions-per-principal', 'maxSessionsPerPrincipal'],
  ['max-leases-per-connection', 'maxLeasesPerConnection'],
  ['max-frame-bytes', 'maxFrameBytes'],
  ['idle-connection-ms', 'idleConnectionTimeoutMs'],
  ['recall-timeout-ms', 'recallTimeoutMs'],
  ['expiry-sweep-ms', 'expirySweepMs'],
  ['touch-grace-ms', 'touchGraceMs'],
] as const;

/** The numeric flags that are KilnServerOptions.limits, as [flag, limit]. */
const LIMIT_FLAGS = [
  ['max-session-bytes', 'maxSessionBytes'],
  ['max-attribute-bytes', 'maxAttributeBytes'],
  ['max-attributes', 'maxAttributes'],
] as const;

/** The server's own check of an option, said with the flag that set it (`--max-connections`, not `maxConnections`). */
function withFlagNames<T>(make: () => T): T {
  try {
    return make();
  } catch (err) {
    const option = err instanceof KilnError ? err.details?.['option'] : undefined;
    const flag = NUMERIC_FLAGS.find(([, key]) => key === option)?.[0] ?? LIMIT_FLAGS.find(([, key]) => key === option || `limits.${key}` === option)?.[0];
    if (flag === undefined) throw err;
    throw new KilnError(err instanceof KilnError ? err.code : 'KILN_ERR_INVALID_OPTION', `--${flag}: ${(err as Error).message}`, { cause: err, details: { option: `--${flag}` } });
  }
}

export const serverCommand: Command = {
  name: 'server',
  summary: 'run the kiln server (the session tier)',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        data: { type: 'string' },
        'no-data': { type: 'boolean' },
        'encryption-key-file': { type: 'string' },
        repair: { type: 'boolean' },
        fsync: { type: 'string' },
        'max-log-backlog-bytes': { type: 'string' },
        'log-stall-ms': { type: 'string' },
        'compact-min-bytes': { type: 'string' },
        'token-file': { type: 'string' },
        'tokens-file': { type: 'string' },
        'insecure-no-auth': { type: 'boolean' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'max-connections': { type: 'string' },
        'max-handshaking': { type: 'string' },
        'handshake-timeout-ms': { type: 'string' },
        'handshake-failure-limit': { type: 'string' },
        'max-sessions': { type: 'string' },
        'max-sessions-per-principal': { type: 'string' },
        'max-leases-per-connection': { type: 'string' },
        'max-frame-bytes': { type: 'string' },
        'max-session-bytes': { type: 'string' },
        'max-attribute-bytes': { type: 'string' },
        'max-attributes': { type: 'string' },
        'idle-connection-ms': { type: 'string' },
        'recall-timeout-ms': { type: 'string' },
        'expiry-sweep-ms': { type: 'string' },
        'touch-grace-ms': { type: 'string' },
        'heap-growth-percent': { type: 'string' },
        'log-level': { type: 'string' },
        'admin-port': { type: 'string' },
        'admin-host': { type: 'string' },
        'admin-token-file': { type: 'string' },
        'admin-read-token-file': { type: 'string' },
        'admin-redact': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const tokenFile = values['token-file'];
    const insecure = values['insecure-no-auth'] ?? false;
    // With --insecure-no-auth a KILN_TOKEN left in the environment is ignored, not an error.
    const token = tokenFile ? readTokenFile(tokenFile) : insecure ? undefined : process.env['KILN_TOKEN'] || undefined;
    if (token && !tokenFile) checkTokenStrength(token, 'KILN_TOKEN');
    const tokens = values['tokens-file'] ? readTokensFile(values['tokens-file']) : undefined;
    if (!token && !tokens && !insecure) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'no token: pass --token-file F, --tokens-file F or set KILN_TOKEN (or --insecure-no-auth on a loopback --host)');
    }
    if (values['no-data'] && values.data !== undefined) throw new KilnError('KILN_ERR_INVALID_OPTION', '--no-data and --data go one without the other (memory only, or this directory?)');
    if (values['no-data'] && (values.fsync !== undefined || values.repair)) throw new KilnError('KILN_ERR_INVALID_OPTION', `--${values.repair ? 'repair' : 'fsync'} needs a data directory (not --no-data)`);
    const fsync = values.fsync ?? 'everysec';
    if (!['always', 'everysec', 'never'].includes(fsync)) throw new KilnError('KILN_ERR_INVALID_OPTION', `--fsync must be always, everysec or never (got ${JSON.stringify(fsync)})`);
    const logLevel = logLevelFlag(values['log-level']);
    if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) throw new KilnError('KILN_ERR_INVALID_OPTION', '--tls-cert and --tls-key go together');
    // The sessions live outside the JavaScript heap (SessionArena); what is left there is
    // the server's own objects. V8's own rule lets the old generation grow to several
    // times the live data before collecting it (when sessions were JavaScript objects, a
    // million of them left ~1.2 GiB resident for ~0.75 GiB of live data).
    // Set once the data is loaded: loading builds the heap from nothing, and collecting
    // every 30% of the way there would make a restart slower.
    const heapGrowthPercent = intFlag(values['heap-growth-percent'], 'heap-growth-percent', 0, 1000) ?? 30;
    const numeric: Partial<Record<(typeof NUMERIC_FLAGS)[number][1], number>> = {};
    for (const [flag, key] of NUMERIC_FLAGS) {
      const v = intFlag(values[flag], flag);
      if (v !== undefined) numeric[key] = v;
    }
    const limits: Partial<Record<(typeof LIMIT_FLAGS)[number][1], number>> = {};
    for (const [flag, key] of LIMIT_FLAGS) {
      const v = intFlag(values[flag], flag);
      if (v !== undefined) limits[key] = v;
    }
    const server = withFlagNames(() => new KilnServer({
      tls: values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'] } : undefined,
      host: hostFlag(values.host, 'host', '127.0.0.1'),
      port: intFlag(values['port'], 'port', 0, 65535) ?? 9510,
      token,
      tokens,
      insecureNoAuth: insecure,
      dataDir: values['no-data'] ? undefined : (values.data ?? './kiln-data'),
      fsync: fsync as 'always' | 'everysec' | 'never',
      encryption: values['encryption-key-file'] ? { keyFile: values['encryption-key-file'] } : undefined,
      repair: values.repair ?? false,
      ...numeric,
      limits,
      logger: createLogger('kiln-server', logLevel),
    }));
    // Every admin option is checked before the server listens: a bad one found after
    // would leave a server running with no ready line and no signal handler.
    const adminPort = intFlag(values['admin-port'], 'admin-port', 0, 65535);
    // An empty address would listen on every interface.
    const adminHost = hostFlag(values['admin-host'], 'admin-host', '127.0.0.1');
    // Without --admin-port they would be ignored in silence: an operator who set them expects an admin API.
    for (const flag of ['admin-host', 'admin-token-file', 'admin-read-token-file', 'admin-redact'] as const) {
      if (adminPort === undefined && values[flag] !== undefined) throw new KilnError('KILN_ERR_INVALID_OPTION', `--${flag} needs --admin-port`, { details: { option: `--${flag}` } });
    }
    const givenAdminToken = adminPort !== undefined && values['admin-token-file'] ? readTokenFile(values['admin-token-file'], '--admin-token-file') : undefined;
    const readToken = adminPort !== undefined && values['admin-read-token-file'] ? readTokenFile(values['admin-read-token-file'], '--admin-read-token-file') : undefined;
    const redact = redactList(values['admin-redact']);
    const info = await server.start();
    if (heapGrowthPercent > 0) setFlagsFromString(`--heap-growing-percent=${heapGrowthPercent}`);
    let admin: AdminServer | undefined;
    let adminTokenFile: string | undefined;
    let source: KilnServerSource | undefined;
    if (adminPort !== undefined) {
      try {
        // Never the client token: every app server holds that one.
        const generated = givenAdminToken === undefined ? generatedAdminToken(info.dataDir ?? undefined) : undefined;
        adminTokenFile = generated?.file;
        const adminToken = generated ? generated.token : givenAdminToken!;
        const tls = values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'] } : undefined;
        source = new KilnServerSource(server);
        admin = new AdminServer(source, { host: adminHost, port: adminPort, adminToken, readToken, version: packageVersion(), tls, redact });
        await admin.start();
      } catch (err) {
        // The server is up: it stops (flushing what it loaded) rather than run on headless.
        await admin?.stop().catch(() => undefined);
        await source?.close().catch(() => undefined);
        await server.stop();
        throw err;
      }
    }
    const torn = info.loaded?.tornTail;
    const repaired = info.repaired ? `, repaired ${info.repaired.at}: kept ${info.repaired.sessionsKept}, dropped ${info.repaired.sessionsDropped}` : '';
    const loaded = info.loaded ? `, ${server.tier.sessionCount} sessions loaded in ${info.loaded.ms} ms${torn ? `, torn tail cut: ${torn.bytes} bytes at ${torn.file}:${torn.offset}` : ''}${repaired}` : '';
    return new Promise<number>((resolve) => {
      const stop = (): void => {
        process.stdout.write(`kiln server stopping: finishing in-flight commits${info.dataDir ? ' and flushing to disk' : ''}\n`);
        Promise.resolve(admin?.stop())
          .then(() => source?.close())
          .then(() => server.stop())
          .then(
          ({ clean }) => {
            if (!clean) process.stderr.write('kiln server: stopped, but its last writes could not be made sure of (see the storage errors above); exit 1\n');
            resolve(clean ? 0 : 1);
          },
          (err: Error) => {
            process.stderr.write(`kiln server: error while stopping: ${err.message}\n`);
            resolve(1);
          },
        );
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      // Said once a signal stops it gracefully: a supervisor may signal as soon as it reads this.
      process.stdout.write(`kiln server ready on ${info.host}:${info.port} (pid ${process.pid}, epoch ${info.epoch}, ${info.dataDir ? `data ${info.dataDir}, fsync ${info.fsync}` : 'memory only: nothing is kept across a restart'}${info.tls ? ', tls' : ''}${loaded})\n`);
      if (admin) process.stdout.write(`kiln admin on ${admin.url} (API /api/overview, events /api/events, Prometheus /metrics${adminTokenFile ? `; admin token in ${adminTokenFile}` : ''})\n`);
    });
  },
};
