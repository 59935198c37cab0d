import { KilnError } from '../errors/index.js';

/**
 * One-at-a-time access per key (per session): requests on one session in one process
 * run one after another, requests on different sessions run in parallel. Waits are
 * bounded: a waiter that times out leaves the queue without disturbing the others.
 */
export type Unlock = () => void;

interface Waiter {
  grant: () => void;
  timer: NodeJS.Timeout | undefined;
}

interface Slot {
  busy: boolean;
  waiters: Waiter[];
}

export class KeyedQueue {
  private readonly slots = new Map<string, Slot>();

  /** Number of keys with a holder or waiters. */
  get size(): number {
    return this.slots.size;
  }

  isBusy(key: string): boolean {
    return this.slots.get(key)?.busy === true;
  }

  waiting(key: string): number {
    return this.slots.get(key)?.waiters.length ?? 0;
  }

  /** The lock at once if nobody holds or waits for the key, else undefined (no waiting). */
  tryLock(key: string): Unlock | undefined {
    if (this.slots.has(key)) return undefined;
    const slot: Slot = { busy: true, waiters: [] };
    this.slots.set(key, slot);
    return this.unlocker(key, slot);
  }

  lock(key: string, timeoutMs: number): Promise<Unlock> {
    let slot = this.slots.get(key);
    if (!slot) this.slots.set(key, (slot = { busy: false, waiters: [] }));
    if (!slot.busy) {
      slot.busy = true;
      return Promise.resolve(this.unlocker(key, slot));
    }
    const held = slot;
    return new Promise<Unlock>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => resolve(this.unlocker(key, held)),
        timer: setTimeout(() => {
          const at = held.waiters.indexOf(waiter);
          if (at >= 0) held.waiters.splice(at, 1);
          reject(new KilnError('KILN_ERR_LEASE_TIMEOUT', `session stayed busy with other requests in this process for ${timeoutMs} ms`, { details: { timeoutMs } }));
        }, timeoutMs),
      };
      held.waiters.push(waiter);
    });
  }

  /** Runs fn with the key locked; the lock is released however fn ends. */
  async run<T>(key: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
    const unlock = await this.lock(key, timeoutMs);
    try {
      return await fn();
    } finally {
      unlock();
    }
  }

  private unlocker(key: string, slot: Slot): Unlock {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = slot.waiters.shift();
      if (next) {
        clearTimeout(next.timer);
        next.grant();
      } else {
        slot.busy = false;
        if (this.slots.get(key) === slot) this.slots.delete(key);
      }
    };
  }
}
