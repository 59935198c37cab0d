import { randomBytes } from 'node:crypto';

/**
 * HalfSipHash-1-3 (32-bit words, 64-bit key, 32-bit result): a keyed hash for tables
 * whose keys a client chooses. With an unkeyed hash (FNV) anyone can make thousands of
 * ids with one hash offline and turn every lookup into a walk of all of them; with a
 * random key per table they cannot know which ids collide. Plain JavaScript integer
 * arithmetic, about 60 ns for a 32-byte id.
 */
export class KeyedHash {
  private readonly k0: number;
  private readonly k1: number;

  /** `key`: 8 bytes; random when left out. */
  constructor(key: Uint8Array = randomBytes(8)) {
    if (key.length !== 8) throw new RangeError('KeyedHash: the key is 8 bytes');
    this.k0 = (key[0]! | (key[1]! << 8) | (key[2]! << 16) | (key[3]! << 24)) >>> 0;
    this.k1 = (key[4]! | (key[5]! << 8) | (key[6]! << 16) | (key[7]! << 24)) >>> 0;
  }

  /** The hash of `bytes[start, end)`, an unsigned 32-bit integer. */
  hash(bytes: Uint8Array, start: number, end: number): number {
    let v0 = this.k0;
    let v1 = this.k1;
    let v2 = (0x6c796765 ^ this.k0) | 0;
    let v3 = (0x74656462 ^ this.k1) | 0;
    const length = end - start;
    const words = length >>> 2;
    const tail = start + 4 * words;
    // One SipRound per step, written once: a step per 4-byte word, one for the last word
    // (the tail bytes and the length), then three to finish. Inline, as a function per
    // round costs more than the round.
    for (let step = 0; step < words + 4; step++) {
      let m = 0;
      if (step < words) {
        const i = start + 4 * step;
        m = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
      } else if (step === words) {
        m = (length & 0xff) << 24;
        const rest = length & 3;
        if (rest >= 3) m |= bytes[tail + 2]! << 16;
        if (rest >= 2) m |= bytes[tail + 1]! << 8;
        if (rest >= 1) m |= bytes[tail]!;
      }
      v3 ^= m;
      v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
      v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
      v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
      v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
      v0 ^= m;
      if (step === words) v2 ^= 0xff;
    }
    return (v1 ^ v3) >>> 0;
  }
}
