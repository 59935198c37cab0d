import { KilnError } from '../errors/index.js';

/**
 * Frames on the wire:
 *
 *   u32 length   bytes that follow (header + body), big-endian
 *   u8  version  protocol version of this frame
 *   u8  type     message type (see messages.ts)
 *   u32 request  request id; 0 for messages the server pushes (recall, event)
 *   ...body      MessagePack
 *
 * The parser below is pure (bytes in, frames or one error out) so it can be fed whole
 * chunks or single bytes in tests and fuzzed; it never buffers more than one frame's
 * announced length, and refuses a length above its limit before reading the body.
 */
export const PROTOCOL_VERSION = 1;
export const LENGTH_BYTES = 4;
export const HEADER_BYTES = 6;
export const DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024;

export interface Frame {
  version: number;
  type: number;
  requestId: number;
  body: Uint8Array;
}

export function encodeFrame(type: number, requestId: number, body: Uint8Array, version = PROTOCOL_VERSION): Buffer {
  const frame = Buffer.allocUnsafe(LENGTH_BYTES + HEADER_BYTES + body.length);
  frame.writeUInt32BE(HEADER_BYTES + body.length, 0);
  frame.writeUInt8(version, 4);
  frame.writeUInt8(type, 5);
  frame.writeUInt32BE(requestId >>> 0, 6);
  frame.set(body, LENGTH_BYTES + HEADER_BYTES);
  return frame;
}

export interface ParseResult {
  frames: Frame[];
  /** Set once the stream is unusable (oversized or malformed frame); every later push returns it too. */
  error?: KilnError;
}

export class FrameParser {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private error: KilnError | undefined;

  constructor(private maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /**
   * Changes the limit for the frames still to come. A server parses a peer's frames
   * under a small limit until it has authenticated, so an anonymous socket cannot make
   * it buffer a large body; the length header is checked against whatever limit holds
   * when it arrives.
   */
  setLimit(maxFrameBytes: number): void {
    this.maxFrameBytes = maxFrameBytes;
  }

  /** Bytes held waiting for the rest of a frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Uint8Array): ParseResult {
    const frames: Frame[] = [];
    if (this.error) return { frames, error: this.error };
    if (chunk.length > 0) {
      this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.buffered += chunk.length;
    }
    while (this.buffered >= LENGTH_BYTES) {
      const length = this.peekLength();
      if (length < HEADER_BYTES) return this.fail(frames, new KilnError('KILN_ERR_PROTOCOL', `frame length ${length} is shorter than the ${HEADER_BYTES}-byte header`));
      if (length > this.maxFrameBytes) {
        return this.fail(frames, new KilnError('KILN_ERR_FRAME_TOO_LARGE', `frame of ${length} bytes is above the limit of ${this.maxFrameBytes}`, { details: { length, limit: this.maxFrameBytes } }));
      }
      if (this.buffered < LENGTH_BYTES + length) break;
      const bytes = this.take(LENGTH_BYTES + length);
      frames.push({
        version: bytes[4]!,
        type: bytes[5]!,
        requestId: bytes.readUInt32BE(6),
        body: bytes.subarray(LENGTH_BYTES + HEADER_BYTES),
      });
    }
    return { frames };
  }

  private fail(frames: Frame[], error: KilnError): ParseResult {
    this.error = error;
    this.chunks = [];
    this.buffered = 0;
    return { frames, error };
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= LENGTH_BYTES) return first.readUInt32BE(0);
    const head = Buffer.alloc(LENGTH_BYTES);
    let filled = 0;
    for (const chunk of this.chunks) {
      const n = Math.min(chunk.length, LENGTH_BYTES - filled);
      chunk.copy(head, filled, 0, n);
      filled += n;
      if (filled === LENGTH_BYTES) break;
    }
    return head.readUInt32BE(0);
  }

  /** Removes exactly n bytes from the front; copies only when they span chunks. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const want = n - filled;
      if (chunk.length <= want) {
        chunk.copy(out, filled);
        filled += chunk.length;
        this.chunks.shift();
      } else {
        chunk.copy(out, filled, 0, want);
        this.chunks[0] = chunk.subarray(want);
        filled += want;
      }
    }
    return out;
  }
}
