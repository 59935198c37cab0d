import { createSessionClient } from '../src/client/session-client.js';
import type { Engine } from '../src/engines/engine.js';
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { median, timed } from './util.js';

export interface ThroughputOptions {
  sessions: number;
  commits: number;
  inFlight: number;
  runs: number;
  /** Called just before the first measured run and just after the last (not around the set-up or the warm-up run). */
  measured?: { before(): void; after(): void };
}

/**
 * The kiln server's commit throughput: one client process holding the leases of many
 * sessions commits a one-field change to each, `inFlight` at a time (pipelined over
 * one connection). The server is a separate process (one core each on this machine).
 */
export function commitThroughput(url: string, token: string, options: ThroughputOptions): Promise<{ commitsPerSecond: number; samples: number[] }> {
  return engineCommitThroughput(connect(url, { token }), options);
}

/** The same measurement through any engine (the kiln server's, Redis's); closes it at the end. */
export async function engineCommitThroughput(engine: Engine, options: ThroughputOptions): Promise<{ commitsPerSecond: number; samples: number[] }> {
  const kiln = createSessionClient({ engine });
  const ids: string[] = [];
  for (let i = 0; i < options.sessions; i++) {
    ids.push(await kiln.withSession(null, (s) => {
      s.set('n', 0);
      s.set('profile', { name: `user ${i}`, plan: 'pro' });
      return s.id;
    }));
  }
  const run = async (): Promise<number> => {
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < options.commits) {
        const id = ids[next++ % ids.length]!;
        const s = await kiln.open(id);
        s.set('n', (s.get<number>('n') ?? 0) + 1);
        await s.commit();
        s.close();
      }
    };
    await Promise.all(Array.from({ length: options.inFlight }, lane));
    return options.commits;
  };
  await run();
  const samples: number[] = [];
  options.measured?.before();
  for (let r = 0; r < options.runs; r++) samples.push(Math.round((await timed(run)).perSecond));
  options.measured?.after();
  await kiln.close();
  return { commitsPerSecond: median(samples), samples };
}
