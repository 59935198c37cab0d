import { KilnError } from '../errors/index.js';
import type { SessionHandle } from './session-handle.js';

/**
 * A request's time on the session layer (SessionClientOptions.requestTimeoutMs): the
 * handle carries what is left of it, each step (open, commit, destroy, regenerate)
 * turns that into an absolute deadline for every wait inside it, and gives back what it
 * did not use. The application's own time between steps is not counted.
 */

/** The handle with what is left of its request's time, counted from now to `deadline`. */
export function withTimeLeft(handle: SessionHandle, deadline: number): SessionHandle {
  handle.timeLeftMs = deadline - Date.now();
  return handle;
}

/**
 * The deadline of a handle's next step. A request whose time is spent fails its step at
 * once, with the status of a tier that did not answer in time.
 */
export function startStep(handle: SessionHandle, now: number, step: string): number {
  if (handle.timeLeftMs <= 0) {
    throw new KilnError('KILN_ERR_TIMEOUT', `the request's time on the session layer (requestTimeoutMs) was spent before its ${step}`, { details: { sessionId: handle.id, step } });
  }
  return now + handle.timeLeftMs;
}

/** Ends a step: the handle keeps what the step left of the request's time. */
export function endStep(handle: SessionHandle, deadline: number): void {
  handle.timeLeftMs = deadline - Date.now();
}
