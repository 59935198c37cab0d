import { connect, type Socket } from 'node:net';
import { errorFromWire, type KilnError } from '../../src/errors/index.js';
import { encodeFrame, FrameParser, type Frame } from '../../src/protocol/frame.js';
import { decodeBody, encodeBody, MessageType } from '../../src/protocol/messages.js';

/** A hand-driven protocol peer, for sending what no real client would. */
export class RawClient {
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  private readonly parser = new FrameParser(64 * 1024 * 1024);

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.frames.push(...this.parser.push(chunk).frames));
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** `localAddress` (another 127/8 address) makes the peer look like another host. */
  static open(port: number, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, localAddress }, () => resolve(new RawClient(socket)));
      socket.once('error', reject);
    });
  }

  write(bytes: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  send(type: number, requestId: number, body: unknown, version?: number): void {
    this.write(encodeFrame(type, requestId, encodeBody(body), version));
  }

  hello(token: string, features?: string[]): void {
    this.send(MessageType.Hello, 1, { token, client: { name: 'raw', pid: process.pid, host: 'test', app: 'test' }, ...(features ? { features } : {}) });
  }

  /** The raw body of the answer to a request, once it comes (a binary layout is not MessagePack). */
  async rawReply(requestId: number, timeoutMs = 3000): Promise<{ type: number; body: Uint8Array }> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.frames.find((f) => f.requestId === requestId);
      if (frame) return { type: frame.type, body: frame.body };
      if (Date.now() > until) throw new Error(`no reply to request ${requestId} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** The body of the answer to a request, once it comes (Ok or Error). */
  async reply(requestId: number, timeoutMs = 3000): Promise<{ type: number; body: unknown }> {
    const { type, body } = await this.rawReply(requestId, timeoutMs);
    return { type, body: decodeBody(body) };
  }

  /** The error the server sent before closing, if any. */
  lastError(): KilnError | undefined {
    const frame = [...this.frames].reverse().find((f) => f.type === MessageType.Error);
    return frame ? errorFromWire(decodeBody(frame.body)) : undefined;
  }

  /** Resolves true if the server closed the connection within timeoutMs. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    return Promise.race([this.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs))]);
  }

  destroy(): void {
    this.socket.destroy();
  }
}
