/**
 * A set of listeners that the tier tells what happened. Rule kept: a listener's failure
 * never breaks the tier (or the listeners after it): it is swallowed here, in one place.
 */
export class Listeners<E> {
  private readonly set = new Set<(event: E) => void>();

  /** Adds a listener; the function returned removes it. */
  add(listener: (event: E) => void): () => void {
    this.set.add(listener);
    return () => this.set.delete(listener);
  }

  emit(event: E): void {
    for (const listener of this.set) {
      try {
        listener(event);
      } catch {
        // A listener's failure must not break the tier.
      }
    }
  }
}
