import { parseArgs } from 'node:util';
import { ADMIN_FLAGS, ADMIN_HELP, adminCall, adminTarget, renderStatus, type Overview } from '../admin-client.js';
import { intFlag } from '../args.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln top [options]

A live view of \`kiln status\` with rates, redrawn every second. q or Ctrl-C quits.

Options:
${ADMIN_HELP}
  --interval-ms <n>        refresh period (default 1000)
  --iterations <n>         stop after n screens (default: until quit)
  -h, --help
`;

export const topCommand: Command = {
  name: 'top',
  summary: 'a live terminal view of the cluster',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { ...ADMIN_FLAGS, 'interval-ms': { type: 'string' }, iterations: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const target = adminTarget(values);
    const interval = intFlag(values['interval-ms'], 'interval-ms', 100) ?? 1000;
    const iterations = intFlag(values.iterations, 'iterations', 1) ?? Infinity;
    let quit = false;
    const onKey = (key: Buffer): void => {
      if (key.toString() === 'q' || key[0] === 3) quit = true;
    };
    const tty = process.stdin.isTTY && !values.json;
    if (tty) {
      process.stdin.setRawMode(true);
      process.stdin.on('data', onKey);
    }
    process.once('SIGINT', () => (quit = true));
    let previous: { at: number; o: Overview } | undefined;
    try {
      for (let i = 0; i < iterations && !quit; i++) {
        const o = await adminCall<Overview>(target, 'GET', '/api/overview');
        const at = Date.now();
        let rates;
        if (previous) {
          const dt = (at - previous.at) / 1000;
          const delta = (k: string) => ((o.counters[k] ?? 0) - (previous!.o.counters[k] ?? 0)) / dt;
          const requests = o.clients.reduce((n, c) => n + c.requests, 0) - previous.o.clients.reduce((n, c) => n + c.requests, 0);
          rates = { commitsPerSecond: delta('commits'), recallsPerSecond: delta('leaseRecalls'), requestsPerSecond: Math.max(0, requests / dt) };
        }
        previous = { at, o };
        if (values.json) process.stdout.write(`${JSON.stringify({ at, overview: o, rates: rates ?? null })}\n`);
        else process.stdout.write(`\x1b[2J\x1b[H${new Date(at).toISOString()}  (q to quit)\n\n${renderStatus(o, rates)}`);
        if (i + 1 < iterations) await new Promise((r) => setTimeout(r, interval));
      }
    } finally {
      if (tty) {
        process.stdin.setRawMode(false);
        process.stdin.off('data', onKey);
        process.stdin.pause();
      }
    }
    return 0;
  },
};
