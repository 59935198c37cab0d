import { KilnError } from '../errors/index.js';
import { clientStatsFrom } from '../protocol/client-stats.js';
import { ERROR_CODE_PATTERN } from './error-codes.js';

/** How often the balancer's status is read, and how long one read may take. */
const POLL_MS = 1000;
const TIMEOUT_MS = 2000;
/** A status answer larger than this is not read (a balancer of 256 nodes answers ~70 KiB). */
export const MAX_STATUS_BYTES = 1024 * 1024;
/** Nodes kept of one status; the diagram draws each. */
export const MAX_NODES = 256;

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
  /** `kiln balancer`'s status JSON as checked by balancerStatusFrom: affinity, counters, nodes (name, url, healthy, draining, requests, …). */
  status: BalancerStatus | null;
}

/** One node of the balancer as the console shows it; every field of the type it says. */
export interface BalancerNode {
  name: string;
  url: string;
  healthy: boolean;
  draining: boolean;
  pid: number | null;
  requests: number | null;
  active: number | null;
  queued: number | null;
  failures: number | null;
  lastError: string | null;
  lastCheckAt: number | null;
}

export type BalancerStatus = Record<string, unknown> & { affinity: string; nodes: BalancerNode[] };

/**
 * A balancer's status answer as the console keeps it, or undefined when it is not one.
 * The balancer is another process, maybe not ours: its answer goes to the page, whose
 * diagram reads each node's name and url as strings. So a node without a name, url or
 * health is dropped, its other fields are figures or null, strings are cut, at most
 * MAX_NODES are kept; the rest of the status keeps only figures and short strings.
 */
export function balancerStatusFrom(body: unknown): BalancerStatus | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const nodes = (body as { nodes?: unknown }).nodes;
  if (!Array.isArray(nodes)) return undefined;
  const rest: Record<string, unknown> = { ...(body as Record<string, unknown>) };
  delete rest['nodes'];
  const kept: BalancerNode[] = [];
  for (const n of nodes) {
    if (kept.length >= MAX_NODES) break;
    const node = balancerNodeFrom(n);
    if (node) kept.push(node);
  }
  const affinity = (body as { affinity?: unknown }).affinity;
  return { ...clientStatsFrom(rest), affinity: typeof affinity === 'string' ? affinity.slice(0, 32) : 'unknown', nodes: kept };
}

function balancerNodeFrom(n: unknown): BalancerNode | undefined {
  if (typeof n !== 'object' || n === null) return undefined;
  const o = n as Record<string, unknown>;
  if (typeof o['name'] !== 'string' || o['name'].length === 0 || o['name'].length > 128) return undefined;
  if (typeof o['url'] !== 'string' || o['url'].length > 512) return undefined;
  if (typeof o['healthy'] !== 'boolean') return undefined;
  const figure = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return {
    name: o['name'],
    url: o['url'],
    healthy: o['healthy'],
    draining: o['draining'] === true,
    pid: figure(o['pid']),
    requests: figure(o['requests']),
    active: figure(o['active']),
    queued: figure(o['queued']),
    failures: figure(o['failures']),
    lastError: typeof o['lastError'] === 'string' ? o['lastError'].slice(0, 256) : null,
    lastCheckAt: figure(o['lastCheckAt']),
  };
}

/** The body of `res` as text, refused past `limit` bytes (its length said, or counted as it comes). */
async function readLimited(res: Response, limit: number): Promise<string> {
  const said = Number(res.headers.get('content-length'));
  if (Number.isFinite(said) && said > limit) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`status answer of ${said} bytes, above ${limit}`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw new Error(`status answer above ${limit} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
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
      const text = await readLimited(res, MAX_STATUS_BYTES);
      let body: unknown = null;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: said below
      }
      const status = res.ok ? balancerStatusFrom(body) : undefined;
      const code = (body as { code?: unknown } | null)?.code;
      if (!status) this.view = { ...this.view, reachable: false, error: `HTTP ${res.status}${typeof code === 'string' && ERROR_CODE_PATTERN.test(code) ? ` ${code}` : res.ok ? ': not a kiln balancer status' : ''}` };
      else this.view = { ...this.view, reachable: true, error: null, at: Date.now(), status };
    } catch (err) {
      this.view = { ...this.view, reachable: false, error: (err as Error).name === 'TimeoutError' ? `no answer within ${TIMEOUT_MS} ms` : String((err as Error).message).slice(0, 200) };
    } finally {
      this.reading = false;
    }
  }
}
