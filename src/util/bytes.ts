/**
 * A copy of `bytes[start, end)` that shares no memory with them. `slice` would not do:
 * on a Buffer (what msgpackr and node:net hand out) it returns a view, and a view of bytes
 * that are later reused or overwritten changes with them.
 */
export function copyBytes(bytes: Uint8Array, start = 0, end = bytes.length): Uint8Array {
  return Uint8Array.prototype.slice.call(bytes, start, end);
}
