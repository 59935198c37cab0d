import { parseArgs } from 'node:util';
import { ADMIN_FLAGS, ADMIN_HELP, adminCall, adminTarget, renderStatus, type Overview } from '../admin-client.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln status [options]

One screen: the kiln server, its storage, sessions, leases, connected app servers
(leases, requests, near-cache hit ratio) and health.

Options:
${ADMIN_HELP}
  -h, --help
`;

export const statusCommand: Command = {
  name: 'status',
  summary: 'one screen: server, clients, sessions, rates, health',
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { ...ADMIN_FLAGS, help: { type: 'boolean', short: 'h' } }, strict: true });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const overview = await adminCall<Overview>(adminTarget(values), 'GET', '/api/overview');
    process.stdout.write(values.json ? `${JSON.stringify(overview)}\n` : renderStatus(overview));
    return 0;
  },
};
