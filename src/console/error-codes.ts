/**
 * Error codes as the console counts them. On Redis they come from the app servers'
 * reports, another process's writing: each new string would become a
 * `kiln_errors_total{code=…}` series and an events-pane entry for as long as the console
 * runs. A code is kept only when it looks like ours, and only the first MAX_ERROR_CODES
 * distinct ones are kept apart; the rest are counted together as OTHER_CODE.
 */
export const ERROR_CODE_PATTERN = /^KILN_ERR_[A-Z0-9_]{1,48}$/;
/** Distinct codes kept apart (Kiln has about 40); any more are counted as OTHER_CODE. */
export const MAX_ERROR_CODES = 64;
export const OTHER_CODE = 'other';

export class ErrorCodes {
  private readonly known = new Set<string>();

  constructor(private readonly max = MAX_ERROR_CODES) {}

  /** The code to count `code` under: itself while it is well-formed and among the first `max`, else OTHER_CODE. */
  label(code: unknown): string {
    if (typeof code !== 'string' || !ERROR_CODE_PATTERN.test(code)) return OTHER_CODE;
    if (this.known.has(code)) return code;
    if (this.known.size >= this.max) return OTHER_CODE;
    this.known.add(code);
    return code;
  }

  /** Counts by code with every code labelled (those under OTHER_CODE summed); counts that are not finite and ≥ 0 are dropped. */
  fold(errors: Readonly<Record<string, unknown>>): Record<string, number> {
    const out = new Map<string, number>();
    for (const [code, n] of Object.entries(errors)) {
      if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) continue;
      const label = this.label(code);
      out.set(label, (out.get(label) ?? 0) + n);
    }
    return Object.fromEntries(out);
  }
}
