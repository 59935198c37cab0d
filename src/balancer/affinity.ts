import { createHash } from 'node:crypto';
import { readCookie } from '../adapters/core/cookies.js';
import { parseSessionId } from '../session/id.js';

/**
 * Which node a request goes to: pure functions over the node table, so every routing
 * rule is unit-tested without sockets.
 */
export type AffinityMode = 'route' | 'cookie' | 'none';

export interface RoutableNode {
  name: string;
  healthy: boolean;
  draining: boolean;
  active: number;
}

/**
 * The route suffix of the session id in a session cookie, signed (`s:<id>.<mac>`, as
 * express-session and Kiln's adapters write it) or not. The signature is not checked:
 * routing needs no secret, and a forged route only picks a node.
 */
export function routeFromCookie(cookieHeader: string | undefined, cookieName: string): string | undefined {
  const raw = readCookie(cookieHeader, cookieName);
  if (!raw) return undefined;
  let id = raw;
  if (raw.startsWith('s:')) {
    const body = raw.slice(2);
    const lastDot = body.lastIndexOf('.');
    if (lastDot <= 0) return undefined;
    id = body.slice(0, lastDot);
  }
  return parseSessionId(id)?.route;
}

/** A stable choice among nodes for one key (rendezvous hashing): the same key keeps landing on the same live node. */
export function rendezvous<N extends RoutableNode>(nodes: readonly N[], key: string): N | undefined {
  let best: N | undefined;
  let bestScore = -1;
  for (const node of nodes) {
    const score = createHash('sha1').update(`${node.name}\u0000${key}`).digest().readUInt32BE(0);
    if (score > bestScore) {
      best = node;
      bestScore = score;
    }
  }
  return best;
}

export interface ChooseInput {
  mode: AffinityMode;
  /** Node named by the session (route suffix or balancer cookie). */
  wanted: string | undefined;
  /** What identifies the session for a stable fallback (the cookie value). */
  sessionKey: string | undefined;
  /** Nodes already tried for this request. */
  exclude: ReadonlySet<string>;
  /** Round-robin position. */
  turn: number;
}

export function chooseNode<N extends RoutableNode>(nodes: readonly N[], input: ChooseInput): N | undefined {
  const usable = nodes.filter((n) => n.healthy && !n.draining && !input.exclude.has(n.name));
  if (usable.length === 0) return undefined;
  if (input.mode === 'none') return usable[input.turn % usable.length];
  if (input.wanted !== undefined) {
    const node = usable.find((n) => n.name === input.wanted);
    if (node) return node;
    // Its node is dead or draining: the session follows through the engine to a live
    // node, the same one on every request so its lease settles there.
    if (input.sessionKey) return rendezvous(usable, input.sessionKey);
  }
  let least = usable[input.turn % usable.length]!;
  for (const node of usable) if (node.active < least.active) least = node;
  return least;
}
