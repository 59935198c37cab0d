/**
 * Commits through the Redis engine with `replicas: 1` (each confirmed by a replica with
 * WAIT): commits per second and the client's CPU per commit, 20 commits in flight on 200
 * sessions, against a redis-server master with one replica that this bench starts on
 * loopback. With --before it runs another build's engine too, rounds interleaved, the
 * check for a change to how commits wait for replicas.
 *
 *   npm run build && node dist/bench/replicated-commits.js [--before ../other-checkout/dist] [--rounds 5] [--seconds 4]
 *
 * Each run is a fresh process on a fresh master and replica.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { replicaOnline, startRedisNode } from '../test/helpers/redis.js';
import { argValue, fmt, median, table } from './util.js';

const args = process.argv.slice(2);
const arg = (name: string): string | undefined => argValue(args, name);
const before = arg('--before');
const rounds = Number(arg('--rounds') ?? 5);
const seconds = Number(arg('--seconds') ?? 4);
const after = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (before && !existsSync(join(before, 'src', 'engines', 'redis', 'redis-engine.js'))) {
  console.error("usage: node dist/bench/replicated-commits.js [--before <other build's dist folder>] [--rounds 5] [--seconds 4]");
  process.exit(2);
}

interface Run {
  commitsPerSecond: number;
  cpuMicrosPerCommit: number;
  errors: number;
}

/** One run of a build's Redis engine in a fresh process, against the master on `port`. */
function runOnce(dist: string, port: number): Run {
  const module = (path: string) => JSON.stringify(join(dist, path));
  const script = `
    const { RedisEngine } = await import(${module('src/engines/redis/redis-engine.js')});
    const { encodeAttribute } = await import(${module('src/session/codec.js')});
    const { generateSessionId } = await import(${module('src/session/id.js')});
    const engine = new RedisEngine({ url: 'redis://127.0.0.1:${port}?replicas=1', replicaTimeoutMs: 1000 });
    await engine.connect();
    const commit = (s) => engine.commit({ sessionId: s.id, token: s.token, commitId: s.id + ':' + s.version, baseVersion: s.version, lastAccessedAt: Date.now(), set: [['n', encodeAttribute('n', s.version)]], del: [] });
    const sessions = [];
    for (let i = 0; i < 200; i++) {
      const id = generateSessionId();
      const { token } = await engine.acquire(id);
      const s = { id, token, version: 0, busy: false };
      await commit(s);
      s.version = 1;
      sessions.push(s);
    }
    let commits = 0, errors = 0, next = 0;
    const end = Date.now() + ${seconds * 1000};
    const cpu = process.cpuUsage();
    const started = performance.now();
    await Promise.all(Array.from({ length: 20 }, async () => {
      while (Date.now() < end) {
        const s = sessions[next++ % sessions.length];
        if (s.busy) continue;
        s.busy = true;
        try {
          await commit(s);
          s.version++;
          commits++;
        } catch {
          errors++;
        } finally {
          s.busy = false;
        }
      }
    }));
    const elapsed = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    process.stdout.write(JSON.stringify({ commitsPerSecond: commits / elapsed, cpuMicrosPerCommit: (used.user + used.system) / commits, errors }));
    await engine.close();
    process.exit(0);`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', cwd: resolve(dist, '..') });
  return JSON.parse(out) as Run;
}

const builds: [string, string][] = before ? [['before', resolve(before)], ['after', after]] : [['this build', after]];
const runs = new Map<string, Run[]>(builds.map(([name]) => [name, []]));
for (let round = 1; round <= rounds; round++) {
  for (const [name, dist] of builds) {
    const master = await startRedisNode();
    const replica = await startRedisNode({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
    try {
      await replicaOnline(master.port, replica.port);
      runs.get(name)!.push(runOnce(dist, master.port));
    } finally {
      await replica.kill();
      await master.kill();
    }
  }
  console.log(`round ${round}/${rounds} done`);
}

console.log(`\nCommits with replicas: 1 (20 in flight, ${seconds} s a run; medians of ${rounds} interleaved rounds${before ? `; before = ${before}` : ''}):\n`);
console.log(
  table(
    [...runs].map(([name, list]) => ({
      build: name,
      'commits/s': fmt(median(list.map((r) => r.commitsPerSecond))),
      'client CPU µs/commit': fmt(median(list.map((r) => r.cpuMicrosPerCommit)), 1),
      errors: list.reduce((n, r) => n + r.errors, 0),
      'runs (commits/s)': list.map((r) => fmt(r.commitsPerSecond)).join(' '),
      'runs (µs/commit)': list.map((r) => fmt(r.cpuMicrosPerCommit)).join(' '),
    })),
  ),
);
process.exit(0);
