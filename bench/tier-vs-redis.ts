/**
 * The tier against Redis (issue 26): the same N sessions of about 200 bytes (the shape of
 * bench/scale.ts) in a kiln server and in redis-server, in one run.
 *
 *   memory   the kiln server filled through its engine; redis-server filled (a) through
 *            Kiln's Redis engine (the same acquire + commit-and-release per session, so
 *            with its keys and indexes) and (b) as plain hashes (HSET of the same fields,
 *            no index, no TTL: Redis holding the data and nothing else). RSS from
 *            /proc/<pid>/status after the same settle, and Redis's used_memory.
 *   restart  the kiln server (fsync everysec) from spawn to its ready line after SIGTERM;
 *            redis-server with dataset (a) from spawn until PING answers and INFO says
 *            loading:0, loading its RDB (after SAVE), its AOF as Redis 7 writes it by
 *            default (appendonly yes, appendfsync everysec, rewritten: an RDB preamble
 *            and an empty increment), and an AOF of commands only (aof-use-rdb-preamble no).
 *   commits  one kiln server against one redis-server (appendonly yes, appendfsync
 *            everysec) under Kiln's Redis engine: bench/server-throughput.ts, 1,000
 *            sessions, 64 in flight, one field per commit; commits/s, and CPU per 1,000
 *            commits of the server process (/proc/<pid>/stat) and of this client process.
 *
 * Every server runs pinned to CPU 1, this process (the client) to CPU 0, as in
 * bench/http/compare.ts. One phase at a time, each server stopped and its directory
 * removed before the next starts.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { connect as connectKiln } from '../src/engines/kiln/kiln-engine.js';
import { connectRedis } from '../src/engines/redis/redis-engine.js';
import { generateSessionId } from '../src/session/id.js';
import { removeDir, sleep, startKilnServer, tempDir, trackChild } from '../test/helpers/processes.js';
import { startRedisNode, type RedisNode } from '../test/helpers/redis.js';
import { encodeCommand, RespConnection, RespErrorReply, redisInfo } from './resp.js';
import { fill, fillEngine, rssOf, sessionAttributes, sessionCount, timeToReady } from './scale.js';
import { engineCommitThroughput, type ThroughputOptions } from './server-throughput.js';
import { cpusAllowed, pin, processCpuMs } from './proc.js';
import { fmt, median, table } from './util.js';

const SERVER_CPU = 1;
const CLIENT_CPU = 0;
/** scale.ts's settle: V8 gives heap back once the process is idle. The same wait for Redis. */
const SETTLE_MS = 15_000;
const REDIS_LOAD_TIMEOUT_MS = 300_000;
/** Every restart or load is timed this many times (median): one start on a shared machine can be off by a second. */
const RESTARTS = 3;
const REDIS_SERVER = process.env['REDIS_SERVER'] ?? 'redis-server';
const MiB = 2 ** 20;

export interface CommitFigures {
  commitsPerSecond: number;
  samples: number[];
  serverCpuMsPer1000: number;
  clientCpuMsPer1000: number;
}

export interface TierVsRedisResult {
  sessions: number;
  quick: boolean;
  /** Encoded attribute names and values of one session. */
  bytesPerSession: number;
  settleSeconds: number;
  commitSettings: Omit<ThroughputOptions, 'measured'>;
  kiln: {
    fillSeconds: number;
    /** Started, before the fill. */
    emptyRssBytes: number;
    rssBytes: number;
    /** `du -sb` of the data directory after the fill and settle. */
    diskBytes: number;
    /** Median of RESTARTS, each after a SIGTERM. */
    restartSeconds: number;
    restartSamples: number[];
    sessionsAfterRestart: number;
    commits: CommitFigures;
  };
  /** redis-server holding the sessions as Kiln's Redis engine writes them. */
  redisEngine: {
    fillSeconds: number;
    emptyRssBytes: number;
    rssBytes: number;
    usedMemoryBytes: number;
    /** At rest, when memory is read and saved. */
    keys: number;
    /** Keys with a TTL under 10 minutes after the fill (the ping-pong history), waited out before memory is read. */
    transientKeys: number;
    /** MEMORY USAGE of one session's keys by suffix (m, a, c, k …), and each index's share per session. */
    perSession: Record<string, number>;
    rdbBytes: number;
    rdbLoadSeconds: number;
    rdbLoadSamples: number[];
    /** Redis 7's default AOF: the rewrite's RDB-format base plus the (empty) increment. */
    aofBytes: number;
    aofLoadSeconds: number;
    aofLoadSamples: number[];
    /** The same AOF rewritten as commands (aof-use-rdb-preamble no). */
    aofCommandsBytes: number;
    aofCommandsLoadSeconds: number;
    aofCommandsLoadSamples: number[];
    commits: CommitFigures;
  };
  /** redis-server holding the same attributes as one plain hash per session. */
  redisHashes: {
    fillSeconds: number;
    emptyRssBytes: number;
    rssBytes: number;
    usedMemoryBytes: number;
    keys: number;
    perSession: number;
    rdbBytes: number;
    rdbLoadSeconds: number;
    rdbLoadSamples: number[];
  };
}

// ---- CPU placement and accounting ----

/**
 * Starts a server already on `cpu`: a child inherits the CPU mask of the process that
 * spawns it, so this process moves to `cpu` while `start` runs its synchronous part
 * (startKilnServer and spawnRedis spawn there) and comes back at once; a timed start
 * then counts no time spent on the wrong core. A start that spawns later (after an
 * await) is pinned once it is up.
 */
async function startOnCpu<T>(cpu: number, start: () => Promise<T>, pidOf: (started: T) => number): Promise<T> {
  pin(process.pid, cpu);
  let pending: Promise<T>;
  try {
    pending = start();
  } finally {
    pin(process.pid, CLIENT_CPU);
  }
  const started = await pending;
  const pid = pidOf(started);
  if (cpusAllowed(pid) !== String(cpu)) pin(pid, cpu);
  return started;
}

/** engineCommitThroughput with the server's and this process's CPU over the measured runs. */
async function commitFigures(engine: Parameters<typeof engineCommitThroughput>[0], serverPid: number, settings: Omit<ThroughputOptions, 'measured'>): Promise<CommitFigures> {
  let server = 0;
  let client = { user: 0, system: 0 };
  const r = await engineCommitThroughput(engine, {
    ...settings,
    measured: {
      before() {
        server = processCpuMs(serverPid);
        client = process.cpuUsage();
      },
      after() {
        server = processCpuMs(serverPid) - server;
        client = process.cpuUsage(client);
      },
    },
  });
  const thousands = (settings.commits * settings.runs) / 1000;
  return { commitsPerSecond: r.commitsPerSecond, samples: r.samples, serverCpuMsPer1000: server / thousands, clientCpuMsPer1000: (client.user + client.system) / 1000 / thousands };
}

// ---- sizes ----

function duBytes(path: string): number {
  return Number(/(\d+)/.exec(execFileSync('du', ['-sb', path], { encoding: 'utf8' }))?.[1] ?? 0);
}

function fileBytes(path: string): number {
  return existsSync(path) ? statSync(path).size : 0;
}

function aofDirBytes(dir: string): number {
  const aof = join(dir, 'appendonlydir');
  return existsSync(aof) ? readdirSync(aof).reduce((sum, f) => sum + fileBytes(join(aof, f)), 0) : 0;
}

// ---- redis-server ----

async function redisConnection(port: number): Promise<RespConnection> {
  return RespConnection.connect(port, 5000);
}

async function usedMemory(conn: RespConnection): Promise<number> {
  return Number((await redisInfo(conn, 'memory'))['used_memory'] ?? 0);
}

async function dbsize(conn: RespConnection): Promise<number> {
  return Number(await conn.call(['DBSIZE']));
}

/**
 * What a restarted redis-server must have loaded: every session in the id index, and the
 * keys that were there (a few less allowed: a key whose TTL ran out, such as the engine's
 * sweeper turn, may still be counted until Redis's expiry cycle finds it, and a load
 * skips it).
 */
async function checkLoaded(conn: RespConnection, sessions: number, keys: number, from: string): Promise<number> {
  const loaded = await dbsize(conn);
  const indexed = Number(await conn.call(['ZCARD', 'kiln:{idx}:ids']));
  if (indexed !== sessions || loaded < keys - 10 || loaded > keys) throw new Error(`redis-server loaded ${loaded} keys and ${indexed} sessions from its ${from}; ${keys} keys and ${sessions} sessions were written`);
  return loaded;
}

async function waitInfo(conn: RespConnection, section: string, done: (info: Record<string, string>) => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done(await redisInfo(conn, section))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

interface TimedRedis {
  pid: number;
  port: number;
  /** From spawn until PING answers and INFO persistence shows loading:0. */
  seconds: number;
  conn: RespConnection;
  output(): string;
  /** SIGTERM (Redis flushes its AOF, saves nothing with save ""), SIGKILL if it takes over 60 s. */
  stop(): Promise<void>;
}

/**
 * Spawns redis-server on `dir` (whatever RDB or AOF is there gets loaded) and times it
 * until it answers PING with PONG (it answers -LOADING while loading) and INFO says
 * loading:0. The poll is one socket, every 5 ms.
 */
function spawnRedis(port: number, dir: string, args: string[]): Promise<TimedRedis> {
  const started = process.hrtime.bigint();
  const child = spawn(REDIS_SERVER, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--logfile', '', '--save', '', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = trackChild(child);
  let gone = false;
  void exited.then(() => (gone = true));
  const stop = async (): Promise<void> => {
    if (gone) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(timer);
  };
  const ready = async (): Promise<TimedRedis> => {
    const deadline = Date.now() + REDIS_LOAD_TIMEOUT_MS;
    for (;;) {
      if (gone) throw new Error(`redis-server on ${port} exited while starting:\n${out}`);
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`redis-server on ${port} did not load ${dir} within ${REDIS_LOAD_TIMEOUT_MS} ms:\n${out}`);
      }
      const conn = await RespConnection.connect(port, 1000).catch(() => undefined);
      if (!conn) {
        await sleep(5);
        continue;
      }
      try {
        for (;;) {
          const pong = await conn.call(['PING'], 5000).catch((err: unknown) => {
            if (err instanceof RespErrorReply) return String(err.message);
            throw err;
          });
          if (pong === 'PONG' && (await redisInfo(conn, 'persistence'))['loading'] === '0') {
            const seconds = Number(process.hrtime.bigint() - started) / 1e9;
            const stopAndClose = async (): Promise<void> => {
              conn.close();
              await stop();
            };
            return { pid: child.pid!, port, seconds, conn, output: () => out, stop: stopAndClose };
          }
          if (Date.now() > deadline) break;
          await sleep(5);
        }
      } catch {
        // The socket failed (the server went away or is not taking connections yet): connect again.
      }
      conn.close();
    }
  };
  return ready();
}

/**
 * Starts redis-server on `dir` RESTARTS times (stopping `running` first, then each start
 * but the last), timing each load and checking what it loaded; returns the last one running.
 */
async function timedLoads(running: { stop(): Promise<void> } | undefined, port: number, dir: string, args: string[], check: (timed: TimedRedis) => Promise<unknown>): Promise<{ timed: TimedRedis; seconds: number; samples: number[] }> {
  const samples: number[] = [];
  let timed: TimedRedis | undefined;
  try {
    for (let i = 0; i < RESTARTS; i++) {
      await (timed ?? running)?.stop();
      timed = undefined;
      timed = await startOnCpu(SERVER_CPU, () => spawnRedis(port, dir, args), (r) => r.pid);
      samples.push(timed.seconds);
      await check(timed);
    }
  } catch (err) {
    await timed?.stop();
    throw err;
  }
  return { timed: timed!, seconds: median(samples), samples };
}

/** A redis-server from the test helper (empty, no persistence), pinned, with a connection. */
async function freshRedis(dir: string, args: string[] = []): Promise<{ node: RedisNode; conn: RespConnection }> {
  const node = await startOnCpu(SERVER_CPU, () => startRedisNode({ dir, args }), (n) => n.pid);
  return { node, conn: await redisConnection(node.port) };
}

/** MEMORY USAGE of one session's keys, by suffix, and of each index divided by the session count. */
async function engineKeyUsage(conn: RespConnection, sessions: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const [id] = (await conn.call(['ZRANGE', 'kiln:{idx}:ids', '0', '0'])) as string[];
  if (id === undefined) return out;
  for (const suffix of ['m', 'a', 'c', 'l', 'w', 'wd', 'k', 'b', 'x']) {
    const bytes = await conn.call(['MEMORY', 'USAGE', `kiln:{${id}}:${suffix}`, 'SAMPLES', '0']);
    if (typeof bytes === 'number') out[suffix] = bytes;
  }
  for (const index of ['ids', 'exp']) {
    const bytes = await conn.call(['MEMORY', 'USAGE', `kiln:{idx}:${index}`, 'SAMPLES', '0'], 60_000);
    if (typeof bytes === 'number') out[`{idx}:${index} ÷ N`] = Math.round(bytes / sessions);
  }
  return out;
}

/**
 * Leaves a Redis dataset as its sessions are at rest: the keys that would go within
 * `horizonMs` (the engine's ping-pong history `:b`, two minutes after each acquire; any
 * lease or waiter) are waited out, then a SCAN of the whole keyspace makes Redis drop
 * them (it expires what it visits; its own expiry cycle samples keys with a TTL, and
 * every session key has one, so it would take long to find them). Returns how many there were.
 */
async function dropTransientKeys(conn: RespConnection, horizonMs: number, progress: (line: string) => void): Promise<number> {
  const scanAll = async (visit: (keys: string[]) => Promise<void>): Promise<void> => {
    let cursor = '0';
    do {
      const [next, keys] = (await conn.call(['SCAN', cursor, 'COUNT', '10000'], 60_000)) as [string, string[]];
      await visit(keys);
      cursor = next;
    } while (cursor !== '0');
  };
  let transient = 0;
  let longest = 0;
  await scanAll(async (keys) => {
    const ttls = (await conn.pipeline(keys.map((k) => encodeCommand(['PTTL', k])), 60_000)) as number[];
    for (const ttl of ttls) {
      if (ttl < 0 || ttl > horizonMs) continue;
      transient++;
      longest = Math.max(longest, ttl);
    }
  });
  if (transient === 0) return 0;
  progress(`    waiting ${(longest / 1000).toFixed(0)} s for ${fmt(transient)} keys with a TTL under ${horizonMs / 60_000} min (ping-pong history of the fill's acquires) to expire`);
  await sleep(longest + 1000);
  await scanAll(async () => undefined);
  return transient;
}

/** HSET of every session's attributes, 1,000 commands per pipelined write. */
async function fillHashes(conn: RespConnection, count: number, progress: (line: string) => void): Promise<string> {
  const BATCH = 1000;
  const started = Date.now();
  let reported = started;
  let sample = '';
  for (let done = 0; done < count; ) {
    const batch: Buffer[] = [];
    for (let i = done; i < Math.min(count, done + BATCH); i++) {
      const key = `session:${generateSessionId()}`;
      sample ||= key;
      batch.push(encodeCommand(['HSET', key, ...sessionAttributes(i).flat()]));
    }
    await conn.pipeline(batch, 60_000);
    done += batch.length;
    if (Date.now() - reported > 5000) {
      reported = Date.now();
      progress(`    ${fmt(done)} hashes stored (${fmt(done / ((reported - started) / 1000))}/s)`);
    }
  }
  return sample;
}

function samplesText(samples: number[]): string {
  return `${median(samples).toFixed(2)} s (median of ${samples.map((x) => x.toFixed(2)).join(', ')})`;
}

function seconds(since: number): number {
  return (Date.now() - since) / 1000;
}

// ---- the phases ----

async function kilnPhase(count: number, progress: (line: string) => void): Promise<{ bytes: number; figures: Omit<TierVsRedisResult['kiln'], 'commits'> }> {
  const dataDir = tempDir('kiln-tier-');
  let server = await startOnCpu(SERVER_CPU, () => startKilnServer({ dataDir, fsync: 'everysec' }), (s) => s.pid);
  try {
    const emptyRssBytes = rssOf(server.pid);
    progress(`  kiln server (fsync everysec): filling with ${fmt(count)} sessions`);
    const since = Date.now();
    const bytes = await fill(server, count, progress);
    const fillSeconds = seconds(since);
    progress(`    filled in ${fillSeconds.toFixed(1)} s; settling ${SETTLE_MS / 1000} s`);
    await sleep(SETTLE_MS);
    const rssBytes = rssOf(server.pid);
    const diskBytes = duBytes(dataDir);
    progress(`    RSS ${fmt(rssBytes / MiB)} MiB, ${fmt(diskBytes / MiB)} MiB on disk; SIGTERM and restart, ${RESTARTS} times`);
    const restartSamples: number[] = [];
    let sessionsAfterRestart = 0;
    for (let i = 0; i < RESTARTS; i++) {
      await server.stop('SIGTERM');
      const restarted = await startOnCpu(SERVER_CPU, () => timeToReady(dataDir), (r) => r.server.pid);
      server = restarted.server;
      restartSamples.push(restarted.seconds);
      sessionsAfterRestart = await sessionCount(server);
      if (sessionsAfterRestart !== count) throw new Error(`the kiln server restarted with ${sessionsAfterRestart} sessions, ${count} were stored`);
      progress(`    ready after ${restarted.seconds.toFixed(2)} s with ${fmt(sessionsAfterRestart)} sessions`);
    }
    return { bytes, figures: { fillSeconds, emptyRssBytes, rssBytes, diskBytes, restartSeconds: median(restartSamples), restartSamples, sessionsAfterRestart } };
  } finally {
    await server.kill();
    removeDir(dataDir);
  }
}

async function redisEnginePhase(count: number, progress: (line: string) => void): Promise<Omit<TierVsRedisResult['redisEngine'], 'commits'>> {
  const dir = tempDir('kiln-tier-redis-');
  const { node, conn } = await freshRedis(dir);
  const port = node.port;
  let timed: TimedRedis | undefined;
  try {
    const emptyRssBytes = rssOf(node.pid);
    progress(`  redis-server through Kiln's Redis engine: filling with ${fmt(count)} sessions`);
    let since = Date.now();
    await fillEngine(connectRedis(`redis://127.0.0.1:${port}`, { name: 'tier-fill' }), count, progress);
    const fillSeconds = seconds(since);
    progress(`    filled in ${fillSeconds.toFixed(1)} s (${fmt(await dbsize(conn))} keys)`);
    const transientKeys = await dropTransientKeys(conn, 10 * 60_000, progress);
    progress(`    settling ${SETTLE_MS / 1000} s`);
    await sleep(SETTLE_MS);
    const rssBytes = rssOf(node.pid);
    const usedMemoryBytes = await usedMemory(conn);
    const keys = await dbsize(conn);
    const perSession = await engineKeyUsage(conn, count);
    progress(`    RSS ${fmt(rssBytes / MiB)} MiB, used_memory ${fmt(usedMemoryBytes / MiB)} MiB, ${fmt(keys)} keys; SAVE`);
    since = Date.now();
    await conn.call(['SAVE'], REDIS_LOAD_TIMEOUT_MS);
    const rdbBytes = fileBytes(join(dir, 'dump.rdb'));
    progress(`    RDB ${fmt(rdbBytes / MiB)} MiB written in ${seconds(since).toFixed(1)} s; restarting on it`);
    conn.close();
    await node.kill();

    const check = (from: string) => (t: TimedRedis) => checkLoaded(t.conn, count, keys, from);
    const rdb = await timedLoads(undefined, port, dir, ['--appendonly', 'no'], check('RDB'));
    timed = rdb.timed;
    progress(`    RDB loaded in ${samplesText(rdb.samples)} (${fmt(keys)} keys); turning the AOF on (appendfsync everysec)`);
    await timed.conn.call(['CONFIG', 'SET', 'appendfsync', 'everysec']);
    await timed.conn.call(['CONFIG', 'SET', 'appendonly', 'yes']);
    await waitInfo(timed.conn, 'persistence', (i) => i['aof_enabled'] === '1' && i['aof_rewrite_in_progress'] === '0' && i['aof_rewrite_scheduled'] === '0', REDIS_LOAD_TIMEOUT_MS, 'the AOF rewrite');
    const aofBytes = aofDirBytes(dir);
    await timed.stop();
    // Loaded from the AOF only: appendonly yes ignores dump.rdb, removed anyway so nothing else could be read.
    rmSync(join(dir, 'dump.rdb'), { force: true });
    const aof = await timedLoads(undefined, port, dir, ['--appendonly', 'yes', '--appendfsync', 'everysec'], check('AOF'));
    timed = aof.timed;
    progress(`    AOF (${fmt(aofBytes / MiB)} MiB, RDB preamble) loaded in ${samplesText(aof.samples)}; rewriting it as commands`);

    const rewrites = Number((await redisInfo(timed.conn, 'persistence'))['aof_rewrites'] ?? 0);
    await timed.conn.call(['CONFIG', 'SET', 'aof-use-rdb-preamble', 'no']);
    await timed.conn.call(['BGREWRITEAOF']);
    await waitInfo(timed.conn, 'persistence', (i) => Number(i['aof_rewrites']) > rewrites && i['aof_rewrite_in_progress'] === '0' && i['aof_rewrite_scheduled'] === '0', REDIS_LOAD_TIMEOUT_MS, 'the AOF rewrite');
    const aofCommandsBytes = aofDirBytes(dir);
    const commands = await timedLoads(timed, port, dir, ['--appendonly', 'yes', '--appendfsync', 'everysec', '--aof-use-rdb-preamble', 'no'], check('AOF of commands'));
    timed = commands.timed;
    progress(`    AOF of commands (${fmt(aofCommandsBytes / MiB)} MiB) loaded in ${samplesText(commands.samples)}`);
    return {
      fillSeconds,
      emptyRssBytes,
      rssBytes,
      usedMemoryBytes,
      keys,
      transientKeys,
      perSession,
      rdbBytes,
      rdbLoadSeconds: rdb.seconds,
      rdbLoadSamples: rdb.samples,
      aofBytes,
      aofLoadSeconds: aof.seconds,
      aofLoadSamples: aof.samples,
      aofCommandsBytes,
      aofCommandsLoadSeconds: commands.seconds,
      aofCommandsLoadSamples: commands.samples,
    };
  } finally {
    conn.close();
    await node.kill();
    await timed?.stop();
    removeDir(dir);
  }
}

async function redisHashesPhase(count: number, progress: (line: string) => void): Promise<TierVsRedisResult['redisHashes']> {
  const dir = tempDir('kiln-tier-hashes-');
  const { node, conn } = await freshRedis(dir);
  let timed: TimedRedis | undefined;
  try {
    const emptyRssBytes = rssOf(node.pid);
    progress(`  redis-server as plain hashes: HSET of the same fields, ${fmt(count)} sessions`);
    const since = Date.now();
    const sample = await fillHashes(conn, count, progress);
    const fillSeconds = seconds(since);
    progress(`    filled in ${fillSeconds.toFixed(1)} s; settling ${SETTLE_MS / 1000} s`);
    await sleep(SETTLE_MS);
    const rssBytes = rssOf(node.pid);
    const usedMemoryBytes = await usedMemory(conn);
    const keys = await dbsize(conn);
    const perSession = Number(await conn.call(['MEMORY', 'USAGE', sample, 'SAMPLES', '0']));
    await conn.call(['SAVE'], REDIS_LOAD_TIMEOUT_MS);
    const rdbBytes = fileBytes(join(dir, 'dump.rdb'));
    progress(`    RSS ${fmt(rssBytes / MiB)} MiB, used_memory ${fmt(usedMemoryBytes / MiB)} MiB, RDB ${fmt(rdbBytes / MiB)} MiB; restarting on it`);
    conn.close();
    await node.kill();
    const rdb = await timedLoads(undefined, node.port, dir, ['--appendonly', 'no'], async (t) => {
      const after = await dbsize(t.conn);
      if (after !== keys) throw new Error(`redis-server loaded ${after} keys from its RDB, ${keys} were saved`);
    });
    timed = rdb.timed;
    progress(`    RDB loaded in ${samplesText(rdb.samples)} (${fmt(keys)} keys)`);
    return { fillSeconds, emptyRssBytes, rssBytes, usedMemoryBytes, keys, perSession, rdbBytes, rdbLoadSeconds: rdb.seconds, rdbLoadSamples: rdb.samples };
  } finally {
    conn.close();
    await node.kill();
    await timed?.stop();
    removeDir(dir);
  }
}

async function commitPhase(settings: Omit<ThroughputOptions, 'measured'>, progress: (line: string) => void): Promise<{ kiln: CommitFigures; redis: CommitFigures }> {
  const line = (what: string, f: CommitFigures) => progress(`    ${what}: ${fmt(f.commitsPerSecond)} commits/s (${f.samples.map((s) => fmt(s)).join(' ')}), server ${f.serverCpuMsPer1000.toFixed(0)} ms CPU per 1,000, client ${f.clientCpuMsPer1000.toFixed(0)} ms`);
  progress(`  commit throughput: ${fmt(settings.sessions)} sessions, ${settings.inFlight} in flight, ${settings.runs} runs of ${fmt(settings.commits)} commits`);
  const dataDir = tempDir('kiln-tier-commits-');
  const server = await startOnCpu(SERVER_CPU, () => startKilnServer({ dataDir, fsync: 'everysec' }), (s) => s.pid);
  let kiln: CommitFigures;
  try {
    kiln = await commitFigures(connectKiln(server.url, { token: server.token, name: 'tier-commits' }), server.pid, settings);
    line('kiln server (fsync everysec)', kiln);
  } finally {
    await server.kill();
    removeDir(dataDir);
  }
  const dir = tempDir('kiln-tier-redis-commits-');
  const { node, conn } = await freshRedis(dir, ['--appendonly', 'yes', '--appendfsync', 'everysec']);
  try {
    const redis = await commitFigures(connectRedis(`redis://127.0.0.1:${node.port}`, { name: 'tier-commits' }), node.pid, settings);
    line("redis-server, Kiln's engine (appendfsync everysec)", redis);
    return { kiln, redis };
  } finally {
    conn.close();
    await node.kill();
    removeDir(dir);
  }
}

/**
 * The whole comparison. `count` sessions (1,000,000 in the full run); `quick` shortens
 * the commit runs only. Servers on CPU 1, this process on CPU 0 until it returns.
 */
export async function tierVsRedis(count: number, quick: boolean, progress: (line: string) => void): Promise<TierVsRedisResult> {
  const affinity = cpusAllowed(process.pid);
  pin(process.pid, CLIENT_CPU);
  try {
    const commitSettings = { sessions: 1000, commits: quick ? 5000 : 40_000, inFlight: 64, runs: quick ? 3 : 5 };
    const k = await kilnPhase(count, progress);
    const redisEngine = await redisEnginePhase(count, progress);
    const redisHashes = await redisHashesPhase(count, progress);
    const commits = await commitPhase(commitSettings, progress);
    return {
      sessions: count,
      quick,
      bytesPerSession: k.bytes,
      settleSeconds: SETTLE_MS / 1000,
      commitSettings,
      kiln: { ...k.figures, commits: commits.kiln },
      redisEngine: { ...redisEngine, commits: commits.redis },
      redisHashes,
    };
  } finally {
    pin(process.pid, affinity);
  }
}

export function tierVsRedisTable(r: TierVsRedisResult): string {
  const mib = (b: number) => `${fmt(b / MiB)} MiB`;
  const perSession = (b: number) => `${mib(b)} (${fmt(b / r.sessions)} B/session)`;
  const s = (x: number) => `${x.toFixed(2)} s`;
  const timing = (x: number, samples: number[]) => `${s(x)} (${Math.min(...samples).toFixed(2)}–${Math.max(...samples).toFixed(2)})`;
  const { kiln, redisEngine: re, redisHashes: rh } = r;
  const NA = '—';
  const rows = [
    { figure: `resident memory with ${fmt(r.sessions)} sessions`, kiln: perSession(kiln.rssBytes), engine: perSession(re.rssBytes), hashes: perSession(rh.rssBytes) },
    { figure: 'of which the sessions (RSS minus the empty server)', kiln: perSession(kiln.rssBytes - kiln.emptyRssBytes), engine: perSession(re.rssBytes - re.emptyRssBytes), hashes: perSession(rh.rssBytes - rh.emptyRssBytes) },
    { figure: 'used_memory (Redis)', kiln: NA, engine: perSession(re.usedMemoryBytes), hashes: perSession(rh.usedMemoryBytes) },
    { figure: 'disk size', kiln: `${mib(kiln.diskBytes)} (data directory)`, engine: `RDB ${mib(re.rdbBytes)}; AOF ${mib(re.aofBytes)} (preamble), ${mib(re.aofCommandsBytes)} (commands)`, hashes: `RDB ${mib(rh.rdbBytes)}` },
    { figure: 'restart after SIGTERM (fsync everysec)', kiln: timing(kiln.restartSeconds, kiln.restartSamples), engine: NA, hashes: NA },
    { figure: 'RDB load', kiln: NA, engine: timing(re.rdbLoadSeconds, re.rdbLoadSamples), hashes: timing(rh.rdbLoadSeconds, rh.rdbLoadSamples) },
    { figure: 'AOF load (appendfsync everysec, Redis 7 default: RDB preamble)', kiln: NA, engine: timing(re.aofLoadSeconds, re.aofLoadSamples), hashes: NA },
    { figure: 'AOF load (commands only: aof-use-rdb-preamble no)', kiln: NA, engine: timing(re.aofCommandsLoadSeconds, re.aofCommandsLoadSamples), hashes: NA },
    { figure: 'commits/s (1 client, 1,000 sessions, 64 in flight)', kiln: fmt(kiln.commits.commitsPerSecond), engine: fmt(re.commits.commitsPerSecond), hashes: NA },
    { figure: 'server CPU ms per 1,000 commits', kiln: fmt(kiln.commits.serverCpuMsPer1000), engine: fmt(re.commits.serverCpuMsPer1000), hashes: NA },
    { figure: 'client CPU ms per 1,000 commits', kiln: fmt(kiln.commits.clientCpuMsPer1000), engine: fmt(re.commits.clientCpuMsPer1000), hashes: NA },
  ].map((row) => ({ '': row.figure, 'kiln server': row.kiln, "redis-server (Kiln's engine)": row.engine, 'redis-server (plain hashes)': row.hashes }));
  const holds = (ok: boolean) => (ok ? 'holds' : '**does not hold**');
  const goals = [
    `kiln RSS ≤ Redis-as-hashes RSS: ${holds(kiln.rssBytes <= rh.rssBytes)} (${mib(kiln.rssBytes)} vs ${mib(rh.rssBytes)})`,
    `kiln restart ≤ Redis RDB load: ${holds(kiln.restartSeconds <= re.rdbLoadSeconds)} (${s(kiln.restartSeconds)} vs ${s(re.rdbLoadSeconds)})`,
    `kiln restart ≤ Redis AOF load: ${holds(kiln.restartSeconds <= re.aofLoadSeconds)} (${s(kiln.restartSeconds)} vs ${s(re.aofLoadSeconds)}; ${s(re.aofCommandsLoadSeconds)} for an AOF of commands)`,
  ];
  const keysLine = Object.entries(re.perSession).map(([k, v]) => `${k} ${fmt(v)} B`).join(', ');
  return [
    `${fmt(r.sessions)} sessions of ${fmt(r.bytesPerSession)} B (encoded names and values); memory read ${r.settleSeconds} s after each fill; restarts and loads are medians of ${RESTARTS} (range in brackets); servers on CPU 1, the client on CPU 0. Commits: ${fmt(r.commitSettings.commits)} per run, median of ${r.commitSettings.runs}; the kiln server with fsync everysec, redis-server with appendonly yes, appendfsync everysec.`,
    '',
    table(rows),
    '',
    `Goals: ${goals.join('; ')}.`,
    '',
    `Kiln's engine keeps ${fmt(re.keys / r.sessions, 2)} keys per session on Redis at rest (read after ${fmt(re.transientKeys)} keys of ping-pong history, two minutes' TTL, had expired) (MEMORY USAGE of one session's keys: ${keysLine}); a plain hash takes ${fmt(rh.perSession)} B.`,
  ].join('\n');
}
