/**
 * Finds where a value sits inside an encoded attribute without decoding it: the byte
 * range of `items[37]` in a 20 KB list, so a change to that item is re-encoded alone
 * and spliced in. Reads MessagePack headers only (no allocation but the key bytes).
 *
 * Only what a plain-data attribute contains is walked: maps with string keys, arrays,
 * strings, numbers, booleans, nil, undefined (msgpackr's d4 00 00), binary and Date
 * timestamps (extension type -1).
 * msgpackr writes its other types (Set, Error, RegExp…) as an extension marker followed
 * by a separate value, which a header walk cannot tell apart from two values; on any
 * other extension the walk gives up (`undefined`) and the caller encodes the whole
 * value instead.
 */

/** Byte range [start, end) of the value at `path` (map keys and array indexes), or undefined. */
export function locateValue(bytes: Uint8Array, path: readonly string[]): [start: number, end: number] | undefined {
  try {
    let pos = 0;
    for (const key of path) {
      const next = enterChild(bytes, pos, key);
      if (next < 0) return undefined;
      pos = next;
    }
    return [pos, skipValue(bytes, pos)];
  } catch {
    return undefined;
  }
}

/** Position of the value under `key` in the container at `pos`, or -1. */
function enterChild(b: Uint8Array, pos: number, key: string): number {
  const t = b[pos]!;
  let count: number;
  let isMap: boolean;
  if (t >= 0x80 && t <= 0x8f) [count, isMap, pos] = [t & 0x0f, true, pos + 1];
  else if (t >= 0x90 && t <= 0x9f) [count, isMap, pos] = [t & 0x0f, false, pos + 1];
  else if (t === 0xde) [count, isMap, pos] = [u16(b, pos + 1), true, pos + 3];
  else if (t === 0xdf) [count, isMap, pos] = [u32(b, pos + 1), true, pos + 5];
  else if (t === 0xdc) [count, isMap, pos] = [u16(b, pos + 1), false, pos + 3];
  else if (t === 0xdd) [count, isMap, pos] = [u32(b, pos + 1), false, pos + 5];
  else return -1;
  if (!isMap) {
    const index = Number(key);
    if (!Number.isInteger(index) || index < 0 || index >= count || String(index) !== key) return -1;
    for (let i = 0; i < index; i++) pos = skipValue(b, pos);
    return pos;
  }
  const wanted = Buffer.from(key, 'utf8');
  for (let i = 0; i < count; i++) {
    const valueAt = keyMatches(b, pos, wanted);
    if (valueAt > 0) return valueAt;
    pos = skipValue(b, skipValue(b, pos));
  }
  return -1;
}

/** If the string key at `pos` equals `wanted`, where its value starts; else 0. */
function keyMatches(b: Uint8Array, pos: number, wanted: Uint8Array): number {
  const t = b[pos]!;
  let length: number;
  let start: number;
  if (t >= 0xa0 && t <= 0xbf) [length, start] = [t & 0x1f, pos + 1];
  else if (t === 0xd9) [length, start] = [b[pos + 1]!, pos + 2];
  else if (t === 0xda) [length, start] = [u16(b, pos + 1), pos + 3];
  else if (t === 0xdb) [length, start] = [u32(b, pos + 1), pos + 5];
  else throw new RangeError('map key is not a string');
  if (length !== wanted.length) return 0;
  for (let i = 0; i < length; i++) if (b[start + i] !== wanted[i]) return 0;
  return start + length;
}

/** Where the value starting at `pos` ends. Throws RangeError on what it does not walk. */
export function skipValue(b: Uint8Array, pos: number): number {
  let remaining = 1;
  while (remaining > 0) {
    remaining--;
    if (pos >= b.length) throw new RangeError('truncated value');
    const t = b[pos++]!;
    if (t < 0x80 || t >= 0xe0) continue; // fixints
    if (t < 0x90) remaining += 2 * (t & 0x0f);
    else if (t < 0xa0) remaining += t & 0x0f;
    else if (t < 0xc0) pos += t & 0x1f;
    else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break;
        case 0xc4: pos += 1 + b[pos]!; break;
        case 0xc5: pos += 2 + u16(b, pos); break;
        case 0xc6: pos += 4 + u32(b, pos); break;
        case 0xc7: dateOnly(b[pos + 1]!); pos += 2 + b[pos]!; break;
        case 0xc8: dateOnly(b[pos + 2]!); pos += 3 + u16(b, pos); break;
        case 0xc9: dateOnly(b[pos + 4]!); pos += 5 + u32(b, pos); break;
        case 0xca: pos += 4; break;
        case 0xcb: pos += 8; break;
        case 0xcc: case 0xd0: pos += 1; break;
        case 0xcd: case 0xd1: pos += 2; break;
        case 0xce: case 0xd2: pos += 4; break;
        case 0xcf: case 0xd3: pos += 8; break;
        case 0xd4: if (b[pos] !== 0 || b[pos + 1] !== 0) dateOnly(b[pos]!); pos += 2; break; // d4 00 00: undefined
        case 0xd5: dateOnly(b[pos]!); pos += 3; break;
        case 0xd6: dateOnly(b[pos]!); pos += 5; break;
        case 0xd7: dateOnly(b[pos]!); pos += 9; break;
        case 0xd8: dateOnly(b[pos]!); pos += 17; break;
        case 0xd9: pos += 1 + b[pos]!; break;
        case 0xda: pos += 2 + u16(b, pos); break;
        case 0xdb: pos += 4 + u32(b, pos); break;
        case 0xdc: remaining += u16(b, pos); pos += 2; break;
        case 0xdd: remaining += u32(b, pos); pos += 4; break;
        case 0xde: remaining += 2 * u16(b, pos); pos += 2; break;
        case 0xdf: remaining += 2 * u32(b, pos); pos += 4; break;
        default: throw new RangeError(`unknown MessagePack type 0x${t.toString(16)}`);
      }
    }
  }
  if (pos > b.length) throw new RangeError('truncated value');
  return pos;
}

/** Timestamps (type -1) are self-contained; msgpackr's other extensions are not (see top). */
function dateOnly(type: number): void {
  if (type !== 0xff) throw new RangeError(`extension type ${type} is not walked`);
}

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

function u32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) >>> 0) + ((b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!);
}
