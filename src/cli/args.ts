import { KilnError } from '../errors/index.js';

/** An integer flag, checked, naming the flag when it is not one. */
export function intFlag(value: unknown, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new KilnError('KILN_ERR_INVALID_OPTION', `--${name} must be an integer from ${min} to ${max} (got ${JSON.stringify(value)})`);
  return n;
}
