/**
 * Redis Cluster's hash slot of a key (CRC16/XMODEM of its hash tag, modulo 16,384), as
 * the cluster specification defines it. The cluster transport looks up the slot's master
 * in node-redis's slot table: commits of keys on one master share its connection, so its
 * WAITs and its replica shortages (see ScriptRunner, ReplicaGuard).
 */
export const HASH_SLOTS = 16_384;

/** CRC16/XMODEM (polynomial 0x1021) of each byte value, for a table-driven CRC: it runs on every commit to a cluster. */
const CRC_TABLE = Uint16Array.from({ length: 256 }, (_, byte) => {
  let crc = byte << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  return crc;
});

/** CRC16/XMODEM (initial 0). */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc;
}

/**
 * @example
 * hashSlot('{user1000}.following') === hashSlot('{user1000}.followers'); // the tag decides
 * hashSlot('123456789') === 12739; // CRC16/XMODEM check value 0x31C3, modulo 16,384
 */
export function hashSlot(key: string): number {
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    // An empty tag ('{}') does not count: the whole key is hashed.
    if (close > open + 1) key = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(key, 'utf8')) % HASH_SLOTS;
}
