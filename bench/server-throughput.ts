import { createSessionClient } from '../src/client/session-client.js';
import { connect } from '../src/engines/kiln/kiln-engine.js';
import { median, timed } from './util.js';

/**
 * The kiln server's commit throughput: one client process holding the leases of many
 * sessions commits a one-field change to each, `inFlight` at a time (pipelined over
 * one connection). The server is a separate process (one core each on this machine).
 */
export async function commitThroughput(url: string, token: string, options: { sessions: number; commits: number; inFlight: number; runs: number }): Promise<{ commitsPerSecond: number; samples: number[] }> {
  const kiln = createSessionClient({ engine: connect(url, { token }) });
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
  for (let r = 0; r < options.runs; r++) samples.push(Math.round((await timed(run)).perSecond));
  await kiln.close();
  return { commitsPerSecond: median(samples), samples };
}
