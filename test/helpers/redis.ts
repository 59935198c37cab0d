import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before } from 'node:test';
import type { RedisEngineOptions } from '../../src/engines/redis/engine-options.js';
import { RedisEngine } from '../../src/engines/redis/redis-engine.js';
import { freePort, removeDir, sleep, tempDir, trackChild, waitFor } from './processes.js';

/**
 * Real redis-server processes on free loopback ports: one server, a Sentinel group
 * (1 master, 1 replica, 3 sentinels, short down-after) or a Cluster (3 masters, 3
 * replicas). Debian's redis-server is installed by .ci/run; without it these fail.
 */
const REDIS_SERVER = process.env['REDIS_SERVER'] ?? 'redis-server';
const REDIS_CLI = process.env['REDIS_CLI'] ?? 'redis-cli';

export interface RedisNode {
  port: number;
  readonly pid: number;
  dir: string;
  /** SIGKILL, as a crashed machine would. */
  kill(): Promise<void>;
  /** Starts the process again on the same port and directory (extra arguments appended). */
  restart(extraArgs?: string[]): Promise<void>;
  output(): string;
}

export function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli -p ${port} ${args.join(' ')}: ${err.message} ${stderr}`));
      else resolve(stdout.trim());
    });
  });
}

/** Starts redis-server with the given config lines (as arguments) and waits until it accepts connections. */
/**
 * Waits until `replicaPort` has synced from `masterPort` and the master counts it online:
 * only then does a WAIT reach it (the replica's own link status comes up a little before).
 */
export async function replicaOnline(masterPort: number, replicaPort: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(
    async () => {
      if (!/master_link_status:up/.test(await redisCli(replicaPort, 'INFO', 'replication').catch(() => ''))) return false;
      return new RegExp(`port=${replicaPort},state=online`).test(await redisCli(masterPort, 'INFO', 'replication').catch(() => ''));
    },
    timeoutMs,
    `replica ${replicaPort} online at master ${masterPort}`,
  );
}

export async function startRedisNode(options: { port?: number; dir?: string; args?: string[]; sentinelConfig?: string } = {}): Promise<RedisNode> {
  const port = options.port ?? (await freePort());
  const dir = options.dir ?? tempDir('kiln-redis-');
  let child: ChildProcess | undefined;
  let out = '';
  let exited: Promise<unknown> = Promise.resolve();
  const launch = async (extra: string[]) => {
    out = '';
    const base = options.sentinelConfig !== undefined ? [join(dir, 'sentinel.conf'), '--sentinel'] : [];
    const args = [...base, '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--logfile', '', ...(options.sentinelConfig !== undefined ? [] : ['--save', '', '--appendonly', 'no', '--repl-diskless-sync-delay', '0']), ...(options.args ?? []), ...extra];
    const c = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const spawnError = new Promise<never>((_, reject) => c.once('error', (err) => reject(new Error(`cannot start ${REDIS_SERVER} (is Debian's redis-server installed? .ci/run installs it): ${err.message}`))));
    exited = trackChild(c);
    await Promise.race([
      spawnError,
      waitFor(() => /Ready to accept connections|Sentinel ID is/.test(out) || (c.exitCode !== null ? Promise.reject(new Error(`redis-server on ${port} exited:\n${out}`)) : false), 10_000, `redis-server on port ${port}`),
    ]);
  };
  if (options.sentinelConfig !== undefined) writeFileSync(join(dir, 'sentinel.conf'), options.sentinelConfig);
  await launch([]);
  return {
    port,
    dir,
    get pid() {
      return child!.pid!;
    },
    async kill() {
      if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async restart(extraArgs = []) {
      await launch(extraArgs);
    },
    output: () => out,
  };
}

export interface RedisDeployment {
  kind: 'standalone' | 'sentinel' | 'cluster';
  url: string;
  nodes: RedisNode[];
  stop(): Promise<void>;
}

export async function startStandalone(args: string[] = []): Promise<RedisDeployment & { node: RedisNode }> {
  const node = await startRedisNode({ args });
  return {
    kind: 'standalone',
    url: `redis://127.0.0.1:${node.port}`,
    node,
    nodes: [node],
    async stop() {
      await node.kill();
      removeDir(node.dir);
    },
  };
}

export interface SentinelDeployment extends RedisDeployment {
  master: RedisNode;
  replica: RedisNode;
  sentinels: RedisNode[];
  masterName: string;
  /** The port Sentinel names as master now. */
  currentMasterPort(): Promise<number>;
}

/** 1 master, 1 replica, 3 sentinels (quorum 2), down-after 1 s. */
export async function startSentinel(options: { downAfterMs?: number } = {}): Promise<SentinelDeployment> {
  const masterName = 'kilnmaster';
  const master = await startRedisNode();
  const replica = await startRedisNode({ args: ['--replicaof', '127.0.0.1', String(master.port)] });
  await replicaOnline(master.port, replica.port);
  const sentinels: RedisNode[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    sentinels.push(
      await startRedisNode({
        port,
        sentinelConfig: [
          `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 2`,
          `sentinel down-after-milliseconds ${masterName} ${options.downAfterMs ?? 1000}`,
          `sentinel failover-timeout ${masterName} 5000`,
          `sentinel parallel-syncs ${masterName} 1`,
        ].join('\n') + '\n',
      }),
    );
  }
  // Ready when every sentinel knows the replica and the other two sentinels.
  await waitFor(
    async () => {
      for (const s of sentinels) {
        const info = await redisCli(s.port, 'SENTINEL', 'MASTER', masterName);
        const lines = info.split('\n');
        const field = (name: string) => lines[lines.indexOf(name) + 1];
        if (field('num-slaves') !== '1' || field('num-other-sentinels') !== '2') return false;
      }
      return true;
    },
    20_000,
    'sentinels to discover each other',
  );
  const nodes = [master, replica, ...sentinels];
  return {
    kind: 'sentinel',
    url: `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${masterName}`,
    nodes,
    master,
    replica,
    sentinels,
    masterName,
    async currentMasterPort() {
      const reply = await redisCli(sentinels[0]!.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName);
      return Number(reply.split('\n')[1]);
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      for (const n of nodes) removeDir(n.dir);
    },
  };
}

export interface ClusterDeployment extends RedisDeployment {
  /** The node serving the slot of `key` as master now. */
  masterOf(key: string): Promise<RedisNode>;
  waitHealthy(timeoutMs?: number): Promise<void>;
}

/** 3 masters and 3 replicas; node timeout 1 s; shards keep serving while another fails over. */
export async function startCluster(): Promise<ClusterDeployment> {
  const nodes: RedisNode[] = [];
  const clusterArgs = (port: number) => ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '1000', '--cluster-require-full-coverage', 'no', '--cluster-replica-validity-factor', '0'];
  while (nodes.length < 6) {
    const port = await freePort();
    // The cluster bus listens on port + 10000.
    if (port > 55_000) continue;
    try {
      nodes.push(await startRedisNode({ port, args: clusterArgs(port) }));
    } catch {
      await sleep(10);
    }
  }
  await redisCli(nodes[0]!.port, '--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes');
  const deployment: ClusterDeployment = {
    kind: 'cluster',
    url: `redis+cluster://${nodes
      .slice(0, 3)
      .map((n) => `127.0.0.1:${n.port}`)
      .join(',')}`,
    nodes,
    async masterOf(key: string) {
      let slot = -1;
      for (const n of nodes) {
        const reply = await redisCli(n.port, 'CLUSTER', 'KEYSLOT', key).catch(() => '');
        if (/^\d+$/.test(reply)) {
          slot = Number(reply);
          break;
        }
      }
      for (const n of nodes) {
        const role = await redisCli(n.port, 'ROLE').catch(() => '');
        if (!role.startsWith('master')) continue;
        const shards = await redisCli(n.port, 'CLUSTER', 'MYID');
        const slots = await redisCli(n.port, 'CLUSTER', 'NODES');
        const mine = slots.split('\n').find((l) => l.startsWith(shards));
        const ranges = (mine ?? '').split(' ').slice(8);
        for (const r of ranges) {
          const [lo, hi] = r.split('-').map(Number);
          if (slot >= lo! && slot <= (hi ?? lo)!) return n;
        }
      }
      throw new Error(`no master for slot ${slot}`);
    },
    async waitHealthy(timeoutMs = 20_000) {
      await waitFor(
        async () => {
          for (const n of nodes) {
            const info = await redisCli(n.port, 'CLUSTER', 'INFO').catch(() => '');
            if (!info.includes('cluster_state:ok')) return false;
          }
          const replicated = await Promise.all(nodes.map((n) => redisCli(n.port, 'ROLE').catch(() => '')));
          return replicated.filter((r) => r.startsWith('master')).length === 3 && replicated.filter((r) => r.startsWith('slave') && r.includes('connected')).length === 3;
        },
        timeoutMs,
        'cluster healthy',
      );
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      for (const n of nodes) removeDir(n.dir);
    },
  };
  await deployment.waitHealthy();
  return deployment;
}

/**
 * A redis-server and a RedisEngine connected to it (with `options`), made before a
 * describe's tests and stopped after them; read the fields inside the tests.
 */
export function engineOnStandalone(options: Omit<RedisEngineOptions, 'url'> = {}): { redis: RedisDeployment; engine: RedisEngine; port: number } {
  const made = {} as { redis: RedisDeployment; engine: RedisEngine; port: number };
  before(async () => {
    made.redis = await startStandalone();
    made.port = made.redis.nodes[0]!.port;
    made.engine = new RedisEngine({ url: made.redis.url, ...options });
    await made.engine.connect();
  });
  after(async () => {
    await made.engine?.close();
    await made.redis?.stop();
  });
  return made;
}
