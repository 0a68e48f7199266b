/**
 * NAME
 *   dns/reverse - the reverse-lookup domain name of an IP address
 *
 * DESCRIPTION
 *   reverseName("192.0.2.1") is "1.2.0.192.in-addr.arpa" (RFC 1035 §3.5); an IPv6 address
 *   becomes its 32 nibbles, lowest first, under ip6.arpa (RFC 3596 §2.5). IPv6 may be written in
 *   any RFC 4291 §2.2 form, including "::" compression, an embedded dotted quad and a zone id
 *   (which is dropped). The resolver and the test DNS server both build names here, so the two
 *   cannot disagree.
 *
 * ERRORS
 *   A string that is not an IP address throws CalloutError DNS_PERMANENT: no reverse name
 *   exists for it, and callers only ever pass addresses they have already parsed.
 */

import { isIPv4, isIPv6 } from 'node:net';
import { CalloutError } from '../core/errors.js';

export function reverseName(ip: string): string {
  if (isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const withoutZone = ip.split('%')[0] ?? '';
  if (isIPv6(withoutZone)) {
    const nibbles = ipv6Groups(withoutZone)
      .map((group) => group.toString(16).padStart(4, '0'))
      .join('');
    return `${[...nibbles].reverse().join('.')}.ip6.arpa`;
  }
  throw new CalloutError('DNS_PERMANENT', `not an IP address, no reverse name: ${JSON.stringify(ip)}`);
}

/** The eight 16-bit groups of an address that isIPv6 has accepted. */
function ipv6Groups(ip: string): number[] {
  const [head = '', tail] = ip.split('::');
  const parse = (part: string): number[] =>
    part === '' ? [] : part.split(':').flatMap((field) => (field.includes('.') ? dottedQuadGroups(field) : [parseInt(field, 16)]));
  const front = parse(head);
  const back = tail === undefined ? [] : parse(tail);
  const zeros = new Array<number>(8 - front.length - back.length).fill(0);
  return [...front, ...zeros, ...back];
}

function dottedQuadGroups(quad: string): number[] {
  const [a = 0, b = 0, c = 0, d = 0] = quad.split('.').map(Number);
  return [(a << 8) | b, (c << 8) | d];
}
