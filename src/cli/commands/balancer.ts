import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KilnBalancer, type KilnBalancerOptions as BalancerOptions } from '../../balancer/balancer.js';
import { LIMIT_RANGES, type BalancerLimits } from '../../balancer/limits.js';
import { parseNodeSpec } from '../../balancer/node-table.js';
import { generatedAdminToken } from '../../console/admin-token.js';
import { KilnError } from '../../errors/index.js';
import { readTokenFile } from '../../util/secret-file.js';
import { createLogger } from '../../util/log.js';
import { hostFlag, intFlag, logLevelFlag } from '../args.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln balancer --node name=http://host:port [--node …] [options]

An HTTP/1.1 reverse proxy with session affinity for Kiln app servers.

Options:
  --node <name=url>        an app server; its name is the route suffix of its session ids (repeat)
  --config <file.json>     options as JSON: { "port", "nodes": [{ "name", "url" }], "affinity", … }
  --host <addr>            listen address (default 127.0.0.1)
  --port <n>               listen port (default 8080; 0 = any free port)
  --affinity <mode>        route (session id's route suffix, default) | cookie (balancer cookie) | none (round-robin)
  --cookie <name>          session cookie to read the route from (default connect.sid)
  --health-path <path>     active health check path (default /healthz)
  --health-interval-ms <n> (default 1000)
  --admin-token-file <f>   bearer token (32 bytes at least) for the status JSON and drain/undrain
                           (default: one generated into a new private temp dir, mode 0600, removed
                           at exit; the ready line says where; the source address never authorises)
  --trust-proxy <list>     peers whose X-Forwarded-Proto/-Host are kept and whose X-Forwarded-For
                           is kept with the peer's address appended: addresses, CIDRs or
                           "loopback", comma-separated (e.g. the TLS terminator in front);
                           from anyone else they are overwritten, and every other forwarding
                           header (X-Forwarded-*, Forwarded, X-Real-IP, True-Client-IP, …) dropped
  --log-level <level>      debug | info | warn | error | silent (default info)
  -h, --help

Limits (so that slow or greedy clients cannot take the balancer down):
  --headers-timeout-ms <n>      request headers complete within n ms, else 408 (default 10000)
  --body-idle-timeout-ms <n>    a request body silent for n ms gets 408 (default 10000)
  --body-timeout-ms <n>         a request body complete within n ms of its headers, else 408 (default 60000)
  --keep-alive-timeout-ms <n>   idle client keep-alive connections closed after n ms (default 5000)
  --upstream-sockets <n>        connections to each app server (default 256)
  --queue-timeout-ms <n>        wait for a free upstream connection at most n ms, then 503; a new
                                connection not made within it counts as refused (default 5000)
  --max-queue <n>               requests waiting per app server at most; beyond, 503 at once (default 1024)
  --upstream-idle-timeout-ms <n>  an app server connection silent n ms while a request is on it
                                (no answer, or a response the client does not read): 504, or the
                                client's connection cut once the response began; an event stream or
                                long poll silent that long is cut too (default 60000)
  --body-buffer-bytes <n>       bytes of a body read before an app server is picked (default 65536)
  --max-connections-per-client <n>  open connections per source address (default 256;
                                --trust-proxy peers have no such cap: their clients share the address)
  --max-connections <n>         open client connections in all (default 10000)

Admin (Authorization: Bearer <admin token>; 401 without it): GET /_kiln/balancer
(JSON: nodes, health, requests, active connections); POST /_kiln/balancer/nodes/<name>/drain
and …/undrain.
`;

/** Flag → option of limits.ts. */
const LIMIT_FLAGS: Record<string, keyof BalancerLimits> = {
  'headers-timeout-ms': 'headersTimeoutMs',
  'body-idle-timeout-ms': 'bodyIdleTimeoutMs',
  'body-timeout-ms': 'bodyTimeoutMs',
  'keep-alive-timeout-ms': 'keepAliveTimeoutMs',
  'upstream-sockets': 'upstreamSockets',
  'queue-timeout-ms': 'queueTimeoutMs',
  'max-queue': 'maxQueue',
  'upstream-idle-timeout-ms': 'upstreamIdleTimeoutMs',
  'body-buffer-bytes': 'bodyBufferBytes',
  'max-connections-per-client': 'maxConnectionsPerClient',
  'max-connections': 'maxConnections',
};

export const balancerCommand: Command = {
  name: 'balancer',
  summary: 'run the HTTP load balancer with session affinity',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        node: { type: 'string', multiple: true },
        config: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        affinity: { type: 'string' },
        cookie: { type: 'string' },
        'health-path': { type: 'string' },
        'health-interval-ms': { type: 'string' },
        'admin-token-file': { type: 'string' },
        'trust-proxy': { type: 'string' },
        'log-level': { type: 'string' },
        ...Object.fromEntries(Object.keys(LIMIT_FLAGS).map((flag) => [flag, { type: 'string' as const }])),
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    let options: Partial<BalancerOptions> = {};
    if (values.config) {
      try {
        options = JSON.parse(readFileSync(values.config, 'utf8')) as Partial<BalancerOptions>;
      } catch (err) {
        throw new KilnError('KILN_ERR_INVALID_OPTION', `--config ${values.config}: ${(err as Error).message}`);
      }
    }
    const nodes = [...(options.nodes ?? []), ...(values.node ?? []).map(parseNodeSpec)];
    const limits: Partial<BalancerLimits> = {};
    for (const [flag, name] of Object.entries(LIMIT_FLAGS)) {
      const value = intFlag((values as Record<string, unknown>)[flag], flag, ...LIMIT_RANGES[name]);
      if (value !== undefined) limits[name] = value;
    }
    const logLevel = logLevelFlag(values['log-level']);
    const givenAdminToken = values['admin-token-file'] ? readTokenFile(values['admin-token-file'], '--admin-token-file') : options.adminToken;
    // Made last, once everything else was found good (it goes with the process).
    const generated = givenAdminToken === undefined ? generatedAdminToken(undefined) : undefined;
    const adminToken = givenAdminToken ?? generated!.token;
    const balancer = new KilnBalancer({
      ...options,
      ...limits,
      nodes,
      host: hostFlag(values.host, 'host', undefined) ?? options.host,
      port: intFlag(values.port, 'port', 0, 65535) ?? options.port,
      affinity: (values.affinity as BalancerOptions['affinity']) ?? options.affinity,
      cookieName: values.cookie ?? options.cookieName,
      healthPath: values['health-path'] ?? options.healthPath,
      healthIntervalMs: intFlag(values['health-interval-ms'], 'health-interval-ms', 50) ?? options.healthIntervalMs,
      adminToken,
      trustProxy: values['trust-proxy'] ?? options.trustProxy,
      logger: createLogger('kiln-balancer', logLevel),
    });
    const { port } = await balancer.start();
    return new Promise<number>((resolve) => {
      const stop = (): void => {
        process.stdout.write('kiln balancer stopping: finishing in-flight requests\n');
        void balancer.stop().then(() => resolve(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      // Said once a signal stops it gracefully: a supervisor may signal as soon as it reads this.
      process.stdout.write(`kiln balancer ready on ${balancer.url} (pid ${process.pid}, port ${port}, ${nodes.length} nodes${generated ? `; admin token in ${generated.file}` : ''})\n`);
    });
  },
};
