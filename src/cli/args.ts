import { KilnError } from '../errors/index.js';

/** An integer flag, checked, naming the flag when it is not one. */
export function intFlag(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new KilnError('KILN_ERR_INVALID_OPTION', `--${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`);
  return n;
}

/**
 * Arguments made safe for `parseArgs` where values may begin with a dash: session ids
 * and cursors are base64url, so one in 32 starts with '-' (and one in 1,024 with '--'),
 * which parseArgs would read as an option ("Unknown option '-r'"). A known string
 * option's value is joined to it (`--after=-x…`), and the argument in the id slot (right
 * after a verb of `idVerbs`) is passed as a positional whatever it begins with.
 * Anything else that looks like an option is left for parseArgs to judge.
 *
 * @example
 * parseArgs({ args: dashSafeArgs(argv, options, ['show', 'rm']), options, allowPositionals: true });
 */
export function dashSafeArgs(argv: readonly string[], options: Readonly<Record<string, { type: 'string' | 'boolean' }>>, idVerbs: readonly string[] = []): string[] {
  const flags: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    const option = arg.startsWith('--') ? options[arg.slice(2).split('=')[0]!] : undefined;
    if (option) {
      if (option.type === 'string' && !arg.includes('=') && i + 1 < argv.length) flags.push(`${arg}=${argv[++i]!}`);
      else flags.push(arg);
    } else if (positionals.length === 1 && idVerbs.includes(positionals[0]!)) {
      positionals.push(arg);
    } else if (arg.startsWith('-') && arg !== '-') {
      flags.push(arg);
    } else {
      positionals.push(arg);
    }
  }
  return [...flags, '--', ...positionals];
}
