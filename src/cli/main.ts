import { redactCredentials } from '../util/log.js';
import { KilnError } from '../errors/index.js';
import { balancerCommand } from './commands/balancer.js';
import { consoleCommand } from './commands/console.js';
import { demoCommand } from './commands/demo.js';
import { repairCommand } from './commands/repair.js';
import { serverCommand } from './commands/server.js';
import { sessionsCommand } from './commands/sessions.js';
import { statusCommand } from './commands/status.js';
import { topCommand } from './commands/top.js';
import type { Command } from './command.js';

/**
 * `kiln <command>`: one entry point, one module per command under commands/.
 * Later parts (demo, balancer, status, sessions) register here.
 */
const COMMANDS: Command[] = [demoCommand, serverCommand, repairCommand, balancerCommand, consoleCommand, statusCommand, sessionsCommand, topCommand];

export function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: kiln <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `kiln <command> --help` for a command\'s options.',
    '',
  ].join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name === undefined ? 1 : 0;
  }
  if (name === '--version' || name === '-v') {
    const { readFileSync } = await import('node:fs');
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`kiln: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof KilnError) {
      process.stderr.write(`kiln ${name}: ${redactCredentials(err.message)} [${err.code}]\n`);
      return 1;
    }
    if (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`kiln ${name}: ${redactCredentials(err.message)}\n\n${command.help}`);
      return 2;
    }
    throw err;
  }
}
