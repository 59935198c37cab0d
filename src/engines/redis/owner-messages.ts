/**
 * Messages on an owner's pub/sub channel: a hand-over ('g', the lease is ours now), a
 * recall ('r', someone wants it: finish, flush, release by the deadline) and a revocation
 * ('v', it is gone). Anyone can publish, so a message is parsed as untrusted and only
 * ever acted on through the lease scripts, which hold the truth. The rule it keeps: no
 * grant is ever left stranded. A hand-over or recall for a lease this process neither
 * holds nor wants is given straight back, or the session would stay locked until the
 * lease's time limit.
 */
import { parseUntrusted } from './replies.js';

export interface OwnerMessage {
  k: 'g' | 'r' | 'v';
  s: string;
  t: number;
  d?: number;
  why?: string;
}

/** A lease message seen by watchLeases. */
export interface LeaseMessage {
  type: 'recall' | 'handover' | 'revoke';
  sessionId: string;
  /** The process the message was sent to: the holder (recall, revoke) or the next holder (hand-over). */
  owner: string;
  token: number;
  at: number;
  reason?: string;
}

/** A message on an owner's channel, or undefined when it is not one. */
export function parseOwnerMessage(message: string): OwnerMessage | undefined {
  return parseUntrusted<OwnerMessage>(message, (m) => typeof (m as OwnerMessage).s === 'string' && typeof (m as OwnerMessage).t === 'number');
}

/** The console's view of a message sent to `owner`, or undefined for an unknown kind. */
export function leaseMessageFrom(m: OwnerMessage, owner: string, at: number): LeaseMessage | undefined {
  const type = m.k === 'r' ? 'recall' : m.k === 'g' ? 'handover' : m.k === 'v' ? 'revoke' : undefined;
  if (!type) return undefined;
  return { type, sessionId: m.s, owner, token: m.t, at, ...(m.why ? { reason: m.why } : {}) };
}

/** What this process knows of a session when a message about it arrives. */
export interface OwnerView {
  /** The token of the lease held on it, or undefined. */
  heldToken(sessionId: string): number | undefined;
  /** Whether an acquire() is waiting for it. */
  isWaiting(sessionId: string): boolean;
  /** Whether an acquire script for it is in flight (its grant may be on its way). */
  isAcquiring(sessionId: string): boolean;
}

export type OwnerAction =
  /** Run the acquire script again: it answers with the grant and the data. */
  | { kind: 'take-grant' }
  /** Give the lease back at once: nobody here wants it. */
  | { kind: 'give-back'; token: number }
  /** Tell the client to hand the session over; `deadline` shortens how long the lease is trusted. */
  | { kind: 'recall'; token: number; deadline?: number }
  | { kind: 'revoke'; token: number; reason: string }
  | { kind: 'ignore' };

/** The decision for one message, without acting on it. */
export function ownerMessageAction(m: OwnerMessage, view: OwnerView): OwnerAction {
  switch (m.k) {
    case 'g':
      return view.isWaiting(m.s) ? { kind: 'take-grant' } : { kind: 'give-back', token: m.t };
    case 'r': {
      const held = view.heldToken(m.s);
      if (held === m.t) return typeof m.d === 'number' ? { kind: 'recall', token: m.t, deadline: m.d } : { kind: 'recall', token: m.t };
      // Waiting or acquiring: the grant may cross the recall, and the client must still hear of it.
      if (view.isWaiting(m.s) || view.isAcquiring(m.s)) return { kind: 'recall', token: m.t };
      return held === undefined ? { kind: 'give-back', token: m.t } : { kind: 'ignore' };
    }
    case 'v':
      return { kind: 'revoke', token: m.t, reason: m.why ?? 'revoked' };
    default:
      return { kind: 'ignore' };
  }
}

/** What acting on a message needs. */
export interface OwnerMessageHandlers extends OwnerView {
  tryAcquire(sessionId: string): void;
  giveBack(sessionId: string, token: number): void;
  recall(sessionId: string, token: number, deadline?: number): void;
  revoke(sessionId: string, token: number, reason: string): void;
}

export function handleOwnerMessage(message: string, on: OwnerMessageHandlers): void {
  const m = parseOwnerMessage(message);
  if (!m) return;
  const action = ownerMessageAction(m, on);
  switch (action.kind) {
    case 'take-grant':
      on.tryAcquire(m.s);
      return;
    case 'give-back':
      on.giveBack(m.s, action.token);
      return;
    case 'recall':
      on.recall(m.s, action.token, action.deadline);
      return;
    case 'revoke':
      on.revoke(m.s, action.token, action.reason);
      return;
    case 'ignore':
      return;
  }
}
