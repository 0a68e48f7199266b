/**
 * NAME
 *   rewrite/embed - whether an address can be written into the local part of another
 *
 * DESCRIPTION
 *   SRS, BATV and VERP all write an address (or its parts) into the local part of a new one,
 *   which must be a valid address that the inverse operation reads back. RFC 5321 §4.1.2 leaves
 *   no room there for a second '@', a quoted string (valid only as a whole local part) or a
 *   control character, and an empty local part or domain has nothing to give back. Angle
 *   brackets are refused as a path (`<user@example.com>` copied from the mail log), not an
 *   address; where the domain is written into the local part too (SRS, VERP), a domain with a
 *   special an unquoted local part may not hold (an address literal's '[', ']' and ':', white
 *   space, ';' ...) is refused, since the quoted form Postfix would write does not reverse.
 *   embeddableAddress(address) gives the local part and domain, or the problem, worded to
 *   complete "an address with ...".
 *
 * RFC
 *   RFC 5321 §4.1.2 (Local-part: a Dot-string, or a Quoted-string as a whole).
 */

import { CONTROL_CHARACTER } from '../core/text.js';

export type EmbeddableAddress = { ok: true; local: string; domain: string } | { ok: false; problem: string };


/** RFC 5321 §4.1.2 specials a domain may hold (an address literal) that an unquoted local part may not. */
const LOCAL_PART_SPECIAL = /[[\]:\s()<>;\\,]/;
/**
 * An address literal (`[192.0.2.1]`, `[IPv6:...]`): the whole domain in brackets. A domain whose
 * first special is a ':' or ']' (`example.org:25`) is none, and was called one.
 */
const ADDRESS_LITERAL = /^\[[^\]]*\]$/;

/**
 * The local part and domain of an address that can be written into the local part of another
 * (SRS, BATV, VERP) and read back, or what it has that cannot be: a control character; no '@';
 * a '<' or '>' (a path, not an address); a '"' (a quoted string is valid only as a whole local
 * part, RFC 5321 §4.1.2, so it cannot sit inside another); a second '@' (the written address
 * would hold two); an empty local part or domain. With `domainInLocalPart` (SRS, VERP write the
 * domain there too), a domain with a character an unquoted local part may not hold: an address
 * literal's '[', ']' or ':', or another special (white space, ';'); only a domain in brackets is
 * called an address literal. `problem` completes "an address with ...".
 */
export function embeddableAddress(address: string, options: { domainInLocalPart?: boolean } = {}): EmbeddableAddress {
  const control = CONTROL_CHARACTER.exec(address);
  if (control) return { ok: false, problem: `a control character (${codePoint(control[0])})` };
  const at = address.indexOf('@');
  if (at < 0) return { ok: false, problem: "no '@' and domain" };
  // No address holds one unquoted: `<user@example.com>` is a path as the mail log writes it, and
  // was signed into prvs=...=<user@example.com>.
  if (/[<>]/.test(address)) return { ok: false, problem: 'angle brackets (a path, as the mail log writes it: give the address alone)' };
  if (address.includes('"')) return { ok: false, problem: 'a quoted local part (a quoted string cannot be embedded in another local part)' };
  if (address.includes('@', at + 1)) return { ok: false, problem: "more than one '@'" };
  if (at === 0) return { ok: false, problem: 'an empty local part' };
  if (at === address.length - 1) return { ok: false, problem: 'an empty domain' };
  const domain = address.slice(at + 1);
  const inDomain = options.domainInLocalPart ? LOCAL_PART_SPECIAL.exec(domain) : null;
  if (inDomain) {
    const why = ADDRESS_LITERAL.test(domain) ? 'an address literal: ' : '';
    return { ok: false, problem: `${special(inDomain[0])} in its domain (${why}the local part written with it would need quotes, and Postfix's quoted form does not reverse)` };
  }
  return { ok: true, local: address.slice(0, at), domain };
}

/** A special as a message shows it: white space by name or code point, which quotes alone would hide. */
function special(c: string): string {
  if (c === ' ') return 'a space';
  return /\s/.test(c) ? `white space (${codePoint(c)})` : `'${c}'`;
}

/** U+XXXX of a character of the Basic Multilingual Plane, as the Unicode standard writes it. */
function codePoint(c: string): string {
  return `U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}
