import { parseArgs } from 'node:util';
import { ADMIN_FLAGS, ADMIN_HELP, BALANCER_FLAGS, BALANCER_HELP, CALL_TIMEOUT_MS, adminCall, adminTarget, balancerTarget, clusterJson, readCluster, renderCluster, renderStatus, type Overview } from '../admin-client.js';
import type { Command } from '../command.js';

const HELP = `Usage: kiln status [options]

One screen: the kiln server, its storage, sessions, leases, connected app servers
(leases, requests, near-cache hit ratio) and health; with a balancer (a running demo's,
or --balancer), also the balancer and each app server as it sees them. Each part is
asked at once and given ${CALL_TIMEOUT_MS / 1000} s in all: a part that does not answer is shown UNREACHABLE
(exit status 1) and the others are still shown.

Options:
${ADMIN_HELP}
${BALANCER_HELP}
  -h, --help
`;

export const statusCommand: Command = {
  name: 'status',
  summary: 'one screen: server, clients, sessions, rates, health',
  outputOnly: true,
  help: HELP,
  async run(argv) {
    const { values } = parseArgs({ args: argv, options: { ...ADMIN_FLAGS, ...BALANCER_FLAGS, help: { type: 'boolean', short: 'h' } }, strict: true });
    if (values.help) {
      process.stdout.write(HELP);
      return 0;
    }
    const admin = adminTarget(values);
    const balancer = balancerTarget(values, admin);
    if (!balancer) {
      // The kiln server alone: its error (with its hint) is the whole answer.
      const overview = await adminCall<Overview>(admin, 'GET', '/api/overview');
      process.stdout.write(values.json ? `${JSON.stringify(overview)}\n` : renderStatus(overview));
      return 0;
    }
    const view = await readCluster(admin, balancer);
    process.stdout.write(values.json ? `${JSON.stringify(clusterJson(view))}\n` : renderCluster(view, admin, balancer));
    return Object.keys(view.errors).length > 0 ? 1 : 0;
  },
};
