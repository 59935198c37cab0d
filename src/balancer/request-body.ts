import type { IncomingMessage } from 'node:http';
import type { Writable } from 'node:stream';

/**
 * A client's request body on its way to an app server, with its deadlines.
 *
 * The first `bufferBytes` are read before any node is picked, so a client that trickles
 * a small body holds no socket of the upstream pool (a few hundred slow bodies used to
 * take every one), and a body that is wholly in memory can go to another node when the
 * first one refused the connection. The rest streams. A body that sends nothing for
 * `idleMs`, or is not complete `totalMs` after its headers, is timed out.
 */
export interface BodyDeadlines {
  idleMs: number;
  totalMs: number;
  bufferBytes: number;
}

export type BodyTimeout = 'idle' | 'total';

export class RequestBody {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private streamed = false;
  private ended: boolean;
  private idleTimer: NodeJS.Timeout | undefined;
  private totalTimer: NodeJS.Timeout | undefined;
  private leadDone: (() => void) | undefined;
  /** Resolves once the body is complete or `bufferBytes` of it are in; never rejects. */
  readonly lead: Promise<void>;

  constructor(
    private readonly req: IncomingMessage,
    present: boolean,
    private readonly deadlines: BodyDeadlines,
    private readonly onTimeout: (kind: BodyTimeout) => void,
  ) {
    this.ended = !present;
    if (!present) {
      this.lead = Promise.resolve();
      // A bodiless request still ends its stream; read it so 'end' and 'close' come.
      req.resume();
      return;
    }
    this.lead = new Promise((resolve) => (this.leadDone = resolve));
    this.totalTimer = setTimeout(() => this.fire('total'), deadlines.totalMs);
    this.armIdle();
    req.on('data', this.onData);
    req.once('end', () => {
      this.ended = true;
      this.stop();
      this.release();
    });
    req.once('close', () => this.stop());
    if (deadlines.bufferBytes === 0) this.holdRest();
  }

  /**
   * Nothing of the body was streamed yet: what was read is in memory and the rest still
   * unread in the socket, so the request can go to another node whole.
   */
  get replayable(): boolean {
    return !this.streamed;
  }

  /** The client has sent the whole body (it may still be on its way to the app). */
  get complete(): boolean {
    return this.ended;
  }

  /** Sends what is buffered to `dest`, then the rest as it comes; ends `dest` with the body. */
  sendTo(dest: Writable): void {
    for (const chunk of this.chunks) dest.write(chunk);
    if (this.ended) {
      dest.end();
      return;
    }
    // From here the body is not kept: it cannot be replayed, and memory stays bounded.
    this.streamed = true;
    this.chunks = [];
    this.armIdle();
    this.req.pipe(dest);
  }

  /** Clears the deadlines (the request ended, failed or was answered). */
  stop(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.totalTimer);
    this.idleTimer = undefined;
    this.totalTimer = undefined;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.armIdle();
    // Once streaming, the pipe carries every chunk. Before, each one is kept, even past
    // bufferBytes: a chunk already on its way when the stream was paused (or, with
    // bufferBytes 0, read before the pipe started) would otherwise be lost.
    if (this.streamed) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    if (this.buffered >= this.deadlines.bufferBytes) this.holdRest();
  };

  /**
   * Enough to pick a node on: the rest waits in the socket until the upstream is ready.
   * The client is not silent while we do not read, so the idle clock stops till then.
   */
  private holdRest(): void {
    this.req.pause();
    clearTimeout(this.idleTimer);
    this.release();
  }

  private release(): void {
    const done = this.leadDone;
    this.leadDone = undefined;
    done?.();
  }

  private armIdle(): void {
    if (this.ended) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.fire('idle'), this.deadlines.idleMs);
  }

  private fire(kind: BodyTimeout): void {
    if (this.ended) return;
    if (kind === 'idle' && this.req.readableFlowing === false) {
      // Paused by the pipe: the app server reads slowly, the client is not to blame.
      this.armIdle();
      return;
    }
    this.stop();
    this.req.off('data', this.onData);
    this.onTimeout(kind);
  }
}
