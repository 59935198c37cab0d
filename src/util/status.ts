/**
 * A typed stream of status changes that callers can iterate (`for await (const s of
 * engine.status())`) or listen to. Iterators buffer a bounded number of updates so a
 * slow consumer cannot make the engine grow without limit.
 */
export class StatusStream<S> {
  private readonly listeners = new Set<(status: S) => void>();
  private readonly iterators = new Set<{ queue: S[]; wake: (() => void) | undefined; done: boolean }>();

  constructor(private readonly maxBuffered = 256) {}

  push(status: S): void {
    for (const listener of this.listeners) {
      try {
        listener(status);
      } catch {
        // A listener's failure is its own.
      }
    }
    for (const it of this.iterators) {
      if (it.queue.length >= this.maxBuffered) it.queue.shift();
      it.queue.push(status);
      it.wake?.();
    }
  }

  on(listener: (status: S) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  end(): void {
    for (const it of this.iterators) {
      it.done = true;
      it.wake?.();
    }
    this.listeners.clear();
  }

  [Symbol.asyncIterator](): AsyncIterator<S> {
    const state = { queue: [] as S[], wake: undefined as (() => void) | undefined, done: false };
    this.iterators.add(state);
    return {
      next: async (): Promise<IteratorResult<S>> => {
        while (state.queue.length === 0 && !state.done) await new Promise<void>((resolve) => (state.wake = resolve));
        state.wake = undefined;
        if (state.queue.length > 0) return { value: state.queue.shift()!, done: false };
        this.iterators.delete(state);
        return { value: undefined, done: true };
      },
      return: async (): Promise<IteratorResult<S>> => {
        state.done = true;
        this.iterators.delete(state);
        return { value: undefined, done: true };
      },
    };
  }
}
