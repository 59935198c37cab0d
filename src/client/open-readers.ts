/**
 * What may still read a session's cached bytes besides the request holding its lock, per
 * session: read-only handles (they decode lazily from the bytes they opened on), a
 * request whose final commit let the next one start (until it closes), and a commit in
 * flight that is not pipelined (its acknowledgement applies its patches to those bytes).
 * While any is counted, a commit copies a large value instead of overwriting it in place
 * (see applyDelta). A handle never closed keeps its session on copies: the safe side.
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
