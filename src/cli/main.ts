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
    const guess = closest(name, COMMANDS.map((c) => c.name));
    process.stderr.write(`kiln: unknown command "${name}"${guess ? `; did you mean "${guess}"?` : ''} [KILN_ERR_INVALID_ARGUMENT]\n\n${usage()}`);
    return 2;
  }
  watchOutput(command);
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof KilnError) {
      process.stderr.write(`kiln ${name}: ${redactCredentials(err.message)} [${err.code}]\n`);
      return 1;
    }
    if (err instanceof TypeError && (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      // One line that stays on screen, not the whole help after it.
      const unknown = /Unknown option '(--?[^']+)'/.exec(err.message)?.[1];
      const guess = unknown ? closest(unknown, optionsOf(command.help)) : undefined;
      process.stderr.write(`kiln ${name}: ${redactCredentials(err.message)}${guess ? `; did you mean ${guess}?` : ''} [KILN_ERR_INVALID_OPTION]\nRun \`kiln ${name} --help\` for its options.\n`);
      return 2;
    }
    throw err;
  }
}

/**
 * What a write to a closed stdout or stderr does (EPIPE, or EIO on a terminal hung up):
 * without a listener it would throw and end the process, skipping a server's graceful
 * stop. An output-only command ends there (`kiln top | head`: exit 0); any other goes on
 * without its output.
 */
function watchOutput(command: Command): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (command.outputOnly && stream === process.stdout) process.exit(err.code === 'EPIPE' ? 0 : 1);
    });
  }
}

/** The long options a command's help lists (`--port`, `--admin-port`, …). */
function optionsOf(help: string): string[] {
  return [...new Set(help.match(/(?<=^|\s)--[a-z][a-z0-9-]*/gm) ?? [])];
}

/** The candidate nearest to `word` by edit distance, if it is near enough to be a typo. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const candidate of candidates) {
    const d = editDistance(word, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 8) return Infinity;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length]!;
}
