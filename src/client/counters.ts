/**
 * The client's figures (SessionClient.stats(), the console, metrics): one mutable record
 * the client's parts count into, so a figure has one owner and no part reaches into
 * another to bump it.
 */
export interface ClientCounters {
  opens: number;
  created: number;
  acquires: number;
  loads: number;
  commits: number;
  commitBytes: number;
  emptyCommits: number;
  commitRetries: number;
  /** Final commits that let the next request on their session start before their acknowledgement. */
  pipelinedCommits: number;
  /** Large values a commit changed by overwriting the cached bytes instead of copying them (see applyDelta). */
  overwritesInPlace: number;
  handovers: number;
  revocations: number;
  leasesLost: number;
  asyncCommitErrors: number;
  touchesSent: number;
  localExpiries: number;
}

export function newCounters(): ClientCounters {
  return {
    opens: 0,
    created: 0,
    acquires: 0,
    loads: 0,
    commits: 0,
    commitBytes: 0,
    emptyCommits: 0,
    commitRetries: 0,
    pipelinedCommits: 0,
    overwritesInPlace: 0,
    handovers: 0,
    revocations: 0,
    leasesLost: 0,
    asyncCommitErrors: 0,
    touchesSent: 0,
    localExpiries: 0,
  };
}
