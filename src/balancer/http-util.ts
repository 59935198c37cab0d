import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** Small HTTP helpers shared by the balancer's proxy, upgrade and admin paths. */

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection']);

export function stripHopByHop(headers: IncomingMessage['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const connectionTokens = new Set(String(headers['connection'] ?? '').toLowerCase().split(',').map((t) => t.trim()).filter(Boolean));
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || connectionTokens.has(name)) continue;
    out[name] = value;
  }
  return out;
}

export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

export function firstValue(value: string | string[] | undefined): string | undefined {
  const first = Array.isArray(value) ? value[0] : value;
  const trimmed = first?.split(',')[0]?.trim();
  return trimmed ? trimmed : undefined;
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** A JSON error answer from the balancer itself, `{ code, message }` like every Kiln error. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, extra: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json', ...extra });
  res.end(JSON.stringify({ code, message }));
}

/**
 * A whole JSON answer on a socket the HTTP server has handed over (or not parsed yet),
 * then close. The socket is destroyed a second later: such sockets allow half-open
 * connections, so a peer that never closes its side would keep it (and its descriptor).
 */
export function rawAnswer(socket: Socket, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  const head = Object.entries({ 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), connection: 'close', ...extra }).map(([k, v]) => `${k}: ${v}`);
  socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ''}\r\n${head.join('\r\n')}\r\n\r\n${text}`);
  setTimeout(() => socket.destroy(), RAW_ANSWER_LINGER_MS).unref();
}

/**
 * Answers with Connection: close to a request whose body the client is still sending
 * (an early 401 or 413, a deadline, an admin endpoint), and closes the connection the
 * way nginx's lingering_close does. Node destroys such a socket as soon as the answer is
 * written (destroySoon); with the client's bytes still arriving that is a reset, and a
 * reset makes the client's kernel drop what it had not read yet: the answer itself. So
 * our side is half-closed after the answer, what the client still sends is read and
 * dropped, and the socket goes when the client closes its side, after LINGER_MS, or past
 * LINGER_BYTES. Requests the client pipelines meanwhile are not served (isLingering).
 */
export function closeAfterAnswer(req: IncomingMessage, headers: OutgoingHttpHeaders | Record<string, string>): void {
  headers['connection'] = 'close';
  const socket = req.socket;
  if (lingering.has(socket)) return;
  lingering.add(socket);
  socket.destroySoon = function lingeringClose(this: Socket): void {
    if (this.writable) this.end();
    if (this.readableEnded || this.destroyed) {
      if (this.writableFinished) this.destroy();
      else this.once('finish', () => this.destroy());
      return;
    }
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    let dropped = 0;
    this.on('data', (chunk: Buffer) => {
      dropped += chunk.length;
      if (dropped > LINGER_BYTES) this.destroy();
    });
    this.once('end', () => this.destroy());
    this.once('close', () => clearTimeout(timer));
    // The body still goes through the request: once its pipe to the app is cut (unpipe
    // pauses it) or while the proxy holds it, Node's parser stops reading the socket a
    // few KiB on. So the request lets go of it and flows to nowhere.
    req.unpipe();
    req.removeAllListeners('data');
    req.on('data', () => undefined);
    req.resume();
    this.resume();
  };
}

/** The connection is closing after an answer (closeAfterAnswer): nothing more is served on it. */
export function isLingering(socket: Socket): boolean {
  return lingering.has(socket);
}

const lingering = new WeakSet<Socket>();
/** How long, and how much, a closing connection's unread body is read and dropped. */
const LINGER_MS = 2_000;
const LINGER_BYTES = 4 * 1024 * 1024;

/** How long a raw answer has to reach the peer before its socket is destroyed. */
const RAW_ANSWER_LINGER_MS = 1_000;

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };
