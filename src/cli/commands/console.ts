import { redactCredentials } from '../../util/log.js';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { AdminServer, packageVersion } from '../../console/admin-server.js';
import { RedisSource } from '../../console/redis-source.js';
import { KilnError } from '../../errors/index.js';
import { connectRedis } from '../../engines/redis/redis-engine.js';
import { isRedisUrl } from '../../engines/redis/topology.js';
import { intFlag } from '../args.js';
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
  --token-file <file>        admin bearer token (else KILN_ADMIN_TOKEN, then KILN_TOKEN)
  --read-token-file <file>   read-only bearer token
  -h, --help                 this help

On start it prints "kiln admin on http://<host>:<port> (…)" (stdout). Stop with SIGTERM or SIGINT.
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
    const adminToken = values['token-file'] ? readFileSync(values['token-file'], 'utf8').trim() : (process.env['KILN_ADMIN_TOKEN'] ?? process.env['KILN_TOKEN']);
    if (!adminToken) throw new KilnError('KILN_ERR_INVALID_OPTION', 'no admin token: pass --token-file F or set KILN_ADMIN_TOKEN');
    const readToken = values['read-token-file'] ? readFileSync(values['read-token-file'], 'utf8').trim() : undefined;
    const port = intFlag(values.port, 'port', 0, 65535) ?? 9511;
    const host = values.host ?? '127.0.0.1';

    const engine = connectRedis(url, { name: 'kiln-console' });
    process.stdout.write(`kiln console: connecting to ${engine.address}…\n`);
    await engine.connect();
    const source = new RedisSource(engine);
    const admin = new AdminServer(source, { host, port, adminToken, readToken, version: packageVersion() });
    try {
      await admin.start();
    } catch (err) {
      await source.close();
      await engine.close();
      throw err;
    }
    const shown = host.includes(':') ? `[${host}]` : host;
    process.stdout.write(`kiln admin on http://${shown}:${admin.port} (console for ${source.describe().role} ${engine.address}; API /api/overview, events /api/events, Prometheus /metrics)\n`);
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
    });
  },
};
