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
  private stopped = false;
  /** Nodes whose check is under way, and whether a failed request made it a probe. */
  private readonly checking = new Map<BackendNode, { suspected: boolean; probeAfter: boolean }>();

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
    this.stopped = true;
    clearInterval(this.timer);
  }

  async checkAll(): Promise<void> {
    await Promise.all(this.nodes.map((n) => this.run(n, false)));
  }

  /** One check of the node now, unless one is under way already. */
  probe(node: BackendNode): void {
    void this.run(node, true);
  }

  /**
   * Checks the node unless a check of it is under way: with timeoutMs above intervalMs
   * they would pile up on a slow node. A probe meanwhile makes the running check count as
   * the probe, so a node that just failed a request still leaves at its first failure;
   * and if that check succeeds, it may have been answered before the failure (a node
   * killed while its check was on the way back), so the probe runs once more after it.
   */
  private run(node: BackendNode, suspected: boolean): Promise<void> {
    const running = this.checking.get(node);
    if (running) {
      if (suspected) {
        running.suspected = true;
        running.probeAfter = true;
      }
      return Promise.resolve();
    }
    const state = { suspected, probeAfter: false };
    this.checking.set(node, state);
    return this.check(node, state).finally(() => {
      this.checking.delete(node);
      if (state.probeAfter && node.healthy && !this.stopped) void this.run(node, true);
    });
  }

  /** `state.suspected`: a request to the node failed without an answer, so one more failure is enough. */
  private check(node: BackendNode, state: { readonly suspected: boolean }): Promise<void> {
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
          if (node.healthy && (refused || state.suspected || node.consecutiveFailures >= this.options.fall)) {
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
