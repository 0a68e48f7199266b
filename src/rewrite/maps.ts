/**
 * NAME
 *   rewrite/maps - the lookup maps callout serves to Postfix: SRS forward/reverse, BATV sign/strip
 *
 * DESCRIPTION
 *   forward      sender_canonical_maps: the SRS address of a foreign sender; NOTFOUND (Postfix
 *                keeps the sender) for local domains, addresses already rewritten, no domain,
 *                and senders Srs.forward cannot rewrite into an address that reverses.
 *   reverse      recipient_canonical_maps: the address an SRS bounce recipient stands for;
 *                NOTFOUND for anything that is not a valid, unexpired SRS address of ours.
 *   batv-sign    sender_canonical_maps: the prvs-signed sender, for senders of the signing
 *                domains only (in U-labels or A-labels, however configured); NOTFOUND for
 *                other domains, already signed addresses and those prvsSign refuses (a
 *                quoted local part, a second '@'). The address is signed in
 *                lower case (ASCII): Postfix's smtpd folds a recipient's case before its
 *                unknown-user check asks batv-strip, so a bounce to a tag made over
 *                `Bob@Example.COM` would be refused as an unknown user.
 *   batv-strip   recipient_canonical_maps: the original address of a valid prvs recipient, so the
 *                bounce reaches the mailbox; NOTFOUND otherwise (the policy stage rejects the
 *                invalid ones before this runs).
 *
 *   Answers mirror postsrsd 2.x: outcomes that mean "leave the address alone" are NOTFOUND with
 *   the reason as text, never errors, because an error would make Postfix defer the mail. That
 *   includes an address over 512 octets ("Too big."), which postsrsd 2.x answers PERM: no SRS
 *   address of ours is that long, and none is written for such a sender.
 *   Time comes from the injected Clock on every lookup.
 */

import { asciiLower } from '../address/index.js';
import type { Clock } from '../core/clock.js';
import type { Batv } from './batv.js';
import { idnDomainMatcher } from './domains.js';
import type { LookupMap } from './lookup.js';
import type { Srs } from './srs.js';

export function srsMaps(srs: Srs, clock: Clock): { forward: LookupMap; reverse: LookupMap } {
  return {
    forward(key) {
      const result = srs.forward(key, clock.now());
      return result.ok ? { kind: 'found', value: result.address } : { kind: 'notfound', reason: result.message };
    },
    reverse(key) {
      const result = srs.reverse(key, clock.now());
      return result.ok ? { kind: 'found', value: result.address } : { kind: 'notfound', reason: result.message };
    },
  };
}

export interface BatvMapOptions {
  /** Sender domains to sign ('example.com' exactly, '.example.com' its subdomains). */
  domains: string[];
}

export function batvMaps(batv: Batv, options: BatvMapOptions, clock: Clock): { 'batv-sign': LookupMap; 'batv-strip': LookupMap } {
  // The batv stage matches both forms of an internationalised domain, so a sender left unsigned here had its bounces refused.
  const signs = idnDomainMatcher(options.domains);
  return {
    'batv-sign'(key) {
      const at = key.lastIndexOf('@');
      if (at < 0 || !signs(key.slice(at + 1))) return { kind: 'notfound', reason: 'Not a signing domain.' };
      const result = batv.sign(asciiLower(key), clock.now());
      return result.ok ? { kind: 'found', value: result.address } : { kind: 'notfound', reason: result.message };
    },
    'batv-strip'(key) {
      const result = batv.check(key, clock.now());
      return result.status === 'valid' ? { kind: 'found', value: result.original } : { kind: 'notfound', reason: `prvs ${result.status}` };
    },
  };
}
