/**
 * A count per session id, for what the commit path must know is going on with a session:
 * its open readers (see CommitPipeline.readers) and its commits in flight that are not
 * pipelined (CommitPipeline.unconfirmed). An entry goes when its count is back to 0.
 */
export class SessionCounts {
  private readonly counts = new Map<string, number>();

  add(sessionId: string): void {
    this.counts.set(sessionId, (this.counts.get(sessionId) ?? 0) + 1);
  }

  remove(sessionId: string): void {
    const left = (this.counts.get(sessionId) ?? 0) - 1;
    if (left > 0) this.counts.set(sessionId, left);
    else this.counts.delete(sessionId);
  }

  has(sessionId: string): boolean {
    return this.counts.has(sessionId);
  }
}
