import { KilnError } from '../errors/index.js';

/** How often the balancer's status is read, and how long one read may take. */
const POLL_MS = 1000;
const TIMEOUT_MS = 2000;

export interface BalancerOptions {
  /** The balancer's base URL (http://host:port); its status is GET <url>/_kiln/balancer. */
  url: string;
  /** The balancer's admin token (kiln balancer --admin-token-file). */
  token: string;
}

/** What the overview carries of the balancer: its last status, and whether the last read worked. */
export interface BalancerView {
  url: string;
  reachable: boolean;
  /** Why the last read failed (status code or network error), without the token. */
  error: string | null;
  /** When the status below was read; null before the first good read. */
  at: number | null;
  /** `kiln balancer`'s status JSON: affinity, counters, nodes (name, url, healthy, draining, requests, …). */
  status: Record<string, unknown> | null;
}

/**
 * Follows a `kiln balancer`'s status so the console can draw it in front of the app
 * servers, with its per-node request counts and health. The balancer is another process
 * the console may not reach: a failed read keeps the last status and says why, and the
 * overview never waits for the balancer.
 */
export class BalancerWatch {
  private view: BalancerView;
  private readonly timer: NodeJS.Timeout;
  private reading = false;

  constructor(private readonly options: BalancerOptions) {
    let base: URL;
    try {
      base = new URL(options.url);
    } catch {
      throw new KilnError('KILN_ERR_INVALID_OPTION', 'AdminServer: option "balancer.url" must be an http:// or https:// URL', { details: { option: 'balancer.url' } });
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new KilnError('KILN_ERR_INVALID_OPTION', 'AdminServer: option "balancer.url" must be an http:// or https:// URL', { details: { option: 'balancer.url' } });
    if (typeof options.token !== 'string' || options.token.length === 0) throw new KilnError('KILN_ERR_INVALID_OPTION', 'AdminServer: option "balancer.token" is required (the balancer\'s admin token)', { details: { option: 'balancer.token' } });
    this.view = { url: base.origin, reachable: false, error: 'not read yet', at: null, status: null };
    this.timer = setInterval(() => void this.read(), POLL_MS);
    this.timer.unref();
    void this.read();
  }

  current(): BalancerView {
    return this.view;
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async read(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const res = await fetch(`${this.view.url}/_kiln/balancer`, { headers: { authorization: `Bearer ${this.options.token}` }, signal: AbortSignal.timeout(TIMEOUT_MS) });
      const body = (await res.json().catch(() => null)) as Record<string, unknown> | null;
      if (!res.ok || body === null || !Array.isArray(body['nodes'])) this.view = { ...this.view, reachable: false, error: `HTTP ${res.status}${typeof body?.['code'] === 'string' ? ` ${body['code']}` : ''}` };
      else this.view = { ...this.view, reachable: true, error: null, at: Date.now(), status: body };
    } catch (err) {
      this.view = { ...this.view, reachable: false, error: (err as Error).name === 'TimeoutError' ? `no answer within ${TIMEOUT_MS} ms` : String((err as Error).message).slice(0, 200) };
    } finally {
      this.reading = false;
    }
  }
}
