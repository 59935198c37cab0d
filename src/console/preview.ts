/**
 * What the admin API shows of an attribute value, read from its MessagePack bytes with a
 * budget instead of decoding it: the admin port shares the kiln server's event loop, and
 * decoding and stringifying a 1 MiB value there stalled every app server for a second or
 * two while someone looked at it. The walk reads forward only, stops at a character, node
 * and depth budget, and never touches more of a string than it can show, so its cost does
 * not depend on the value's size.
 *
 * Map keys matching the redaction list have their values replaced (and walked silently,
 * within the same budget), at any depth the preview reaches.
 */

/** Attribute and key names whose values nobody sees in the console, matched case-insensitively as substrings. */
export const DEFAULT_REDACT: readonly string[] = ['password', 'passwd', 'token', 'secret', 'csrf', 'authorization', 'cookie', 'key'];

export const REDACTED = '[redacted]';

const MAX_CHARS = 200;
const MAX_NODES = 2000;
const MAX_DEPTH = 16;
/** Map keys longer than this are shown and matched by their first bytes only. */
const MAX_KEY_BYTES = 256;

/** Thrown to end a walk that reached its budget or bytes it does not read. */
const STOP = Symbol('stop');

/** A predicate over attribute and key names: true when the value must not be shown. */
export type Redactor = (name: string) => boolean;

/** A --admin-redact / --redact flag: a comma list ('' = none), or the defaults when absent. */
export function redactList(flag: string | undefined): readonly string[] {
  if (flag === undefined) return DEFAULT_REDACT;
  return flag.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
}

export function redactor(patterns: readonly string[]): Redactor {
  const lower = patterns.map((p) => p.toLowerCase()).filter((p) => p.length > 0);
  if (lower.length === 0) return () => false;
  return (name) => {
    const n = name.toLowerCase();
    return lower.some((p) => n.includes(p));
  };
}

/** A JSON-like preview of at most ~200 characters ('…' marks where it stopped). */
export function previewValue(bytes: Uint8Array, redact: Redactor): string {
  const walk = new Walk(bytes, redact);
  try {
    walk.value(0);
    if (walk.pos !== bytes.length) return `${walk.out}…`;
    return walk.out;
  } catch (err) {
    if (err !== STOP) throw err;
    return `${walk.out.slice(0, MAX_CHARS)}…`;
  }
}

/** The value's type, from its first bytes: what the read-only role sees instead of a value. */
export function valueType(b: Uint8Array): string {
  const t = b[0];
  if (t === undefined) return 'empty';
  if (t < 0x80 || t >= 0xe0 || (t >= 0xca && t <= 0xd3)) return 'number';
  if (t < 0x90 || t === 0xde || t === 0xdf) return 'object';
  if (t < 0xa0 || t === 0xdc || t === 0xdd) return 'array';
  if (t < 0xc0 || t === 0xd9 || t === 0xda || t === 0xdb) return 'string';
  if (t === 0xc0) return 'null';
  if (t === 0xc2 || t === 0xc3) return 'boolean';
  if (t >= 0xc4 && t <= 0xc6) return 'binary';
  const ext = extType(b, 0);
  if (ext === undefined) return 'unknown';
  if (ext.type === 0xff) return 'date';
  if (t === 0xd4 && b[1] === 0 && b[2] === 0) return 'undefined';
  return EXT_NAMES[ext.type] ?? 'extension';
}

/** msgpackr's extension types (moreTypes): the markers (fixext1, data 0) come before the value they qualify. */
const EXT_NAMES: Record<number, string> = { 0x73: 'Set', 0x78: 'RegExp', 0x65: 'Error', 0x74: 'typed array', 0x42: 'bigint', 0x62: 'bigint' };
const MARKERS = new Set([0x73, 0x78, 0x65]);

const FIXEXT: Record<number, number> = { 0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16 };

/**
 * [type, data start, data length] of the extension header at `pos`, or undefined when
 * there is none or its header is cut short. Only `b`'s own bytes are read: a value may
 * be a view into a larger (pooled) buffer, whose neighbouring bytes are not its own.
 * The data itself may still be missing; the walk's take() checks that.
 */
function extType(b: Uint8Array, pos: number): { type: number; start: number; length: number } | undefined {
  const t = b[pos];
  if (t === undefined) return undefined;
  const fixed = FIXEXT[t];
  const header = fixed !== undefined ? 2 : t === 0xc7 ? 3 : t === 0xc8 ? 4 : t === 0xc9 ? 6 : 0;
  if (header === 0 || pos + header > b.length) return undefined;
  const type = b[pos + header - 1]!;
  if (fixed !== undefined) return { type, start: pos + 2, length: fixed };
  if (t === 0xc7) return { type, start: pos + 3, length: b[pos + 1]! };
  if (t === 0xc8) return { type, start: pos + 4, length: b[pos + 1]! * 0x100 + b[pos + 2]! };
  return { type, start: pos + 6, length: b[pos + 1]! * 0x1000000 + b[pos + 2]! * 0x10000 + b[pos + 3]! * 0x100 + b[pos + 4]! };
}

const decoder = new TextDecoder();

class Walk {
  pos = 0;
  out = '';
  private nodes = 0;
  /** > 0 while walking a redacted value: counted, not shown. */
  private quiet = 0;
  private readonly view: DataView;

  constructor(
    private readonly b: Uint8Array,
    private readonly redact: Redactor,
  ) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  private write(s: string): void {
    if (this.quiet > 0) return;
    this.out += s;
    if (this.out.length > MAX_CHARS) throw STOP;
  }

  /** Moves past `n` bytes that must be there. */
  private take(n: number): number {
    const at = this.pos;
    if (n < 0 || at + n > this.b.length) throw STOP;
    this.pos += n;
    return at;
  }

  value(depth: number): void {
    if (++this.nodes > MAX_NODES || depth > MAX_DEPTH) throw STOP;
    const t = this.b[this.take(1)]!;
    const v = this.view;
    if (t < 0x80) return this.write(String(t));
    if (t >= 0xe0) return this.write(String(t - 0x100));
    if (t < 0x90) return this.map(t & 0x0f, depth);
    if (t < 0xa0) return this.array(t & 0x0f, depth);
    if (t < 0xc0) return this.string(t & 0x1f);
    switch (t) {
      case 0xc0: return this.write('null');
      case 0xc2: return this.write('false');
      case 0xc3: return this.write('true');
      case 0xc4: return this.binary(v.getUint8(this.take(1)));
      case 0xc5: return this.binary(v.getUint16(this.take(2)));
      case 0xc6: return this.binary(v.getUint32(this.take(4)));
      case 0xca: return this.write(String(v.getFloat32(this.take(4))));
      case 0xcb: return this.write(String(v.getFloat64(this.take(8))));
      case 0xcc: return this.write(String(v.getUint8(this.take(1))));
      case 0xcd: return this.write(String(v.getUint16(this.take(2))));
      case 0xce: return this.write(String(v.getUint32(this.take(4))));
      case 0xcf: return this.write(String(v.getBigUint64(this.take(8))));
      case 0xd0: return this.write(String(v.getInt8(this.take(1))));
      case 0xd1: return this.write(String(v.getInt16(this.take(2))));
      case 0xd2: return this.write(String(v.getInt32(this.take(4))));
      case 0xd3: return this.write(String(v.getBigInt64(this.take(8))));
      case 0xd9: return this.string(v.getUint8(this.take(1)));
      case 0xda: return this.string(v.getUint16(this.take(2)));
      case 0xdb: return this.string(v.getUint32(this.take(4)));
      case 0xdc: return this.array(v.getUint16(this.take(2)), depth);
      case 0xdd: return this.array(v.getUint32(this.take(4)), depth);
      case 0xde: return this.map(v.getUint16(this.take(2)), depth);
      case 0xdf: return this.map(v.getUint32(this.take(4)), depth);
      default: return this.extension(depth);
    }
  }

  private string(length: number): void {
    const at = this.take(length);
    if (this.quiet > 0) return;
    // No more bytes than the preview has room for (4 per character at most in UTF-8).
    const room = Math.max(0, MAX_CHARS - this.out.length + 1);
    const text = decoder.decode(this.b.subarray(at, at + Math.min(length, 4 * room)));
    this.write(JSON.stringify(text));
  }

  private binary(length: number): void {
    this.take(length);
    this.write(`<${length} bytes>`);
  }

  private array(count: number, depth: number): void {
    this.write('[');
    for (let i = 0; i < count; i++) {
      if (i > 0) this.write(',');
      this.value(depth + 1);
    }
    this.write(']');
  }

  private map(count: number, depth: number): void {
    this.write('{');
    for (let i = 0; i < count; i++) {
      if (i > 0) this.write(',');
      const key = this.key(depth);
      this.write(':');
      if (key !== undefined && this.quiet === 0 && this.redact(key)) {
        this.write(JSON.stringify(REDACTED));
        this.quiet++;
        try {
          this.value(depth + 1);
        } finally {
          this.quiet--;
        }
      } else this.value(depth + 1);
    }
    this.write('}');
  }

  /** Writes a map key; returns it when it is a string (the only keys redaction matches). */
  private key(depth: number): string | undefined {
    const t = this.b[this.pos];
    let length: number;
    if (t !== undefined && t >= 0xa0 && t <= 0xbf) length = t & 0x1f;
    else if (t === 0xd9) length = this.b[this.pos + 1] ?? 0;
    else if (t === 0xda) length = this.pos + 2 < this.b.length ? this.view.getUint16(this.pos + 1) : 0;
    else if (t === 0xdb) length = this.pos + 4 < this.b.length ? this.view.getUint32(this.pos + 1) : 0;
    else {
      this.value(depth + 1);
      return undefined;
    }
    if (++this.nodes > MAX_NODES) throw STOP;
    this.take(t === 0xd9 ? 2 : t === 0xda ? 3 : t === 0xdb ? 5 : 1);
    const at = this.take(length);
    const key = decoder.decode(this.b.subarray(at, at + Math.min(length, MAX_KEY_BYTES)));
    this.write(JSON.stringify(key));
    return key;
  }

  private extension(depth: number): void {
    const ext = extType(this.b, this.pos - 1);
    if (!ext) throw STOP;
    this.pos = ext.start;
    const data = this.take(ext.length);
    if (ext.type === 0xff) return this.write(this.date(data, ext.length));
    if (ext.length === 1 && this.b[data] === 0) {
      if (ext.type === 0) return this.write('undefined');
      // msgpackr writes a Set, RegExp or Error as this marker followed by a plain value.
      if (!MARKERS.has(ext.type)) throw STOP;
      this.write(`${EXT_NAMES[ext.type]} `);
      return this.value(depth + 1);
    }
    this.write(`<${EXT_NAMES[ext.type] ?? `extension ${ext.type}`}, ${ext.length} bytes>`);
  }

  private date(at: number, length: number): string {
    const v = this.view;
    let ms: number;
    if (length === 4) ms = v.getUint32(at) * 1000;
    else if (length === 8) ms = (v.getUint32(at) & 0x03) * 2 ** 32 * 1000 + v.getUint32(at + 4) * 1000 + Math.floor((v.getUint32(at) >>> 2) / 1e6);
    else if (length === 12) ms = Number(v.getBigInt64(at + 4)) * 1000 + Math.floor(v.getUint32(at) / 1e6);
    else return '<date>';
    const d = new Date(ms);
    return Number.isNaN(d.getTime()) ? '<date>' : JSON.stringify(d.toISOString());
  }
}
