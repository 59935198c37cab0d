import { request } from 'node:http';
import type { BackendNode } from './node-table.js';

/**
 * Active health checks: GET <healthPath> on every node each interval; `fall`
 * consecutive failures mark it down, one success brings it back, and a refused
 * connection marks it down at once (nothing listens: the process is gone). Passive
 * detection: a refused connection while proxying marks a node down in the proxy, and a
 * request the node took and closed without an answer triggers an immediate check
 * (`probe`), so a killed node leaves the rotation before its next interval. A probe that
 * fails too marks the node down whatever the failure: a node being killed can still
 * accept the probe's connection for a moment and then reset it, which is not a refusal.
 */
export interface HealthOptions {
  path: string;
  intervalMs: number;
  timeoutMs: number;
  fall: number;
}

export class HealthChecker {
  private timer: NodeJS.Timeout | undefined;
  private readonly probing = new Set<BackendNode>();

  constructor(
    private readonly nodes: readonly BackendNode[],
    private readonly options: HealthOptions,
    private readonly onChange: (node: BackendNode, healthy: boolean) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.checkAll(), this.options.intervalMs);
    this.timer.unref();
    void this.checkAll();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async checkAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.check(n)));
  }

  /** One check of the node now, unless one is under way already. */
  probe(node: BackendNode): void {
    if (this.probing.has(node)) return;
    this.probing.add(node);
    void this.check(node, true).finally(() => this.probing.delete(node));
  }

  /** `suspected`: a request to the node just failed without an answer, so one more failure is enough. */
  private check(node: BackendNode, suspected = false): Promise<void> {
    return new Promise((resolve) => {
      const done = (ok: boolean, reason?: string, refused = false): void => {
        node.lastCheckAt = Date.now();
        if (ok) {
          node.consecutiveFailures = 0;
          if (!node.healthy) {
            node.healthy = true;
            node.lastError = undefined;
            this.onChange(node, true);
          }
        } else {
          node.consecutiveFailures++;
          if (node.healthy && (refused || suspected || node.consecutiveFailures >= this.options.fall)) {
            node.markDown(reason ?? 'health check failed');
            this.onChange(node, false);
          }
        }
        resolve();
      };
      const req = request({ host: node.host, port: node.port, path: this.options.path, method: 'GET', timeout: this.options.timeoutMs, agent: false, headers: { 'user-agent': 'kiln-balancer-health' } }, (res) => {
        res.resume();
        done((res.statusCode ?? 500) < 500, `health check answered ${res.statusCode}`);
      });
      req.on('timeout', () => req.destroy(new Error('health check timed out')));
      req.on('error', (err: NodeJS.ErrnoException) => done(false, err.message, err.code === 'ECONNREFUSED'));
      req.end();
    });
  }
}
