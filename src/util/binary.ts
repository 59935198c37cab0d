/**
 * Fixed binary layouts, written and read field by field: the few hot messages and
 * records where MessagePack's generic maps cost more than the work they carry (the
 * kiln server's log records, the commit request). Numbers are big-endian; a string is
 * a u16 length and UTF-8; bytes are a u32 length and the data.
 */

/** The one byte MessagePack never uses: a body or record starting with it is a binary layout. */
export const BINARY_MARK = 0xc1;

/** Longest string a layout carries (u16 length); longer ones make the writer fall back to MessagePack. */
export const MAX_LAYOUT_STRING = 0xffff;

/**
 * Bytes a string takes in a layout; Infinity when it is longer than a layout carries, so
 * a size summed over the fields says by itself whether the layout can be used.
 */
export function stringSize(s: string): number {
  const bytes = Buffer.byteLength(s, 'utf8');
  return bytes > MAX_LAYOUT_STRING ? Infinity : 2 + bytes;
}

/** Writes fields in order into a buffer of the size computed up front. */
export class ByteWriter {
  private readonly buf: Buffer;
  private at = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  u8(n: number): this {
    this.buf[this.at++] = n;
    return this;
  }
  u16(n: number): this {
    this.at = this.buf.writeUInt16BE(n, this.at);
    return this;
  }
  u32(n: number): this {
    this.at = this.buf.writeUInt32BE(n, this.at);
    return this;
  }
  f64(n: number): this {
    this.at = this.buf.writeDoubleBE(n, this.at);
    return this;
  }
  string(s: string): this {
    const length = this.buf.write(s, this.at + 2, 'utf8');
    this.buf.writeUInt16BE(length, this.at);
    this.at += 2 + length;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.at = this.buf.writeUInt32BE(b.length, this.at);
    this.buf.set(b, this.at);
    this.at += b.length;
    return this;
  }
  done(): Buffer {
    if (this.at !== this.buf.length) throw new RangeError(`binary layout size ${this.at} ≠ ${this.buf.length}`);
    return this.buf;
  }
}

/**
 * Reads fields in order; a read past the end throws RangeError (a damaged record, a
 * malformed message). Byte fields are views of the buffer read, not copies.
 */
export class ByteReader {
  constructor(
    private readonly buf: Buffer,
    private at: number,
  ) {}
  u8(): number {
    return this.buf.readUInt8(this.at++);
  }
  u16(): number {
    const n = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return n;
  }
  u32(): number {
    const n = this.buf.readUInt32BE(this.at);
    this.at += 4;
    return n;
  }
  f64(): number {
    const n = this.buf.readDoubleBE(this.at);
    this.at += 8;
    return n;
  }
  string(): string {
    const length = this.u16();
    const end = this.at + length;
    if (end > this.buf.length) throw new RangeError('string past the end of the data');
    const s = this.buf.toString('utf8', this.at, end);
    this.at = end;
    return s;
  }
  bytes(): Buffer {
    const start = this.skipBytes();
    return this.buf.subarray(start, this.at);
  }
  /** Like bytes(), but a copy of its own: for values kept after the buffer read is gone. */
  copyOfBytes(): Uint8Array {
    const start = this.skipBytes();
    const copy = new Uint8Array(this.at - start);
    // Most session values are a few bytes: a loop beats making a view to copy from.
    if (copy.length <= 64) for (let i = 0; i < copy.length; i++) copy[i] = this.buf[start + i]!;
    else copy.set(this.buf.subarray(start, this.at));
    return copy;
  }
  /** Reads a byte field's length and moves past it; returns where its data starts. */
  private skipBytes(): number {
    const length = this.u32();
    const start = this.at;
    if (start + length > this.buf.length) throw new RangeError('bytes past the end of the data');
    this.at = start + length;
    return start;
  }
  /** Bytes left to read. */
  get remaining(): number {
    return this.buf.length - this.at;
  }
  end(): void {
    if (this.at !== this.buf.length) throw new RangeError('trailing bytes after the data');
  }
}
