import { request, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../util/log.js';
import { closeAfterAnswer, hasBody, sendError, stripHopByHop } from './http-util.js';
import type { BalancerLimits } from './limits.js';
import type { BackendNode } from './node-table.js';
import { RequestBody, type BodyTimeout } from './request-body.js';
import { decideOnFailure, isConnectFailure, isIdempotentWithoutBody } from './retry-policy.js';

/**
 * One proxied HTTP request, from the client's headers to the end of the app's answer:
 * reading the body's first bytes, picking a node, waiting (bounded) for a socket of its
 * upstream pool, retrying per retry-policy.ts, and releasing the node's `active` count
 * exactly once whatever ends it. The balancer owns the server, routing and the counters.
 */
export interface ProxyHost {
  readonly limits: BalancerLimits;
  readonly counters: ProxyCounters;
  readonly log: Logger;
  pick(req: IncomingMessage, tried: ReadonlySet<string>): BackendNode | undefined;
  upstreamHeaders(req: IncomingMessage): OutgoingHttpHeaders;
  /** Lets the balancer add to the app's response headers (its affinity cookie). */
  adjustResponse(req: IncomingMessage, node: BackendNode, headers: IncomingHttpHeaders): void;
  /** The node took a request and closed without answering: check at once whether it is alive. */
  suspect(node: BackendNode): void;
}

export interface ProxyCounters {
  retries: number;
  failovers: number;
  errors: number;
  noNode: number;
  clientAborts: number;
  queueTimeouts: number;
  queueFull: number;
  bodyTimeouts: number;
  /** Requests whose app server connection stayed silent for upstreamIdleTimeoutMs. */
  upstreamTimeouts: number;
}

export function newProxyCounters(): ProxyCounters {
  return { retries: 0, failovers: 0, errors: 0, noNode: 0, clientAborts: 0, queueTimeouts: 0, queueFull: 0, bodyTimeouts: 0, upstreamTimeouts: 0 };
}

/** What http.request() throws for a request line or header it will not send: the client's doing. */
const UNSENDABLE = new Set(['ERR_UNESCAPED_CHARACTERS', 'ERR_INVALID_CHAR', 'ERR_INVALID_HTTP_TOKEN']);

export function proxyRequest(host: ProxyHost, req: IncomingMessage, res: ServerResponse): void {
  new Exchange(host, req, res).start();
}

interface Attempt {
  /** Releases the node; with `abort`, also destroys the upstream request (pool socket freed). */
  end(abort: boolean): void;
}

class Exchange {
  private readonly tried = new Set<string>();
  private readonly body: RequestBody;
  private readonly idempotent: boolean;
  private readonly bodyPresent: boolean;
  private clientGone = false;
  /** The balancer answered (408, 503) or gave up: late upstream events change nothing. */
  private settled = false;
  private current: Attempt | undefined;

  constructor(
    private readonly host: ProxyHost,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    const { limits } = host;
    this.bodyPresent = hasBody(req);
    this.idempotent = isIdempotentWithoutBody(req.method, this.bodyPresent);
    this.body = new RequestBody(req, this.bodyPresent, { idleMs: limits.bodyIdleTimeoutMs, totalMs: limits.bodyTimeoutMs, bufferBytes: limits.bodyBufferBytes }, (kind) => this.onBodyTimeout(kind));
    res.once('close', () => {
      this.body.stop();
      const unfinished = !res.writableFinished;
      if (unfinished && !this.settled) {
        // Our own client went away: whatever the upstream reports next is the abort we cause.
        this.clientGone = true;
        this.host.counters.clientAborts++;
      }
      // An app that answered before reading the whole body (401, 413) has a request on
      // its connection that will never finish: that connection cannot be reused.
      this.current?.end(unfinished || !this.body.complete);
    });
  }

  start(): void {
    // A throw here would be an unhandled rejection, which ends a Node 20 process.
    this.body.lead.then(() => this.send()).catch((err: unknown) => this.fail(err));
  }

  /** A bug on the way to the node: the client is answered, whatever was under way dropped. */
  private fail(err: unknown): void {
    this.host.log.error('proxying failed', { err: (err as Error)?.message, url: this.req.url });
    this.host.counters.errors++;
    this.current?.end(true);
    if (this.clientGone || this.settled) return;
    if (this.res.headersSent) {
      this.settled = true;
      this.res.destroy();
      return;
    }
    this.settle(502, 'KILN_ERR_BAD_GATEWAY', 'the balancer failed to proxy the request');
  }

  private send(): void {
    if (this.clientGone || this.settled) return;
    const { counters, limits } = this.host;
    const node = this.host.pick(this.req, this.tried);
    if (!node) {
      counters.noNode++;
      this.settle(503, 'KILN_ERR_NO_NODE', 'no healthy app server');
      return;
    }
    // Attempts beyond the pool's size wait for a socket; past maxQueue of them, none may.
    if (node.active - limits.upstreamSockets >= limits.maxQueue) {
      counters.queueFull++;
      this.settle(503, 'KILN_ERR_UPSTREAM_BUSY', `app server ${node.name} has ${limits.maxQueue} requests waiting for a connection already`);
      return;
    }
    if (this.tried.size > 0) counters.retries++;
    this.tried.add(node.name);
    this.attempt(node);
  }

  private attempt(node: BackendNode): void {
    const { counters, limits, log } = this.host;
    let upstream: ClientRequest;
    try {
      upstream = request({ host: node.host, port: node.port, method: this.req.method, path: this.req.url, headers: this.host.upstreamHeaders(this.req), agent: node.agent });
    } catch (err) {
      // Node validates the request line and headers as it makes the request, and throws;
      // nothing was sent and nothing counted on the node yet.
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (UNSENDABLE.has(code)) this.settle(400, 'KILN_ERR_INVALID_ARGUMENT', `the request cannot be forwarded as it is: ${(err as Error).message}`);
      else this.fail(err);
      return;
    }
    node.active++;
    node.requests++;
    node.queued++;
    let released = false;
    let queued = true;
    let connected = false;
    let responded = false;
    let abandoned = false;
    const dequeue = (): void => {
      if (!queued) return;
      queued = false;
      node.queued--;
      clearTimeout(queueTimer);
    };
    /** The connected socket, watched for silence while this request is on it (see go()). */
    let watched: Socket | undefined;
    let connectTimer: NodeJS.Timeout | undefined;
    const unwatch = (): void => {
      clearTimeout(connectTimer);
      watched?.off('timeout', onSilence);
      watched = undefined;
    };
    const release = (): void => {
      dequeue();
      unwatch();
      if (released) return;
      released = true;
      node.active--;
    };
    const abort = (): void => {
      release();
      if (abandoned) return;
      abandoned = true;
      // Before a socket was assigned this takes the request out of the agent's queue;
      // after, it closes the socket, so none stays pinned by a request nobody reads.
      upstream.destroy();
    };
    this.current = { end: (unfinished) => (unfinished ? abort() : release()) };
    const queueTimer = setTimeout(() => {
      if (!queued) return;
      counters.queueTimeouts++;
      abort();
      this.settle(503, 'KILN_ERR_UPSTREAM_BUSY', `app server ${node.name} had no free connection within ${limits.queueTimeoutMs} ms`);
    }, limits.queueTimeoutMs);

    upstream.on('socket', (socket: Socket) => {
      dequeue();
      if (abandoned) return;
      // The body goes only once the node accepted the connection: a refused connection
      // can then be retried elsewhere with nothing of the body spent.
      const go = (): void => {
        clearTimeout(connectTimer);
        connected = true;
        if (abandoned) return;
        // An app that never answers, or a response the client does not read, would pin the
        // pool socket and the client for good. The listener is this request's own, on the
        // socket, taken off when the request ends: the request's 'timeout' event would not
        // come at all after a connect slower than the pool's own 4 s timeout, which uses
        // up Node's one forwarding listener.
        watched = socket;
        socket.setTimeout(limits.upstreamIdleTimeoutMs);
        socket.on('timeout', onSilence);
        this.body.sendTo(upstream);
      };
      if (socket.connecting) {
        // A node that does not take the connection within the queue's bound (its accept
        // queue full, the host gone) counts as refusing it: the request may go elsewhere,
        // as nothing of it was sent. The OS would give up only after about two minutes.
        connectTimer = setTimeout(() => {
          if (!connected && !abandoned) upstream.destroy(Object.assign(new Error(`no connection to ${node.name} within ${limits.queueTimeoutMs} ms`), { code: 'ETIMEDOUT' }));
        }, limits.queueTimeoutMs);
        socket.once('connect', go);
      } else {
        go();
      }
    });
    const onSilence = (): void => {
      if (abandoned || !connected) return;
      counters.upstreamTimeouts++;
      // Silent before any answer: maybe hung, so check it now. A response the client does
      // not read says nothing about the node.
      if (!responded) this.host.suspect(node);
      // Never retried: the app may be acting on the request still.
      abort();
      if (this.clientGone || this.settled) return;
      if (responded || this.res.headersSent) {
        this.settled = true;
        this.res.destroy();
        return;
      }
      this.settle(504, 'KILN_ERR_TIMEOUT', `app server ${node.name} sent nothing for ${limits.upstreamIdleTimeoutMs} ms (--upstream-idle-timeout-ms)`);
    };
    upstream.on('response', (upRes) => {
      responded = true;
      upRes.once('close', release);
      if (this.clientGone || this.settled) {
        upRes.resume();
        return;
      }
      this.host.adjustResponse(this.req, node, upRes.headers);
      const headers = stripHopByHop(upRes.headers);
      // The app answered before the body was all in: once its response is relayed, the
      // connection closes (Node ends it after a response with Connection: close), so the
      // rest of the body is never waited for; its deadlines end with the response.
      if (!this.body.complete) closeAfterAnswer(this.req, headers);
      this.res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, headers);
      upRes.pipe(this.res);
      upRes.on('error', () => {
        release();
        this.res.destroy();
      });
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      release();
      if (abandoned || this.settled) return;
      const decision = decideOnFailure({ clientGone: this.clientGone, responseStarted: responded || this.res.headersSent, connected, idempotent: this.idempotent, replayable: this.body.replayable, attempts: this.tried.size });
      if (decision === 'client-gone') return;
      node.failures++;
      if (!connected && isConnectFailure(err.code)) {
        node.markDown(err.message);
        log.warn('node down (connection refused)', { node: node.name });
      } else if (connected && !responded) {
        this.host.suspect(node);
      }
      if (decision === 'retry') {
        counters.failovers++;
        this.send();
      } else if (decision === 'cut') {
        counters.errors++;
        this.res.destroy();
      } else {
        counters.errors++;
        this.settle(502, 'KILN_ERR_BAD_GATEWAY', `app server ${node.name} failed: ${err.message}`);
      }
    });
  }

  private onBodyTimeout(kind: BodyTimeout): void {
    if (this.settled || this.clientGone) return;
    this.host.counters.bodyTimeouts++;
    this.current?.end(true);
    const { bodyIdleTimeoutMs, bodyTimeoutMs } = this.host.limits;
    if (this.res.headersSent) {
      this.settled = true;
      this.res.destroy();
      return;
    }
    this.settle(408, 'KILN_ERR_REQUEST_TIMEOUT', kind === 'idle' ? `the request body sent nothing for ${bodyIdleTimeoutMs} ms` : `the request body was not complete within ${bodyTimeoutMs} ms`);
  }

  /** The balancer's own answer; the connection closes after it when a body may be left unread. */
  private settle(status: number, code: string, message: string): void {
    this.settled = true;
    this.body.stop();
    const extra: Record<string, string> = status === 503 ? { 'retry-after': '1' } : {};
    if (this.bodyPresent) closeAfterAnswer(this.req, extra);
    sendError(this.res, status, code, message, extra);
  }
}
