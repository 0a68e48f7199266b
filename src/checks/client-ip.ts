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
 *
 *   The few thousand clients that send most of a site's mail recur request after request, and
 *   several stages ask about each one (greylisting, the tarpit, rate limits, SPF, iprev): an
 *   address is parsed once while it recurs (a bounded memo). Parsing it into its bits twice per
 *   greylisted request was a twentieth of the decision. The same object goes to every caller.
 *   unusableClientAddress() is the one rule, shared by the spf and iprev stages, for an
 *   address no check can use (Postfix's "unknown"): such a request is not checked.
 *
 *   countingKey() is what a client is counted under (the tarpit, rate limits): its address, or
 *   its network when the stage is given a shorter prefix. An IPv6 host often holds a whole /64
 *   (RFC 7421) and can use a new address for every connection, while a large provider's
 *   servers may share one /64: which matters more is the administrator's choice.
 */

import { formatIp, networkOf, parseCidr, parseIp, type Cidr } from '../core/ip.js';
import { BoundedMemo } from '../core/memo.js';

export interface ClientAddress {
  readonly text: string;
  readonly family: 4 | 6;
  /** The address as a host network (/32 or /128). */
  readonly host: Readonly<Cidr>;
}

const CLIENT_MEMORY_LIMIT = 4_096;
const parsedClients = new BoundedMemo(parseClientAddress, CLIENT_MEMORY_LIMIT);

/** Undefined when the text is not a bare IPv4 or IPv6 address. Never change what it gives. */
export function clientAddress(ip: string): ClientAddress | undefined {
  return parsedClients.get(ip);
}

/**
 * Why a request's client_address cannot be checked, or undefined when it can: Postfix sends
 * "unknown" when it has no address (the client went away before getpeername, XCLIENT
 * ADDR=[UNAVAILABLE]), and a check that ran on it anyway would report a result about nothing.
 */
export function unusableClientAddress(ip: string): string | undefined {
  if (clientAddress(ip) !== undefined) return undefined;
  return ip === '' ? 'no client address in the request' : `no usable client address in the request (${JSON.stringify(ip)})`;
}

function parseClientAddress(ip: string): ClientAddress | undefined {
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

/** The client's address, or its network when the prefix of its family is shorter than the address. */
export function countingKey(client: ClientAddress, ipv4Prefix: number, ipv6Prefix: number): string {
  const prefix = client.family === 4 ? ipv4Prefix : ipv6Prefix;
  if (prefix === (client.family === 4 ? 32 : 128)) return client.text;
  return networkOf(client.text, ipv4Prefix, ipv6Prefix) ?? client.text;
}
