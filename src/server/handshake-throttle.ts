/**
 * Failed handshakes per peer address, so that a peer guessing tokens or holding
 * handshake slots is turned away at once instead of costing a slot and a deadline each
 * time. Pure (the caller passes the time) and bounded: at most `maxEntries` addresses
 * are remembered, the oldest forgotten first, so a peer with many addresses can make it
 * forget but never grow. It only ever refuses; it never lets anyone in.
 */
export interface HandshakeThrottleOptions {
  /** Failures within `windowMs` after which an address is refused; 0 turns throttling off. */
  maxFailures: number;
  windowMs: number;
  maxEntries: number;
}

interface Entry {
  failures: number;
  windowStart: number;
}

export class HandshakeThrottle {
  /** In order of the last failure (re-inserted on each), so the first is the stalest. */
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly options: HandshakeThrottleOptions) {}

  get size(): number {
    return this.entries.size;
  }

  /** Whether connections from this address are refused right now. */
  blocked(address: string, now: number): boolean {
    if (this.options.maxFailures === 0) return false;
    const e = this.entries.get(address);
    if (!e) return false;
    if (now - e.windowStart >= this.options.windowMs) {
      this.entries.delete(address);
      return false;
    }
    return e.failures >= this.options.maxFailures;
  }

  failed(address: string, now: number): void {
    if (this.options.maxFailures === 0) return;
    let e = this.entries.get(address);
    if (e) this.entries.delete(address);
    if (!e || now - e.windowStart >= this.options.windowMs) e = { failures: 0, windowStart: now };
    e.failures++;
    this.entries.set(address, e);
    if (this.entries.size > this.options.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  /** A peer that knows a token is not guessing: its address starts afresh. */
  succeeded(address: string): void {
    this.entries.delete(address);
  }
}
