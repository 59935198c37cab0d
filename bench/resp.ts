/**
 * A minimal RESP2 connection for the benchmarks that talk to redis-server directly:
 * filling it fast (pipelined commands on one socket, no client library in between) and
 * polling a restarting server (PING, INFO) without starting a redis-cli per poll. Every
 * call has a deadline; a timed-out or failed socket rejects everything waiting on it.
 */
import { createConnection, type Socket } from 'node:net';

export type RespReply = string | number | null | RespReply[];

/** An error reply (`-LOADING …`, `-ERR …`): the server answered, the socket is fine. */
export class RespErrorReply extends Error {}

interface Waiter {
  resolve(value: RespReply): void;
  reject(err: Error): void;
}

export function encodeCommand(args: readonly (string | Uint8Array)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = typeof arg === 'string' ? Buffer.from(arg) : Buffer.from(arg.buffer, arg.byteOffset, arg.byteLength);
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

/** Parses one reply at `at`: the reply and where the next one starts, or undefined if incomplete. */
function parse(buf: Buffer, at: number): [RespReply | RespErrorReply, number] | undefined {
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return undefined;
  const type = String.fromCharCode(buf[at]!);
  const line = buf.toString('utf8', at + 1, eol);
  switch (type) {
    case '+':
      return [line, eol + 2];
    case '-':
      return [new RespErrorReply(line), eol + 2];
    case ':':
      return [Number(line), eol + 2];
    case '$': {
      const len = Number(line);
      if (len < 0) return [null, eol + 2];
      if (buf.length < eol + 2 + len + 2) return undefined;
      return [buf.toString('utf8', eol + 2, eol + 2 + len), eol + 2 + len + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, eol + 2];
      const items: RespReply[] = [];
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        const item = parse(buf, next);
        if (!item) return undefined;
        if (item[0] instanceof RespErrorReply) return [item[0], item[1]];
        items.push(item[0]);
        next = item[1];
      }
      return [items, next];
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(type)}`);
  }
}

export class RespConnection {
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiting: Waiter[] = [];
  private failure: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.received(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  static connect(port: number, timeoutMs: number, host = '127.0.0.1'): Promise<RespConnection> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ port, host });
      socket.setNoDelay(true);
      const timer = setTimeout(() => socket.destroy(new Error(`no connection to ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new RespConnection(socket));
      });
    });
  }

  /** One command; rejects with RespErrorReply on an error reply. */
  call(args: readonly (string | Uint8Array)[], timeoutMs = 10_000): Promise<RespReply> {
    return this.pipeline([encodeCommand(args)], timeoutMs).then((replies) => replies[0]!);
  }

  /**
   * Sends already encoded commands in one write and waits for all their replies (the
   * first error reply rejects). Past `timeoutMs` the connection is destroyed.
   */
  pipeline(encoded: readonly Buffer[], timeoutMs = 10_000): Promise<RespReply[]> {
    if (this.failure) return Promise.reject(this.failure);
    const replies = encoded.map(() => new Promise<RespReply>((resolve, reject) => this.waiting.push({ resolve, reject })));
    this.socket.write(encoded.length === 1 ? encoded[0]! : Buffer.concat(encoded));
    const timer = setTimeout(() => this.socket.destroy(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
    const all = Promise.all(replies);
    return all.finally(() => clearTimeout(timer));
  }

  close(): void {
    this.socket.destroy();
  }

  private received(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    let at = 0;
    for (;;) {
      if (at >= this.buf.length) break;
      const parsed = parse(this.buf, at);
      if (!parsed) break;
      at = parsed[1];
      const waiter = this.waiting.shift();
      if (!waiter) continue;
      if (parsed[0] instanceof RespErrorReply) waiter.reject(parsed[0]);
      else waiter.resolve(parsed[0]);
    }
    this.buf = at >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(at);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const w of this.waiting.splice(0)) w.reject(err);
  }
}

/** `INFO <section>` as field → value. */
export async function redisInfo(conn: RespConnection, section: string): Promise<Record<string, string>> {
  const text = String(await conn.call(['INFO', section]));
  const out: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}
