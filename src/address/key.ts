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
 *   keyPart() bounds a key made of an address or a domain (a greylist triplet, a rate-limit
 *   counter): a part longer than 256 octets, the most RFC 5321 §4.5.3.1.3 allows a path, is kept
 *   as its first 64 octets and the SHA-256 of the whole, HEAD…[sha256:HEX]. A client may send
 *   any address the policy line holds (4 kB), and every key made of it would otherwise be of
 *   that size for as long as it lives. Every valid address keeps its key as it is.
 *
 *   asciiLower() is C's tolower() over a string, for the peers (postsrsd, Postfix) whose
 *   case-insensitive matches it mirrors.
 */

import { createHash } from 'node:crypto';
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

/** The longest key part kept as it is: a path of RFC 5321 §4.5.3.1.3, so any valid address. */
const MAX_KEY_PART_OCTETS = 256;
/** How much of an over-long part its key shows, so that `callout greylist list` still says what it was. */
const DIGEST_HEAD_OCTETS = 64;
const DIGEST_FORM = /…\[sha256:[0-9a-f]{64}\]$/;

/**
 * A sender, recipient or domain as keys hold it (see DESCRIPTION): as it is up to
 * MAX_KEY_PART_OCTETS, else HEAD…[sha256:HEX]. The digest is of the whole part, so one address
 * always has one key and two that share their first kilobytes keep two; the form is shorter than
 * the bound, so keyPart(keyPart(x)) is keyPart(x) and `callout greylist allow`/`drop` take it as
 * `list` prints it.
 */
export function keyPart(part: string): string {
  if (part.length <= MAX_KEY_PART_OCTETS / 3 || Buffer.byteLength(part) <= MAX_KEY_PART_OCTETS) return part;
  let head = '';
  let octets = 0;
  for (const character of part) {
    octets += Buffer.byteLength(character);
    if (octets > DIGEST_HEAD_OCTETS) break;
    head += character;
  }
  // UTF-16, not UTF-8: two parts with different lone surrogates would encode alike.
  return `${head}…[sha256:${createHash('sha256').update(part, 'utf16le').digest('hex')}]`;
}

/** Whether a part is keyPart's digest of an over-long one (as `callout greylist list` prints it). */
export const isDigestedKeyPart = (part: string): boolean => part.endsWith(']') && DIGEST_FORM.test(part);
