/**
 * NAME
 *   rewrite/embed - whether an address can be written into the local part of another
 *
 * DESCRIPTION
 *   SRS, BATV and VERP all write an address (or its parts) into the local part of a new one,
 *   which must be a valid address that the inverse operation reads back. RFC 5321 §4.1.2 leaves
 *   no room there for a second '@', a quoted string (valid only as a whole local part) or a
 *   control character, and an empty local part or domain has nothing to give back.
 *   embeddableAddress(address) gives the local part and domain, or the problem, worded to
 *   complete "an address with ...".
 *
 * RFC
 *   RFC 5321 §4.1.2 (Local-part: a Dot-string, or a Quoted-string as a whole).
 */

import { CONTROL_CHARACTER } from '../core/text.js';

export type EmbeddableAddress = { ok: true; local: string; domain: string } | { ok: false; problem: string };


/**
 * The local part and domain of an address that can be written into the local part of another
 * (SRS, BATV, VERP) and read back, or what it has that cannot be: a control character; a '"'
 * (a quoted string is valid only as a whole local part, RFC 5321 §4.1.2, so it cannot sit
 * inside another); no '@', or a second one (the written address would hold two); an empty local
 * part or domain. `problem` completes "an address with ...".
 */
export function embeddableAddress(address: string): EmbeddableAddress {
  const control = CONTROL_CHARACTER.exec(address);
  if (control) return { ok: false, problem: `a control character (U+${control[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')})` };
  const at = address.indexOf('@');
  if (at < 0) return { ok: false, problem: "no '@' and domain" };
  if (address.includes('"')) return { ok: false, problem: 'a quoted local part (a quoted string cannot be embedded in another local part)' };
  if (address.includes('@', at + 1)) return { ok: false, problem: "more than one '@'" };
  if (at === 0) return { ok: false, problem: 'an empty local part' };
  if (at === address.length - 1) return { ok: false, problem: 'an empty domain' };
  return { ok: true, local: address.slice(0, at), domain: address.slice(at + 1) };
}
