import type { Engine } from '../engines/engine.js';
import type { TouchItem } from '../session/model.js';
import type { ClientCounters } from './counters.js';

/**
 * Access times of the sessions this process serves, sent to the tier in batches rather
 * than one call per request: a request that reads a held session costs no round trip.
 * The tier expires a held session once its last reported access is older than the idle
 * timeout plus the grace it announces, so the batches go at least twice within that
 * grace (fit()). A lease given back carries its own pending access time (take()).
 */
export class AccessTouches {
  private readonly pending = new Map<string, TouchItem>();
  private timer: NodeJS.Timeout;
  private intervalMs: number;
  private stopped = false;

  constructor(
    private readonly engine: Engine,
    private readonly counters: ClientCounters,
    private readonly configuredIntervalMs: number,
  ) {
    this.intervalMs = configuredIntervalMs;
    this.timer = this.start(configuredIntervalMs);
  }

  /** Notes a use of the session under the lease `token` (the last one wins). */
  note(sessionId: string, token: number, at: number): void {
    const touch = this.pending.get(sessionId);
    if (touch) {
      touch.token = token;
      touch.at = at;
    } else {
      this.pending.set(sessionId, { sessionId, token, at });
    }
    this.fit();
  }

  /** The access time not yet sent for this lease, removed (it travels with the release). */
  take(sessionId: string, token: number): number | undefined {
    const touch = this.pending.get(sessionId);
    this.pending.delete(sessionId);
    return touch?.token === token ? touch.at : undefined;
  }

  delete(sessionId: string): void {
    this.pending.delete(sessionId);
  }

  clear(): void {
    this.pending.clear();
  }

  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const items = [...this.pending.values()];
    this.pending.clear();
    this.counters.touchesSent += items.length;
    await this.engine.touch(items).catch(() => undefined);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** The interval the tier's touch grace allows (known once connected). */
  private fit(): void {
    const grace = this.engine.limits?.touchGraceMs;
    const wanted = grace ? Math.max(10, Math.min(this.configuredIntervalMs, Math.floor(grace / 2))) : this.configuredIntervalMs;
    if (wanted === this.intervalMs || this.stopped) return;
    this.intervalMs = wanted;
    clearInterval(this.timer);
    this.timer = this.start(wanted);
  }

  private start(ms: number): NodeJS.Timeout {
    const timer = setInterval(() => void this.flush(), ms);
    timer.unref();
    return timer;
  }
}
