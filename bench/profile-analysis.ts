/**
 * What bench/profile.ts reads out of a profiled app, kept apart from the runner so it can
 * be tested: the inspector's CPU and sampling heap profiles, V8's --trace-gc-nvp lines,
 * and how a function is grouped and named. Pure: no process, no file.
 */
import { median } from './util.js';

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
export interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export type Group = 'kiln' | 'framework' | 'packages' | 'node' | 'gc' | 'idle' | 'other';

export function groupOf(url: string, name: string): Group {
  if (name === '(garbage collector)') return 'gc';
  if (name === '(idle)') return 'idle';
  if (/\/dist\/src\//.test(url)) return 'kiln';
  if (/node_modules\/(fastify|@fastify|express|router|find-my-way|light-my-request|avvio|body-parser|send|finalhandler)\//.test(url)) return 'framework';
  if (/node_modules\//.test(url)) return 'packages';
  if (url.startsWith('node:') || name === '(program)' || url === '') return 'node';
  return 'other';
}

/** How a function is named in every table: name, file below dist/ or node_modules/, line. */
export function frameKey({ functionName, url, lineNumber }: CallFrame): string {
  return `${functionName || '(anonymous)'} ${url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${lineNumber + 1}`;
}

/**
 * Self time per function (µs) of .cpuprofiles, summed. A sample's weight is the time
 * since the one before it; with `bySamples`, every sample of a profile weighs its median
 * interval instead. The sampler ticks on wall time, so when apps share a core the time
 * an app spent descheduled lands on whatever it was running when it got the core back:
 * counting samples spreads only the time it ran.
 */
export function selfTimes(profiles: Profile[], bySamples = false): Map<string, { micros: number; group: Group }> {
  const out = new Map<string, { micros: number; group: Group }>();
  for (const profile of profiles) {
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const interval = bySamples ? median(profile.timeDeltas) : 0;
    for (let i = 0; i < profile.samples.length; i++) {
      const node = byId.get(profile.samples[i]!)!;
      const key = frameKey(node.callFrame);
      const entry = out.get(key) ?? { micros: 0, group: groupOf(node.callFrame.url, node.callFrame.functionName) };
      entry.micros += bySamples ? interval : (profile.timeDeltas[i] ?? 0);
      out.set(key, entry);
    }
  }
  return out;
}

/**
 * Where the self time of some functions is spent from: for each sample whose function's
 * key (frameKey) contains `match`, the chain of its `depth` nearest callers, innermost
 * first, joined by ' < '. Sums the same weights as selfTimes. This is how a Node
 * function that Kiln's code reaches only through Node (writev, a header check) is put on
 * the Kiln function that called it.
 */
export function callerTimes(profiles: Profile[], match: string, depth = 4, bySamples = false): Map<string, number> {
  const out = new Map<string, number>();
  for (const profile of profiles) {
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    const parentOf = new Map<number, number>();
    for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
    const interval = bySamples ? median(profile.timeDeltas) : 0;
    for (let i = 0; i < profile.samples.length; i++) {
      const node = byId.get(profile.samples[i]!)!;
      const key = frameKey(node.callFrame);
      if (!key.includes(match)) continue;
      const chain = [key];
      for (let id = parentOf.get(node.id); id !== undefined && chain.length <= depth; id = parentOf.get(id)) chain.push(frameKey(byId.get(id)!.callFrame));
      const path = chain.join(' < ');
      out.set(path, (out.get(path) ?? 0) + (bySamples ? interval : (profile.timeDeltas[i] ?? 0)));
    }
  }
  return out;
}

export interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

/** Bytes allocated per function (self) of sampling heap profiles, summed. */
export function allocatedBytes(heads: HeapNode[]): Map<string, { bytes: number; group: Group }> {
  const out = new Map<string, { bytes: number; group: Group }>();
  const stack = [...heads];
  while (stack.length > 0) {
    const node = stack.pop()!;
    stack.push(...node.children);
    if (node.selfSize === 0) continue;
    const key = frameKey(node.callFrame);
    const entry = out.get(key) ?? { bytes: 0, group: groupOf(node.callFrame.url, node.callFrame.functionName) };
    entry.bytes += node.selfSize;
    out.set(key, entry);
  }
  return out;
}

/** The concern of a Kiln function, for the per-request budget (docs/benchmarks.md). */
export type Concern = 'cookie' | 'lookup and lease' | 'session object' | 'delta and encoding' | 'commit and wire' | 'adapter glue' | 'tier (in process)' | 'other Kiln';

export function concernOf(key: string): Concern {
  const [name = '', file = ''] = key.split(' ');
  if (/src\/adapters\/core\/(cookies|session-cookie)\.js|src\/session\/id\.js/.test(file) || /^(sessionIdFrom|signedValue|signedCookie|newCookie|setCookieHeader)$/.test(name)) return 'cookie';
  if (/src\/client\/(session-client|lease-keeper|keyed-queue|near-cache|access-touches|request-time)\.js|src\/util\/deadline\.js/.test(file)) return 'lookup and lease';
  if (/src\/adapters\/core\/session-object\.js|src\/client\/session-handle\.js|src\/session\/live-value\.js/.test(file) || (/src\/session\/delta\.js/.test(file) && /^(get|set|has|keys|delete)$/.test(name))) return 'session object';
  if (/src\/session\//.test(file)) return 'delta and encoding';
  if (/src\/client\/(commit-pipeline|commit-sender|committed-state|write-behind)\.js|src\/engines\/|src\/protocol\/|src\/util\/(net|binary)\.js/.test(file)) return 'commit and wire';
  if (/src\/adapters\//.test(file)) return 'adapter glue';
  if (/src\/tier\//.test(file)) return 'tier (in process)';
  return 'other Kiln';
}

/** What the collector did over a window, summed from V8's --trace-gc-nvp lines. */
export interface GcSummary {
  scavenges: number;
  /** Main-thread pause of the scavenges (ms). */
  scavengeMs: number;
  /** Bytes the scavenges moved to the old generation: objects that outlived two of them. */
  promotedBytes: number;
  /** Bytes that outlived a scavenge (copied within the young generation or promoted). */
  survivedBytes: number;
  /** Mark-compacts (full collections). */
  majors: number;
  /** Their pauses plus the incremental marking steps that ran on the main thread before them (ms). */
  majorMs: number;
}

/**
 * Sums the collections in `text`, output of a process run with --trace-gc-nvp (one line
 * of name=value pairs per collection); any other line is skipped. A scavenge is `gc=s`;
 * every other kind (mark-compact `mc`, minor mark-compact `mmc`, …) counts as major.
 */
export function summarizeGcTrace(text: string): GcSummary {
  const out: GcSummary = { scavenges: 0, scavengeMs: 0, promotedBytes: 0, survivedBytes: 0, majors: 0, majorMs: 0 };
  for (const line of text.split('\n')) {
    const fields = new Map<string, string>();
    for (const pair of line.split(' ')) {
      const eq = pair.indexOf('=');
      if (eq > 0) fields.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
    const kind = fields.get('gc');
    if (kind === undefined) continue;
    const field = (name: string): number => Number(fields.get(name) ?? 0) || 0;
    if (kind === 's') {
      out.scavenges++;
      out.scavengeMs += field('pause');
      out.promotedBytes += field('promoted');
      out.survivedBytes += field('new_space_survived');
    } else {
      out.majors++;
      out.majorMs += field('pause') + field('incremental');
    }
  }
  return out;
}
