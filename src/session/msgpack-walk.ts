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

/**
 * Byte range [start, end) of the value at `path` (map keys and array indexes), or
 * undefined. `rootItems`, when given, holds where the first items of a top-level array
 * start (`rootItems[i]` is item i), as far as earlier walks got: the walk to `items[150]`
 * of a 20 KB list then starts from the furthest item known, and extends the list.
 */
export function locateValue(bytes: Uint8Array, path: readonly string[], rootItems?: number[]): [start: number, end: number] | undefined {
  try {
    let pos = 0;
    let depth = 0;
    if (rootItems && path.length > 0 && isArrayHeader(bytes[0]!)) {
      pos = enterIndexedItem(bytes, path[0]!, rootItems);
      if (pos < 0) return undefined;
      depth = 1;
    }
    for (; depth < path.length; depth++) {
      const next = enterChild(bytes, pos, path[depth]!);
      if (next < 0) return undefined;
      pos = next;
    }
    return [pos, skipValue(bytes, pos)];
  } catch {
    return undefined;
  }
}

function isArrayHeader(t: number): boolean {
  return (t >= 0x90 && t <= 0x9f) || t === 0xdc || t === 0xdd;
}

/** enterChild for the top-level array, through and into the known item starts. */
function enterIndexedItem(b: Uint8Array, key: string, starts: number[]): number {
  const [count, first] = containerHeader(b, 0)!;
  const index = arrayIndex(key, count);
  if (index < 0) return -1;
  if (starts.length === 0) starts.push(first);
  while (starts.length <= index) starts.push(skipValue(b, starts[starts.length - 1]!));
  return starts[index]!;
}

/** [entry count, where the first entry starts, whether a map] of the container at `pos`, or undefined. */
function containerHeader(b: Uint8Array, pos: number): [count: number, first: number, isMap: boolean] | undefined {
  const t = b[pos]!;
  if (t >= 0x80 && t <= 0x8f) return [t & 0x0f, pos + 1, true];
  if (t >= 0x90 && t <= 0x9f) return [t & 0x0f, pos + 1, false];
  if (t === 0xde) return [u16(b, pos + 1), pos + 3, true];
  if (t === 0xdf) return [u32(b, pos + 1), pos + 5, true];
  if (t === 0xdc) return [u16(b, pos + 1), pos + 3, false];
  if (t === 0xdd) return [u32(b, pos + 1), pos + 5, false];
  return undefined;
}

/** The array index `key` names (canonical form, below `count`), or -1. */
function arrayIndex(key: string, count: number): number {
  const index = Number(key);
  return Number.isInteger(index) && index >= 0 && index < count && String(index) === key ? index : -1;
}

/** Position of the value under `key` in the container at `at`, or -1. */
function enterChild(b: Uint8Array, at: number, key: string): number {
  const header = containerHeader(b, at);
  if (!header) return -1;
  const [count, first, isMap] = header;
  let pos = first;
  if (!isMap) {
    const index = arrayIndex(key, count);
    if (index < 0) return -1;
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
