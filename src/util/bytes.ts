/**
 * A copy of `bytes[start, end)` that shares no memory with them. `slice` would not do:
 * on a Buffer (what msgpackr and node:net hand out) it returns a view, and a view of bytes
 * that are later reused or overwritten changes with them.
 */
export function copyBytes(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  return Uint8Array.prototype.slice.call(bytes, start, end);
}

/**
 * Whether `a[aStart, aStart + length)` and `b[bStart, bStart + length)` hold the same
 * bytes, compared from the last: for ids of tens of bytes a loop is several times faster
 * than Buffer.compare with offsets (a native call), and ids that share a prefix (a
 * client's commit ids) differ at their end.
 */
export function sameBytes(a: Uint8Array, aStart: number, b: Uint8Array, bStart: number, length: number): boolean {
  for (let i = length - 1; i >= 0; i--) if (a[aStart + i] !== b[bStart + i]) return false;
  return true;
}

/** The bytes of `chunks` together. */
export function totalLength(chunks: readonly Uint8Array[]): number {
  let n = 0;
  for (const chunk of chunks) n += chunk.length;
  return n;
}

/** A byte count for people: B, KiB, MiB or GiB, one or two decimals (`kiln status`, the log's refusals). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
