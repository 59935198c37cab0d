/**
 * What the proxy does when its request to an app server fails: a pure decision over
 * what had happened by then, so every case is unit-tested without sockets.
 *
 * The cases it keeps apart:
 * - our own client went away (the failure is the abort we caused): nothing is retried
 *   and the node is not blamed;
 * - the node refused or was unreachable before a byte was sent: any request whose body
 *   is still whole in memory goes to another node;
 * - the node took the request and closed without a response byte (it died, or a pooled
 *   connection it was closing): only an idempotent request without a body is sent again,
 *   once, as HAProxy's `retry-on empty-response` does; anything else may have been
 *   acted on, so it gets 502;
 * - with no other node left, a retry ends as the usual 503 KILN_ERR_NO_NODE;
 * - a response had begun: the client's connection is cut, nothing else is possible.
 */
export type FailureDecision = 'client-gone' | 'retry' | 'bad-gateway' | 'cut';

export interface FailureFacts {
  clientGone: boolean;
  /** The app's response status line had arrived (and maybe been relayed). */
  responseStarted: boolean;
  /** The connection to the node was established (a pooled one counts), so the request may have reached it. */
  connected: boolean;
  /** GET, HEAD or OPTIONS with no body. */
  idempotent: boolean;
  /** Nothing of the body was streamed yet (what was read is in memory), so it can be sent again. */
  replayable: boolean;
  /** Nodes tried so far for this request, the failed one included. */
  attempts: number;
}

/** Sends after the node took the request: one more node at most. */
export const MAX_EMPTY_RESPONSE_RETRIES = 1;

export function decideOnFailure(f: FailureFacts): FailureDecision {
  if (f.clientGone) return 'client-gone';
  if (f.responseStarted) return 'cut';
  if (!f.connected) return f.replayable ? 'retry' : 'bad-gateway';
  if (f.idempotent && f.attempts <= MAX_EMPTY_RESPONSE_RETRIES) return 'retry';
  return 'bad-gateway';
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS']);

export function isIdempotentWithoutBody(method: string | undefined, hasBody: boolean): boolean {
  return !hasBody && IDEMPOTENT.has(method ?? '');
}

/** Error codes meaning the node could not be reached at all (nothing was sent). */
export function isConnectFailure(code: string | undefined): boolean {
  return code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'ETIMEDOUT';
}
