import { BlockList, isIP } from 'node:net';
import { KilnError } from '../errors/index.js';

/**
 * The peers whose X-Forwarded-* headers the balancer believes (`--trust-proxy`): a TLS
 * terminator or CDN in front of it. Entries are addresses, CIDRs (`10.0.0.0/8`,
 * `fd00::/8`) or `loopback` (127.0.0.0/8 and ::1). An IPv4 peer seen as an IPv4-mapped
 * IPv6 address (`::ffff:127.0.0.1`) is matched as IPv4.
 */
export class TrustedProxies {
  private readonly list = new BlockList();
  private readonly empty: boolean;

  constructor(spec: string | string[] | undefined) {
    const entries = (Array.isArray(spec) ? spec : spec === undefined ? [] : spec.split(',')).map((e) => String(e).trim()).filter(Boolean);
    this.empty = entries.length === 0;
    for (const entry of entries) this.add(entry);
  }

  has(address: string): boolean {
    if (this.empty || !address) return false;
    const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    if (v4) return this.list.check(v4, 'ipv4');
    const family = isIP(address);
    return family !== 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }

  private add(entry: string): void {
    if (entry === 'loopback') {
      this.list.addSubnet('127.0.0.0', 8, 'ipv4');
      this.list.addAddress('::1', 'ipv6');
      return;
    }
    const [address, bits, extra] = entry.split('/');
    const family = isIP(address ?? '');
    const max = family === 4 ? 32 : 128;
    const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
    if (family === 0 || extra !== undefined || !(prefix >= 0 && prefix <= max)) {
      throw new KilnError('KILN_ERR_INVALID_OPTION', `kiln balancer: trustProxy entry ${JSON.stringify(entry.slice(0, 60))} is not an address, a CIDR or "loopback"`, { details: { option: 'trustProxy' } });
    }
    this.list.addSubnet(address!, prefix, family === 4 ? 'ipv4' : 'ipv6');
  }
}
