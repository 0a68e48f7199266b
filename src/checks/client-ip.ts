/**
 * NAME
 *   checks/client-ip - the SMTP client's address as the sender checks compare it
 *
 * DESCRIPTION
 *   clientAddress() parses the address and reduces an IPv4-mapped IPv6 address
 *   (::ffff:a.b.c.d) to the IPv4 address it stands for, because a dual-stack listener
 *   reports IPv4 clients that way and RFC 7208 §5 and RFC 8601 §3 both treat them as IPv4:
 *   they get A lookups and the in-addr.arpa reverse name. `text` is canonical (RFC 5952 for
 *   IPv6), so two addresses are equal exactly when their texts are.
 */

import { formatIp, parseCidr, parseIp, type Cidr } from '../core/ip.js';

export interface ClientAddress {
  text: string;
  family: 4 | 6;
  /** The address as a host network (/32 or /128). */
  host: Cidr;
}

/** Undefined when the text is not a bare IPv4 or IPv6 address. */
export function clientAddress(ip: string): ClientAddress | undefined {
  if (ip.includes('/') || ip.startsWith('[')) return undefined;
  const host = parseCidr(ip);
  if (!host.ok) return undefined;
  return { text: formatIp({ family: host.value.family, bits: host.value.network }), family: host.value.family, host: host.value };
}

/** Whether the network holds the client; a network of the other family never does. */
export function networkHolds(network: Cidr, client: ClientAddress): boolean {
  if (network.family !== client.family) return false;
  const shift = BigInt((client.family === 4 ? 32 : 128) - network.prefixLength);
  return client.host.network >> shift === network.network >> shift;
}

/** Whether address/prefixLength (an address from DNS) holds the client; false for unparsable text. */
export function addressHolds(address: string, prefixLength: number, client: ClientAddress): boolean {
  const parsed = parseIp(address);
  if (parsed === undefined || parsed.family !== client.family) return false;
  const shift = BigInt((client.family === 4 ? 32 : 128) - prefixLength);
  return client.host.network >> shift === parsed.bits >> shift;
}
