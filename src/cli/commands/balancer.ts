import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KilnBalancer, type BalancerOptions } from '../../balancer/balancer.js';
import { parseNodeSpec } from '../../balancer/node-table.js';
import { generatedAdminToken } from '../../console/admin-token.js';
import { KilnError } from '../../errors/index.js';
import { readTokenFile } from '../../util/secret-file.js';
import { createLogger, type LogLevel } from '../../util/log.js';
import { intFlag } from '../args.js';
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
                           (default: one generated into a new private temp dir, mode 0600;
                           the ready line says where; the source address never authorises)
  --trust-proxy <list>     peers whose X-Forwarded-Proto/-Host/-For are kept: addresses, CIDRs
                           or "loopback", comma-separated (e.g. the TLS terminator in front);
                           from anyone else they are overwritten
  --log-level <level>      debug | info | warn | error | silent (default info)
  -h, --help

Admin (Authorization: Bearer <admin token>; 401 without it): GET /_kiln/balancer
(JSON: nodes, health, requests, active connections); POST /_kiln/balancer/nodes/<name>/drain
and …/undrain.
`;

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
    const generated = values['admin-token-file'] || options.adminToken ? undefined : generatedAdminToken(undefined);
    const adminToken = values['admin-token-file'] ? readTokenFile(values['admin-token-file'], '--admin-token-file') : (options.adminToken ?? generated!.token);
    const balancer = new KilnBalancer({
      ...options,
      nodes,
      host: values.host ?? options.host,
      port: intFlag(values.port, 'port', 0, 65535) ?? options.port,
      affinity: (values.affinity as BalancerOptions['affinity']) ?? options.affinity,
      cookieName: values.cookie ?? options.cookieName,
      healthPath: values['health-path'] ?? options.healthPath,
      healthIntervalMs: intFlag(values['health-interval-ms'], 'health-interval-ms', 50) ?? options.healthIntervalMs,
      adminToken,
      trustProxy: values['trust-proxy'] ?? options.trustProxy,
      logger: createLogger('kiln-balancer', (values['log-level'] ?? 'info') as LogLevel),
    });
    const { port } = await balancer.start();
    process.stdout.write(`kiln balancer ready on ${balancer.url} (pid ${process.pid}, port ${port}, ${nodes.length} nodes${generated ? `; admin token in ${generated.file}` : ''})\n`);
    return new Promise<number>((resolve) => {
      const stop = (): void => {
        process.stdout.write('kiln balancer stopping: finishing in-flight requests\n');
        void balancer.stop().then(() => resolve(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
  },
};
