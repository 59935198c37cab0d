/**
 * Read-only handles open, per session. Such a handle decodes its attributes lazily from
 * the cached bytes it opened on, so while one is open a commit must not overwrite those
 * bytes in place: it copies the value instead (see applyDelta). A handle never closed
 * keeps its session on copies, which is the safe side.
 */
export class OpenReaders {
  private readonly counts = new Map<string, number>();

  opened(sessionId: string): void {
    this.counts.set(sessionId, (this.counts.get(sessionId) ?? 0) + 1);
  }

  closed(sessionId: string): void {
    const left = (this.counts.get(sessionId) ?? 0) - 1;
    if (left > 0) this.counts.set(sessionId, left);
    else this.counts.delete(sessionId);
  }

  has(sessionId: string): boolean {
    return this.counts.has(sessionId);
  }
}
