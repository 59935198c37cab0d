import { parseArgs } from 'node:util';
import { ADMIN_FLAGS, ADMIN_HELP, BALANCER_FLAGS, BALANCER_HELP, CALL_TIMEOUT_MS, adminTarget, balancerTarget, clusterJson, readCluster, renderCluster, type Overview } from '../admin-client.js';
import { intFlag } from '../args.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln top [options]

A live view of \`kiln status\` with rates, redrawn every second. q or Ctrl-C quits.
A part that stops answering (a kiln server being restarted) is shown UNREACHABLE and
asked again at the next refresh; a refused token ends it.

Options:
${ADMIN_HELP}
${BALANCER_HELP}
  --interval-ms <n>        refresh period (default 1000)
  --iterations <n>         stop after n screens (default: until quit)
  -h, --help
`;

export const topCommand: Command = {
  name: 'top',
  summary: 'a live terminal view of the cluster',
  outputOnly: true,
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { ...ADMIN_FLAGS, ...BALANCER_FLAGS, 'interval-ms': { type: 'string' }, iterations: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const admin = adminTarget(values);
    const balancer = balancerTarget(values, admin);
    const interval = intFlag(values['interval-ms'], 'interval-ms', 100) ?? 1000;
    const iterations = intFlag(values.iterations, 'iterations', 1) ?? Infinity;
    // Each read has a total deadline: a frozen server costs one slow frame, not a hung screen.
    const readTimeoutMs = Math.min(CALL_TIMEOUT_MS, Math.max(1000, 2 * interval));
    let quit = false;
    const onKey = (key: Buffer): void => {
      if (key.toString() === 'q' || key[0] === 3) quit = true;
    };
    const tty = process.stdin.isTTY && !values.json;
    if (tty) {
      process.stdin.setRawMode(true);
      process.stdin.on('data', onKey);
    }
    const onSigint = (): void => void (quit = true);
    process.once('SIGINT', onSigint);
    let previous: { at: number; o: Overview } | undefined;
    // As kiln status: a last frame that could not reach a part is not a success.
    let lastFrameFailed = false;
    try {
      for (let i = 0; i < iterations && !quit; i++) {
        const view = await readCluster(admin, balancer, readTimeoutMs);
        // Only an unreachable part is worth asking again; a refused token or a bad answer stays so.
        const failure = view.errors.server;
        if (failure && failure.code !== 'KILN_ERR_ENGINE_UNAVAILABLE') throw failure;
        lastFrameFailed = Object.values(view.errors).some((e) => e !== undefined);
        const at = Date.now();
        const o = view.overview;
        let rates;
        if (o && previous) {
          const dt = (at - previous.at) / 1000;
          const delta = (k: string) => ((o.counters[k] ?? 0) - (previous!.o.counters[k] ?? 0)) / dt;
          const requests = o.clients.reduce((n, c) => n + c.requests, 0) - previous.o.clients.reduce((n, c) => n + c.requests, 0);
          // A restarted server starts its counters again: no negative rates across it.
          rates = { commitsPerSecond: Math.max(0, delta('commits')), recallsPerSecond: Math.max(0, delta('leaseRecalls')), requestsPerSecond: Math.max(0, requests / dt) };
        }
        // Rates are between two answers in a row; an unreachable frame starts them again.
        previous = o ? { at, o } : undefined;
        if (values.json) process.stdout.write(`${JSON.stringify({ at, overview: o ?? null, rates: rates ?? null, ...clusterJson({ errors: view.errors, balancer: view.balancer }) })}\n`);
        else process.stdout.write(`\x1b[2J\x1b[H${new Date(at).toISOString()}  (q to quit)\n\n${renderCluster(view, admin, balancer, rates)}`);
        if (i + 1 < iterations && !quit) await new Promise((r) => setTimeout(r, interval));
      }
    } finally {
      process.off('SIGINT', onSigint);
      if (tty) {
        process.stdin.setRawMode(false);
        process.stdin.off('data', onKey);
        process.stdin.pause();
      }
    }
    return lastFrameFailed ? 1 : 0;
  },
};
