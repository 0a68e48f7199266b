/**
 * NAME
 *   dns/names - the one canonical form of a domain name for comparison
 *
 * DESCRIPTION
 *   DNS names compare case-insensitively (RFC 4343) and a trailing dot only marks a name as
 *   fully qualified, so `Mail.Example.ORG.` and `mail.example.org` are the same host.
 *
 *   queryName() says whether a name can be asked for at all, in the form node:dns puts on the
 *   wire: U-labels become A-labels (UTS #46, RFC 5891 §4.4), and the whole must fit in 255
 *   octets on the wire, 253 characters written without the final dot (RFC 1035 §2.3.4).
 */

import { domainToASCII } from 'node:url';

/** RFC 1035 §2.3.4: 255 octets on the wire are 253 characters written without the final dot. */
export const MAX_NAME_LENGTH = 253;

/**
 * The longest text queryName converts. Punycode encodes a label in time its length times its
 * distinct code points (a 16000-character label of ideographs took 600 ms), so a longer text is
 * too long before it is converted. Four code units per octet on the wire leave room for what
 * UTS #46 maps shorter (a mathematical letter, two code units, becomes one ASCII letter); only a
 * name padded with code points that mapping drops could be refused that would fit.
 */
export const MAX_WRITTEN_LENGTH = 4 * MAX_NAME_LENGTH;

export function canonicalName(name: string): string {
  return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
}

/**
 * The name in A-labels, or why no query can be sent for it: 'too-long' past MAX_NAME_LENGTH (no
 * such name can exist), 'not-idna' when a label cannot be converted (an A-label that is no valid
 * Punycode, such as "xn--zz", or a joiner in a U-label). node:dns converts every name itself and,
 * when that fails, asks for the root instead, so the caller has to know before asking. 'nul' for
 * a NUL character: c-ares takes the name as a C string and would ask for what precedes it, so
 * "evil.example\0.good.example" would be answered with the records of evil.example. A text
 * longer than MAX_WRITTEN_LENGTH is 'too-long' without being converted.
 */
export function queryName(name: string): { ok: true; name: string } | { ok: false; problem: 'too-long' | 'not-idna' | 'nul' } {
  if (name.includes('\0')) return { ok: false, problem: 'nul' };
  if (name.length > MAX_WRITTEN_LENGTH) return { ok: false, problem: 'too-long' };
  const labels = canonicalName(name).split('.');
  // Only labels that need IDNA go to domainToASCII: it runs the URL host parser, which would
  // read an all-numeric name as an IPv4 address.
  const ascii = labels.map((label) => (/[\u0080-\uffff]|^xn--/.test(label) ? domainToASCII(label) : label));
  if (ascii.some((label, i) => label === '' && labels[i] !== '')) return { ok: false, problem: 'not-idna' };
  const converted = ascii.join('.');
  if (converted.length > MAX_NAME_LENGTH) return { ok: false, problem: 'too-long' };
  return { ok: true, name: converted };
}
