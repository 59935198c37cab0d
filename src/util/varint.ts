/**
 * Unsigned LEB128 varints in Buffers: 7 bits a byte, low first, the top bit set on every
 * byte but the last. Exact up to 2^53. Used where the session table packs small numbers
 * (lengths, versions) that are nearly always under 128.
 */

/** Where the last readVarint stopped (one module-level cursor rather than a result object per call). */
export let varintEnd = 0;

export function readVarint(bytes: Buffer, at: number): number {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = bytes[at++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) break;
    scale *= 128;
  }
  varintEnd = at;
  return value;
}

/** Writes `value` at `out[at]`; returns the first byte after it. */
export function writeVarint(out: Buffer, at: number, value: number): number {
  while (value >= 0x80) {
    out[at++] = (value % 128) | 0x80;
    value = Math.floor(value / 128);
  }
  out[at++] = value;
  return at;
}

/** Bytes writeVarint takes for `value`. */
export function varintLength(value: number): number {
  let n = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    n++;
  }
  return n;
}

/**
 * Writes `text` as UTF-8 after a varint of `byteLength * scale + add` (a length, or a tag
 * that carries one); returns the first byte after it. The text goes first after the
 * longest varint it could need, then moves back if its varint is shorter: its byte
 * length is known only once written. Room: varintLength((3 * text.length) * scale + add)
 * + 3 * text.length bytes.
 */
export function writeVarintPrefixedUtf8(out: Buffer, at: number, text: string, scale = 1, add = 0): number {
  const room = varintLength(3 * text.length * scale + add);
  const length = out.write(text, at + room, 'utf8');
  const textAt = writeVarint(out, at, length * scale + add);
  if (textAt !== at + room) out.copyWithin(textAt, at + room, at + room + length);
  return textAt + length;
}
