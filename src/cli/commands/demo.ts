import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { KilnBalancer } from '../../balancer/balancer.js';
import { isRedisUrl } from '../../engines/redis/topology.js';
import { KilnError, isKilnErrorCode } from '../../errors/index.js';
import { createLogger } from '../../util/log.js';
import { listen } from '../../util/net.js';
import { checkTokenStrength } from '../../util/secret-file.js';
import { hostFlag, intFlag } from '../args.js';
import type { Command } from '../command.js';
import { Supervisor, type RestartPolicy, type Supervised } from '../supervisor.js';
import { clearDemoState, writeDemoState } from '../demo-state.js';
import { makeDemoTempDir, sweepDeadDemoDirs } from '../demo-temp.js';

const HELP = `Usage: kiln demo [options]

Runs a whole Kiln cluster on this machine: a kiln server, app servers running the
example shop (examples/shop), and the balancer in front of them; prints where to point
a browser. Ctrl-C, SIGTERM or SIGHUP stops everything (while starting too) and leaves no
process and no temporary file behind; a second one while stopping kills what is left at
once. A demo killed otherwise (SIGKILL) takes its processes with it within seconds.

Options:
  --port <n>          balancer port (default 8080; 0 = any free port); checked before anything starts
  --host <addr>       balancer address (default 127.0.0.1)
  --nodes <n>         app servers (default 3)
  --engine <e>        kiln (default: a kiln server started here, with a generated client token;
                      KILN_TOKEN is not read) | memory (each node alone)
                      | kiln://host:port, kilns://host:port (an existing server: its client token in KILN_TOKEN)
                      | redis://… redis+sentinel://… redis+cluster://… (sessions on Redis; console by kiln console)
  --data <dir>        kiln server data directory, with --engine kiln (default: a new directory under
                      the OS temp dir, removed at exit)
  --affinity <mode>   route (default) | cookie | none
  --no-restart        leave a killed process dead (default: the demo restarts it on the same
                      port after 1 s, backing off to 30 s while it keeps dying)
  -h, --help

The admin token (console, balancer status, kiln status) is never printed: it is in a
0600 file whose path the demo prints.
`;

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));

/** The signals that stop the demo: Ctrl-C, kill, and the terminal going away. */
const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const AFFINITIES = ['route', 'cookie', 'none'] as const;
type Affinity = (typeof AFFINITIES)[number];

/**
 * The client token the app servers (and the demo's own kiln server) use. The demo's own
 * server always gets a generated one: a KILN_TOKEN left in the shell for another server,
 * empty or too short, must not break the demo. An existing server (kiln://) needs its
 * own token, which only the user has.
 */
function clientToken(engine: string): string | undefined {
  if (engine === 'kiln') return randomBytes(32).toString('base64url');
  if (!engine.startsWith('kiln://') && !engine.startsWith('kilns://')) return undefined;
  const token = process.env['KILN_TOKEN'];
  if (!token) throw new KilnError('KILN_ERR_INVALID_OPTION', `KILN_TOKEN is not set: --engine ${engine} is an existing kiln server, and the app servers need its client token (KILN_TOKEN=… kiln demo --engine ${engine})`, { details: { option: 'KILN_TOKEN' } });
  checkTokenStrength(token, 'KILN_TOKEN');
  return token;
}

/**
 * Takes the balancer's address before anything else starts, so a busy --port (8080 often
 * is) or a bad --host fails at once, naming the flag. The port stays ours until the
 * balancer binds it (release() just before): with --port 0 the port the balancer will
 * have is known from here on.
 */
async function reserveBalancerAddress(host: string, port: number): Promise<{ port: number; release(): Promise<void> }> {
  const server: Server = createServer((socket) => socket.destroy());
  try {
    const bound = await listen(server, port, host);
    return { port: bound, release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  } catch (err) {
    throw balancerListenError(err, host, port);
  }
}

/** What a failed listen on the balancer's address means, as a KilnError naming the flag. */
function balancerListenError(err: unknown, host: string, port: number): Error {
  // listen() says KILN_ERR_LISTEN with the system's code beside it; a bare system error says it itself.
  const code = err instanceof KilnError ? (err.details?.['errno'] as string | undefined) : (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return new KilnError('KILN_ERR_INVALID_OPTION', `--port ${port}: ${host}:${port} is in use by another process; pass another --port, or --port 0 for any free port`, { cause: err, details: { option: '--port' } });
  if (code === 'EACCES') return new KilnError('KILN_ERR_INVALID_OPTION', `--port ${port}: not allowed to listen on ${host}:${port} (ports below 1024 need privileges); pass --port 0 for any free port, or one from 1024`, { cause: err, details: { option: '--port' } });
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_FAIL' || code === 'EINVAL') {
    return new KilnError('KILN_ERR_INVALID_OPTION', `--host ${host}: cannot listen there (${code}): give an address of this machine, such as 127.0.0.1 or 0.0.0.0`, { cause: err, details: { option: '--host' } });
  }
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * A child that did not start says why in its own output, with its KilnError's code
 * (`kiln server: … [KILN_ERR_UNSAFE_PERMISSIONS]`): the demo fails with that code and
 * that output, not with a stack trace.
 */
function asKilnError(err: unknown): unknown {
  if (err instanceof KilnError || !(err instanceof Error)) return err;
  const code = [...err.message.matchAll(/\[(KILN_ERR_[A-Z_]+)\]/g)].map((m) => m[1]).find(isKilnErrorCode);
  return code ? new KilnError(code, err.message.trimEnd(), { cause: err }) : err;
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'run a whole cluster here: kiln server, 3 shop app servers, balancer',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        port: { type: 'string' },
        host: { type: 'string' },
        nodes: { type: 'string' },
        engine: { type: 'string' },
        data: { type: 'string' },
        affinity: { type: 'string' },
        'no-restart': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    // Every option is checked before anything is started or made.
    const nodeCount = intFlag(values.nodes, 'nodes', 1, 32) ?? 3;
    const wantedPort = intFlag(values.port, 'port', 0, 65535) ?? 8080;
    const host = hostFlag(values.host, 'host', '127.0.0.1');
    const affinity = (values.affinity ?? 'route') as Affinity;
    if (!AFFINITIES.includes(affinity)) throw new KilnError('KILN_ERR_INVALID_OPTION', `--affinity must be route, cookie or none (got ${JSON.stringify(values.affinity)})`, { details: { option: '--affinity' } });
    const engineArg = values.engine ?? 'kiln';
    if (!['kiln', 'memory'].includes(engineArg) && !engineArg.startsWith('kiln://') && !engineArg.startsWith('kilns://') && !isRedisUrl(engineArg)) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `--engine must be kiln, memory, a kiln:// URL or a redis://, redis+sentinel:// or redis+cluster:// URL (got ${JSON.stringify(engineArg)})`, { details: { option: '--engine' } });
    }
    if (values.data !== undefined && engineArg !== 'kiln') throw new KilnError('KILN_ERR_INVALID_OPTION', `--data is the data directory of the kiln server the demo starts: it goes with --engine kiln only (got --engine ${engineArg})`, { details: { option: '--data' } });
    const token = clientToken(engineArg);
    // The shop's cookie-signing secret: one per demo, shared by its app servers.
    const secret = randomBytes(24).toString('base64url');
    const reserved = await reserveBalancerAddress(host, wantedPort);

    const say = (line: string): void => void process.stdout.write(`${line}\n`);
    const swept = sweepDeadDemoDirs();
    if (swept > 0) say(`kiln demo: removed ${swept} temp ${swept === 1 ? 'directory' : 'directories'} of a demo that was killed`);
    let stopping = false;
    const supervisor = new Supervisor((name, code, signal) => {
      if (stopping) return;
      const what = name.startsWith('app-') ? 'the balancer sends its sessions to the other nodes' : name === 'kiln server' ? 'app servers wait for it (sessions are on disk)' : 'the console is away';
      say(`kiln demo: ${name} exited (${signal ?? `code ${code}`}); ${what}`);
    });
    // A killed process comes back on the same port (so the balancer and the app servers find it again).
    const restartOn = (rewrite: (first: Supervised) => { args: string[]; env: NodeJS.ProcessEnv }): RestartPolicy | undefined =>
      values['no-restart'] ? undefined : { again: rewrite, delayMs: 1000, onEvent: (line) => !stopping && say(`kiln demo: ${line}`) };

    // What the demo makes, undone on every way out: shutdown() on a signal or a failed
    // start, and the 'exit' hook (synchronous) when the process ends otherwise (a crash).
    const tempDirs: string[] = [];
    let stateWritten = false;
    const removeFilesSync = (): void => {
      for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
      if (stateWritten) {
        stateWritten = false;
        try {
          clearDemoState();
        } catch {
          // Not ours any more, or unreadable: nothing of ours to remove.
        }
      }
    };
    const onExit = (): void => {
      supervisor.killAll();
      removeFilesSync();
    };
    process.once('exit', onExit);

    let balancer: KilnBalancer | undefined;
    let shuttingDown: Promise<void> | undefined;
    const shutdown = (): Promise<void> =>
      (shuttingDown ??= (async () => {
        stopping = true;
        say('kiln demo: stopping the balancer, the app servers and the kiln server…');
        await reserved.release();
        await balancer?.stop(1000).catch(() => undefined);
        await supervisor.stopAll();
        removeFilesSync();
        process.off('exit', onExit);
        say('kiln demo: stopped, nothing left running');
      })());

    let stoppedBySignal: ((code: number) => void) | undefined;
    const stopped = new Promise<number>((resolve) => (stoppedBySignal = resolve));
    let signalled = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (signalled) {
        // Told again while stopping: no more waiting for graceful stops, but the cleanup still runs.
        say(`kiln demo: ${signal} again: killing what is left now`);
        supervisor.killAll();
        return;
      }
      signalled = true;
      // The terminal that hung up took our stdout with it: a line we can no longer write
      // must not turn the stop into a crash halfway.
      if (signal === 'SIGHUP') for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
      void shutdown().then(() => {
        for (const s of STOP_SIGNALS) process.off(s, onSignal);
        stoppedBySignal!(0);
      });
    };
    // Before the first process is started: a demo stopped while starting stops what it started.
    for (const s of STOP_SIGNALS) process.on(s, onSignal);

    const ownData = engineArg === 'kiln' && !values.data;
    const rows: [string, string, string, string][] = [];
    let adminUrl: string | undefined;
    let adminTokenFile: string;
    let adminToken: string;

    try {
      const dataDir = ownData ? makeDemoTempDir('data') : values.data;
      if (ownData) tempDirs.push(dataDir!);
      // The console's own token (never the client token), in a file only we can read.
      const adminDir = makeDemoTempDir('admin');
      tempDirs.push(adminDir);
      adminToken = randomBytes(32).toString('base64url');
      adminTokenFile = join(adminDir, 'admin.token');
      writeFileSync(adminTokenFile, adminToken, { mode: 0o600, flag: 'wx' });

      let engineUrl: string | undefined;
      if (engineArg === 'kiln') {
        say(`kiln demo: starting the kiln server (data ${dataDir})…`);
        const serverArgs = (port: string, adminPort: string) => [here('../../../../bin/kiln.js'), 'server', '--port', port, '--data', dataDir!, '--log-level', 'warn', '--admin-port', adminPort, '--admin-token-file', adminTokenFile];
        const serverEnv = { ...process.env, KILN_TOKEN: token };
        // Both ports are read once, from the first start's ready lines: a restart takes them
        // again (the app servers and `kiln status` point there), whatever the output holds by
        // then (it keeps only its last 32 KiB once past 64 KiB: the ready line may be gone).
        let serverPort = '';
        let adminPort = '';
        const server = await supervisor.start('kiln server', serverArgs('0', '0'), serverEnv, /ready on [^\s]+:(\d+)[^]*?kiln admin on (http:\/\/[^\s]+) /, 20_000, restartOn(() => ({ args: serverArgs(serverPort, adminPort), env: serverEnv })));
        serverPort = server.match[1]!;
        adminUrl = server.match[2]!;
        adminPort = new URL(adminUrl).port;
        engineUrl = `kiln://127.0.0.1:${serverPort}`;
        rows.push(['kiln server', 'server', engineUrl, String(server.child.pid)]);
        // Never the token itself (terminal scrollback, screen shares, CI logs): its file's path is printed below.
        rows.push(['console', 'console', `${adminUrl}/`, String(server.child.pid)]);
      } else if (engineArg !== 'memory') {
        engineUrl = engineArg;
        if (isRedisUrl(engineArg)) {
          say(`kiln demo: starting the console for Redis (kiln console)…`);
          const consoleArgs = (port: string) => [here('../../../../bin/kiln.js'), 'console', '--engine', engineArg, '--port', port, '--token-file', adminTokenFile];
          let consolePort = '';
          const redisConsole = await supervisor.start('kiln console', consoleArgs('0'), { ...process.env }, /kiln admin on (http:\/\/[^\s]+) /, 20_000, restartOn(() => ({ args: consoleArgs(consolePort), env: { ...process.env } })));
          adminUrl = redisConsole.match[1]!;
          consolePort = new URL(adminUrl).port;
          rows.push(['console', 'console', `${adminUrl}/`, String(redisConsole.child.pid)]);
        }
      } else {
        say('kiln demo: --engine memory: every node keeps its own sessions (nothing is shared; a killed node loses its sessions)');
      }
      const nodes: { name: string; url: string; pid: number }[] = [];
      for (let i = 1; i <= nodeCount; i++) {
        const name = `app-${i}`;
        say(`kiln demo: starting ${name} (examples/shop)…`);
        const appEnv = (port: string) => ({ ...process.env, PORT: port, NODE_NAME: name, KILN_ENGINE: engineUrl ?? '', SESSION_SECRET: secret, ...(token ? { KILN_TOKEN: token } : {}) });
        const shop = [here('../../../examples/shop/server.js')];
        let appPort = '';
        const app = await supervisor.start(name, shop, appEnv('0'), /listening on (\d+)/, 20_000, restartOn(() => ({ args: shop, env: appEnv(appPort) })));
        appPort = app.match[1]!;
        const url = `http://127.0.0.1:${appPort}`;
        nodes.push({ name, url, pid: app.child.pid! });
        rows.push(['app server', name, url, String(app.child.pid)]);
      }
      if (stopping) throw new Error('stopped while starting');
      say('kiln demo: starting the balancer…');
      const lb = new KilnBalancer({ host, port: reserved.port, nodes, affinity, healthIntervalMs: 500, adminToken, logger: createLogger('kiln-balancer', 'warn') });
      // The reserved port is handed over: released, then bound again at once by the balancer.
      await reserved.release();
      await lb.start().catch((err: unknown) => {
        throw balancerListenError(err, host, reserved.port);
      });
      balancer = lb;
      if (stopping) {
        // Stopped while it bound its port, after shutdown() looked for it.
        await lb.stop(0);
        throw new Error('stopped while starting');
      }
      rows.unshift(['balancer', 'balancer', balancer.url, String(process.pid)]);
    } catch (err) {
      // Stopped by a signal while starting: the start failed because of it, and the signal's
      // shutdown ends the command.
      if (signalled) return stopped;
      await shutdown();
      for (const s of STOP_SIGNALS) process.off(s, onSignal);
      throw asKilnError(err);
    }

    const widths = [0, 1, 2, 3].map((i) => Math.max(...[['role', 'name', 'url', 'pid'], ...rows].map((r) => r[i]!.length)));
    const line = (r: string[]): string => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`;
    say('');
    say(`kiln demo is running. Point a browser at ${balancer.url}/`);
    say('');
    say(line(['role', 'name', 'url', 'pid']));
    for (const r of rows) say(line(r));
    say('');
    say(`Balancer status: ${balancer.url}/_kiln/balancer  (Authorization: Bearer <the admin token in ${adminTokenFile}>)`);
    if (adminUrl) {
      say(`Console: ${adminUrl}/  (it asks for the admin token: paste the one in ${adminTokenFile}, a file only you can read)`);
      say(`  kiln status / kiln sessions ls elsewhere: --admin ${adminUrl} --token-file ${adminTokenFile}`);
      try {
        writeDemoState({ pid: process.pid, adminUrl, adminTokenFile, balancerUrl: balancer.url, restarts: !values['no-restart'] });
        stateWritten = true;
        say('`npx kiln status`, `kiln sessions ls` and `kiln top` find this demo by themselves (while it runs).');
      } catch (err) {
        // The cluster is up and serving: a state file that cannot be written costs only the shortcut.
        say(`kiln demo: warning: ${(err as Error).message}; \`kiln status\` needs --admin and --token-file as above`);
      }
    }
    say(values['no-restart'] ? 'Kill an app server (kill -9 <pid>): your cart stays. Ctrl-C stops everything.' : 'Kill an app server (kill -9 <pid>): your cart stays, and the demo restarts it in a second. Ctrl-C stops everything.');
    return stopped;
  },
};
