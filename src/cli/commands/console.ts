import { redactCredentials } from '../../util/log.js';
import { parseArgs } from 'node:util';
import { AdminServer, packageVersion } from '../../console/admin-server.js';
import { generatedAdminToken } from '../../console/admin-token.js';
import { checkTokenStrength, readTokenFile } from '../../util/secret-file.js';
import { redactList } from '../../console/preview.js';
import { RedisSource } from '../../console/redis-source.js';
import { KilnError } from '../../errors/index.js';
import { connectRedis } from '../../engines/redis/redis-engine.js';
import { isRedisUrl } from '../../engines/redis/topology.js';
import { hostFlag, intFlag } from '../args.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln console --engine <redis-url> [options]

Serves the admin API, Prometheus /metrics and the web console for sessions kept in
Redis: the same API a kiln server serves on its --admin-port, read from Redis and from
what each app server's Kiln client reports there. (A kiln server serves its own
console: kiln server --admin-port.)

Options:
  --engine <url>             redis://… rediss://… redis+sentinel://… redis+cluster://… (else KILN_ENGINE)
  --host <addr>              address to listen on (default 127.0.0.1)
  --port <n>                 admin port (default 9511; 0 = any free port)
  --token-file <file>        admin bearer token, at least 32 bytes (else KILN_ADMIN_TOKEN; else one is
                             generated into a new private temp dir (removed at exit), mode 0600, and the admin line
                             says where)
  --read-token-file <file>   read-only bearer token, at least 32 bytes
  --tls-cert <file>          serve HTTPS with this PEM certificate
  --tls-key <file>           the certificate's PEM private key
  --balancer <url>           a kiln balancer in front of the app servers (http://host:port): the
                             console draws it, with its per-node request counts and health
  --balancer-token-file <f>  the balancer's admin token (its --admin-token-file); required with
                             --balancer
  --redact <list>            comma list of attribute/key names whose values nobody sees, matched
                             case-insensitively as substrings (default
                             password,passwd,token,secret,csrf,authorization,cookie,key; '' = none)
  -h, --help                 this help

On start it prints "kiln admin on http(s)://<host>:<port> (…)" (stdout). Stop with SIGTERM or SIGINT.
`;

export const consoleCommand: Command = {
  name: 'console',
  summary: 'admin API, metrics and web console for sessions kept in Redis',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        engine: { type: 'string' },
        host: { type: 'string' },
        port: { type: 'string' },
        'token-file': { type: 'string' },
        'read-token-file': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        redact: { type: 'string' },
        balancer: { type: 'string' },
        'balancer-token-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const url = values.engine ?? process.env['KILN_ENGINE'];
    if (!url) throw new KilnError('KILN_ERR_INVALID_OPTION', '--engine is required: the Redis URL the app servers use (or set KILN_ENGINE)');
    if (/^kilns?:\/\//i.test(url)) throw new KilnError('KILN_ERR_INVALID_OPTION', 'a kiln server serves its own console: start it with --admin-port (kiln console is for Redis)');
    if (!isRedisUrl(url)) throw new KilnError('KILN_ERR_INVALID_OPTION', `--engine must be a redis://, rediss://, redis+sentinel:// or redis+cluster:// URL (got ${JSON.stringify(redactCredentials(url).slice(0, 80))})`);
    // Never KILN_TOKEN: that is what every app server holds.
    const fromEnv = process.env['KILN_ADMIN_TOKEN'];
    if (!values['token-file'] && fromEnv) checkTokenStrength(fromEnv, 'KILN_ADMIN_TOKEN');
    const generated = values['token-file'] || fromEnv ? undefined : generatedAdminToken(undefined);
    const adminToken = values['token-file'] ? readTokenFile(values['token-file'], '--token-file') : (fromEnv ?? generated!.token);
    const readToken = values['read-token-file'] ? readTokenFile(values['read-token-file'], '--read-token-file') : undefined;
    if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) throw new KilnError('KILN_ERR_INVALID_OPTION', '--tls-cert and --tls-key go together');
    const tls = values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'] } : undefined;
    if (Boolean(values.balancer) !== Boolean(values['balancer-token-file'])) throw new KilnError('KILN_ERR_INVALID_OPTION', '--balancer and --balancer-token-file go together');
    const balancer = values.balancer ? { url: values.balancer, token: readTokenFile(values['balancer-token-file']!, '--balancer-token-file') } : undefined;
    const port = intFlag(values.port, 'port', 0, 65535) ?? 9511;
    const host = hostFlag(values.host, 'host', '127.0.0.1');

    const engine = connectRedis(url, { name: 'kiln-console' });
    process.stdout.write(`kiln console: connecting to ${engine.address}…\n`);
    await engine.connect();
    const source = new RedisSource(engine);
    let admin: AdminServer;
    try {
      admin = new AdminServer(source, { host, port, adminToken, readToken, version: packageVersion(), tls, redact: redactList(values.redact), balancer });
    } catch (err) {
      await source.close();
      await engine.close();
      throw err;
    }
    try {
      await admin.start();
    } catch (err) {
      await source.close();
      await engine.close();
      throw err;
    }
    return new Promise<number>((resolve) => {
      const stop = (): void => {
        process.stdout.write('kiln console stopping\n');
        void admin
          .stop()
          .then(() => source.close())
          .then(() => engine.close())
          .then(
            () => resolve(0),
            (err: Error) => {
              process.stderr.write(`kiln console: error while stopping: ${err.message}\n`);
              resolve(1);
            },
          );
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      // Said once a signal stops it gracefully: a supervisor may signal as soon as it reads this.
      process.stdout.write(`kiln admin on ${admin.url} (console for ${source.describe().role} ${engine.address}; API /api/overview, events /api/events, Prometheus /metrics${generated ? `; admin token in ${generated.file}` : ''})\n`);
    });
  },
};
