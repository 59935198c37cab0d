import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type ConnectionOptions } from 'node:tls';
import { KilnError } from '../../errors/index.js';

/**
 * TLS settings of one kind of Redis link (the data nodes, or the sentinels). PEM values
 * are the text itself or a path to read it from; everything is read and parsed when the
 * engine is created, so a wrong path or a broken key fails there, naming the option,
 * instead of as a reconnect loop later.
 *
 * @example
 * new RedisEngine({ url: 'rediss://:pw@redis.internal:6380', tls: { ca: '/etc/kiln/redis-ca.pem' } });
 */
export interface RedisTlsOptions {
  /** Trusted CA(s) instead of the system's: a private CA. */
  ca?: string | Buffer | (string | Buffer)[];
  /** Client certificate and key, when Redis asks for one (`tls-auth-clients yes`). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Name the server's certificate must carry, when it differs from the host dialled. */
  servername?: string;
  /** Default true. False accepts any certificate: for a test bench, never in production. */
  rejectUnauthorized?: boolean;
}

const KEYS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const;

/** The validated node TLS options for `option` (`tls` or `sentinelTls`); `true` means the system's CAs. */
export function readTlsOption(option: string, value: unknown): ConnectionOptions | undefined {
  if (value === undefined || value === false) return undefined;
  if (value === true) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad(option, 'must be true or an object { ca, cert, key, servername, rejectUnauthorized }');
  const input = value as Record<string, unknown>;
  for (const key of Object.keys(input)) if (!(KEYS as readonly string[]).includes(key)) throw bad(`${option}.${key}`, `is not a TLS option (known: ${KEYS.join(', ')})`);
  const out: ConnectionOptions = {};
  if (input['ca'] !== undefined) out.ca = Array.isArray(input['ca']) ? input['ca'].map((v, i) => pem(`${option}.ca[${i}]`, v)) : pem(`${option}.ca`, input['ca']);
  if (input['cert'] !== undefined) out.cert = pem(`${option}.cert`, input['cert']);
  if (input['key'] !== undefined) out.key = pem(`${option}.key`, input['key']);
  if ((out.cert === undefined) !== (out.key === undefined)) throw bad(out.cert === undefined ? `${option}.cert` : `${option}.key`, 'is needed with the other of cert and key');
  if (input['servername'] !== undefined) {
    if (typeof input['servername'] !== 'string' || input['servername'] === '') throw bad(`${option}.servername`, 'must be a non-empty string');
    out.servername = input['servername'];
  }
  if (input['rejectUnauthorized'] !== undefined) {
    if (typeof input['rejectUnauthorized'] !== 'boolean') throw bad(`${option}.rejectUnauthorized`, 'must be true or false');
    out.rejectUnauthorized = input['rejectUnauthorized'];
  }
  for (const [i, ca] of (Array.isArray(out.ca) ? out.ca : out.ca === undefined ? [] : [out.ca]).entries()) checkCertificates(Array.isArray(out.ca) ? `${option}.ca[${i}]` : `${option}.ca`, ca);
  try {
    createSecureContext({ ...(out.ca !== undefined ? { ca: out.ca } : {}), ...(out.cert !== undefined ? { cert: out.cert, key: out.key! } : {}) });
  } catch (err) {
    // The message of OpenSSL names the problem (bad PEM, key not matching the cert), never the key's bytes.
    throw bad(option, `holds PEM that does not load: ${(err as Error).message}`);
  }
  return out;
}

/** OpenSSL skips a CA it cannot parse without a word; every certificate in the PEM must load. */
function checkCertificates(option: string, value: string | Buffer): void {
  const blocks = value.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw bad(option, 'holds no PEM certificate');
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (err) {
      throw bad(option, `holds a certificate that does not load: ${(err as Error).message}`);
    }
  }
}

function pem(option: string, value: unknown): string | Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (typeof value !== 'string' || value === '') throw bad(option, 'must be PEM text, a Buffer or a file path');
  if (value.includes('-----BEGIN')) return value;
  try {
    return readFileSync(value);
  } catch (err) {
    throw bad(option, `cannot be read from ${JSON.stringify(value)}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function bad(option: string, why: string): KilnError {
  return new KilnError('KILN_ERR_INVALID_OPTION', `RedisEngine: option "${option}" ${why}`, { details: { option } });
}
