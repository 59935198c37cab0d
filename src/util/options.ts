import { KilnError } from '../errors/index.js';

/**
 * One place that checks option bags up front, naming the bad property, so that a typo
 * in a config fails at start-up instead of as odd behaviour under load.
 */
export class OptionReader<T extends object> {
  constructor(
    private readonly scope: string,
    private readonly input: T | undefined,
    known: readonly string[],
  ) {
    if (input !== undefined && (typeof input !== 'object' || input === null)) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `${scope} options must be an object`);
    }
    for (const key of Object.keys(input ?? {})) {
      if (!known.includes(key)) {
        throw new KilnError('KILN_ERR_INVALID_OPTION', `${scope}: unknown option "${key}" (known: ${known.join(', ')})`, { details: { option: key } });
      }
    }
  }

  private raw(name: string): unknown {
    return (this.input as Record<string, unknown> | undefined)?.[name];
  }

  private bad(name: string, expected: string): never {
    const value = this.raw(name);
    throw new KilnError('KILN_ERR_INVALID_OPTION', `${this.scope}: option "${name}" must be ${expected} (got ${describe(value)})`, { details: { option: name } });
  }

  int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) this.bad(name, `an integer from ${min} to ${max}`);
    return value;
  }

  string(name: string, fallback: string): string;
  string(name: string, fallback: undefined): string | undefined;
  string(name: string, fallback: string | undefined): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || value.length === 0) this.bad(name, 'a non-empty string');
    return value;
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (typeof value !== 'boolean') this.bad(name, 'true or false');
    return value;
  }

  oneOf<V extends string>(name: string, allowed: readonly V[], fallback: V): V {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || !allowed.includes(value as V)) this.bad(name, `one of ${allowed.map((a) => `"${a}"`).join(', ')}`);
    return value as V;
  }

  fn<F extends (...args: never[]) => unknown>(name: string): F | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    if (typeof value !== 'function') this.bad(name, 'a function');
    return value as F;
  }

  /** Anything the caller validates itself; present so the key counts as known. */
  any(name: string): unknown {
    return this.raw(name);
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value);
  return typeof value;
}
