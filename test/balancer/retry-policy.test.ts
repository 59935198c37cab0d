import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decideOnFailure, isConnectFailure, isIdempotentWithoutBody, type FailureFacts } from '../../src/balancer/retry-policy.js';

/** The proxy's decision when its request to an app server fails (#23 items 4 and 5), without sockets. */
const base: FailureFacts = { clientGone: false, responseStarted: false, connected: true, idempotent: true, replayable: true, attempts: 1 };

describe('balancer retry policy', () => {
  it('our own client going away is never retried, whatever else happened', () => {
    for (const connected of [true, false]) {
      for (const idempotent of [true, false]) assert.equal(decideOnFailure({ ...base, clientGone: true, connected, idempotent }), 'client-gone');
    }
  });

  it('a refused connection is retried while the body is unspent, POST included', () => {
    assert.equal(decideOnFailure({ ...base, connected: false, idempotent: false }), 'retry');
    assert.equal(decideOnFailure({ ...base, connected: false, idempotent: false, replayable: false }), 'bad-gateway');
  });

  it('a node that took the request and closed without an answer: idempotent bodiless requests once more, others 502', () => {
    assert.equal(decideOnFailure({ ...base }), 'retry');
    assert.equal(decideOnFailure({ ...base, attempts: 2 }), 'bad-gateway', 'retried once only');
    assert.equal(decideOnFailure({ ...base, idempotent: false }), 'bad-gateway');
  });

  it('once a response began, the client connection is cut', () => {
    assert.equal(decideOnFailure({ ...base, responseStarted: true }), 'cut');
  });

  it('GET, HEAD and OPTIONS without a body are idempotent; with a body or another method not', () => {
    for (const m of ['GET', 'HEAD', 'OPTIONS']) assert.equal(isIdempotentWithoutBody(m, false), true);
    assert.equal(isIdempotentWithoutBody('GET', true), false);
    for (const m of ['POST', 'PUT', 'DELETE', 'PATCH', undefined]) assert.equal(isIdempotentWithoutBody(m, false), false);
    assert.equal(isConnectFailure('ECONNREFUSED'), true);
    assert.equal(isConnectFailure('ECONNRESET'), false, 'a reset may come after the node took the request');
  });
});
