/**
 * NAME
 *   address/key - one address, one key: how callout compares and stores mailboxes
 *
 * DESCRIPTION
 *   mailboxKey() is the form under which the greylist, the rate limits and the suppression list
 *   keep an address. Only A-Z are folded in the local part: local parts are case-sensitive
 *   (RFC 5321 §2.4) and everyone folds ASCII, but Unicode case mapping changes what a UTF-8
 *   local part says (RFC 6531; the Kelvin sign would become an ASCII 'k', one address merged
 *   with another). The domain is compared after IDNA mapping (UTS #46 nontransitional, as the
 *   callout's DNS query names: faß.example is xn--fa-hia.example, not fass.example), so a domain
 *   written with U-labels and with A-labels is one domain; a domain that is no valid IDN is kept
 *   as written, A-Z folded.
 *
 *   The callout cache is the exception, on purpose: it keys the address as parsed (local part as
 *   written), because a callout's answer is the exchanger's about that exact string.
 *
 *   asciiLower() is C's tolower() over a string, for the peers (postsrsd, Postfix) whose
 *   case-insensitive matches it mirrors.
 */

import { normaliseDomain } from './mailbox.js';

/** C's tolower() over a string: only A-Z change. */
export function asciiLower(text: string): string {
  return /[\u0080-\uffff]/.test(text) ? text.replace(/[A-Z]+/g, (run) => run.toLowerCase()) : text.toLowerCase();
}

/** The key of an address (a sender, a recipient, a bounced address); text without '@' is folded whole. */
export function mailboxKey(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return asciiLower(address);
  const domain = address.slice(at + 1);
  const idna = /[\u0080-\uffff]/.test(domain) ? normaliseDomain(domain) : undefined;
  return `${asciiLower(address.slice(0, at))}@${idna?.ok ? idna.value.ascii : asciiLower(domain)}`;
}
