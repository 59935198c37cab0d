/**
 * Calls waiting for the kiln engine's connection to be up. Rule kept: a call made while
 * the connection is down waits for it no longer than its own timeout, and every waiter
 * is settled exactly once (connected, failed, closed, or timed out).
 */
import type { KilnError } from '../../errors/index.js';

interface Waiting {
  resolve: () => void;
  reject: (err: KilnError) => void;
  timer: NodeJS.Timeout;
}

export class ReadyWaiters {
  private readonly waiting = new Set<Waiting>();

  get size(): number {
    return this.waiting.size;
  }

  /** Resolves on resolveAll(); rejects on rejectAll() or with `onTimeout()` after timeoutMs. */
  wait(timeoutMs: number, onTimeout: () => KilnError): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiting = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiting.delete(waiter);
          reject(onTimeout());
        }, timeoutMs),
      };
      this.waiting.add(waiter);
    });
  }

  resolveAll(): void {
    for (const w of this.waiting) {
      clearTimeout(w.timer);
      w.resolve();
    }
    this.waiting.clear();
  }

  rejectAll(error: KilnError): void {
    for (const w of this.waiting) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.waiting.clear();
  }
}
