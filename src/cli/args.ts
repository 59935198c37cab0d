import { isValidSessionId } from '../session/id.js';
import { KilnError } from '../errors/index.js';
import { LOG_LEVELS, type LogLevel } from '../util/log.js';

/**
 * An integer flag, checked, naming the flag when it is not one. Decimal digits only:
 * `Number()` would take '' and ' ' (an unset shell variable) as 0, which for several
 * flags means any port, no limit or off, and '0x10' or '1e3' as numbers.
 */
export function intFlag(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && /^-?\d{1,16}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new KilnError('KILN_ERR_INVALID_OPTION', `--${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`);
  return n;
}

/**
 * An address flag (`--host`, `--admin-host`), checked: an empty one (an unset shell
 * variable) would make Node listen on every interface.
 */
export function hostFlag(value: string | undefined, name: string, fallback: string): string;
export function hostFlag(value: string | undefined, name: string, fallback: undefined): string | undefined;
export function hostFlag(value: string | undefined, name: string, fallback: string | undefined): string | undefined {
  if (value === undefined) return fallback;
  if (value.trim() === '') throw new KilnError('KILN_ERR_INVALID_OPTION', `--${name} must name an address${fallback ? ` (default ${fallback})` : ''}: an empty one would mean every interface`, { details: { option: `--${name}` } });
  return value;
}

/** `--log-level`, checked (default info). */
export function logLevelFlag(value: string | undefined): LogLevel {
  const level = value ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new KilnError('KILN_ERR_INVALID_OPTION', `--log-level must be ${LOG_LEVELS.join(', ')} (got ${JSON.stringify(level.slice(0, 40))})`);
  return level as LogLevel;
}

/**
 * Arguments made safe for `parseArgs` where values may begin with a dash: session ids
 * and cursors are base64url, so one in 32 starts with '-' (and one in 1,024 with '--'),
 * which parseArgs would read as an option ("Unknown option '-r'"). A known string
 * option's value is joined to it (`--after=-x…`), unless the value is one of the known
 * options itself; the argument in the id slot (right after a verb of `idVerbs`) is passed
 * as a positional when it does not begin with a dash or is a valid session id. Anything
 * else that looks like an option is left for parseArgs to judge (`-h`, a mistyped
 * `--jsno`). A value that is itself one of the options needs the `=` form
 * (`--principal=--json`).
 *
 * @example
 * parseArgs({ args: dashSafeArgs(argv, options, ['show', 'rm']), options, allowPositionals: true });
 */
export function dashSafeArgs(argv: readonly string[], options: Readonly<Record<string, { type: 'string' | 'boolean' }>>, idVerbs: readonly string[] = []): string[] {
  const known = (arg: string): { type: 'string' | 'boolean' } | undefined => {
    if (!arg.startsWith('--')) return undefined;
    const name = arg.slice(2).split('=')[0]!;
    return Object.hasOwn(options, name) ? options[name] : undefined;
  };
  const flags: string[] = [];
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    const option = known(arg);
    if (option) {
      // The value is joined unless it is itself one of our options (a value forgotten).
      const next = argv[i + 1];
      if (option.type === 'string' && !arg.includes('=') && next !== undefined && !known(next)) flags.push(`${arg}=${argv[++i]!}`);
      else flags.push(arg);
    } else if (positionals.length === 1 && idVerbs.includes(positionals[0]!) && (!arg.startsWith('-') || isValidSessionId(arg))) {
      positionals.push(arg);
    } else if (arg.startsWith('-') && arg !== '-') {
      flags.push(arg);
    } else {
      positionals.push(arg);
    }
  }
  return [...flags, '--', ...positionals];
}

