/**
 * NAME
 *   rewrite/domains - domain lists as postsrsd and Postfix write them, matched as C would
 *
 * DESCRIPTION
 *   An entry 'example.com' matches that domain exactly; '.example.com' matches every subdomain
 *   but not example.com itself (postsrsd's `domains` and `-X` lists). Matching is ASCII
 *   case-insensitive like C's tolower(): text that Unicode case mapping would fold onto ASCII
 *   (the Kelvin sign, dotless i) must not match here when it does not in the peers we mirror.
 *   An entry is read as the domain it names: one written otherwise than an address is read
 *   into (capitals outside A-Z as in "BÜCHER.example", decomposed or full-width letters) as
 *   UTS #46 reads it, bücher.example, since domain names are case-insensitive (RFC 4343).
 *   unmatchableDomainEntry() says why an entry can never match (an empty one, "example.org."
 *   with the root's dot, "@example.org", "*.example.org"), for those who take the lists: such
 *   an entry, accepted, left the domain it was meant for silently unprotected (BATV) or
 *   rewritten (SRS local domains). idnDomainMatcher() also matches a domain's A-labels and
 *   U-labels, for the lists a sender's or recipient's domain is looked up in.
 */

import { asciiLower, normaliseDomain } from '../address/index.js';

export type DomainMatcher = (domain: string) => boolean;

/**
 * Why domainMatcher would never match `entry`, said after the `got "ENTRY", ` of a message that
 * names the list (as the configuration schema and the command line write them); undefined when
 * it can match.
 */
export function unmatchableDomainEntry(entry: string): string | undefined {
  const trimmed = entry.trim();
  if (trimmed === '' || trimmed === '.') return 'expected a domain, not an empty entry';
  const name = trimmed.startsWith('.') ? trimmed.slice(1) : trimmed;
  // Domains are matched as addresses carry them, without the root's dot.
  if (trimmed.endsWith('.') || !normaliseDomain(name).ok) return 'expected a domain such as example.com, or .example.com for its subdomains (no @, no * and no trailing dot)';
  return undefined;
}

/** A host name of ASCII letters, digits and hyphens only, without a trailing dot. */
const PLAIN_ASCII_NAME = /^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*$/;
const A_LABEL = /(?:^|\.)xn--/i;

/**
 * The domain an entry names, as domainMatcher compares it: trimmed, A-Z folded, its leading '.'
 * kept. One in other characters ("BÜCHER.example", decomposed or full-width letters) is read as
 * UTS #46 reads it, bücher.example, the form a recipient is read into: compared with only A-Z
 * folded it matched no mail, and refused it stopped services that had started with it. One that
 * names no domain is kept as written, and matches nothing.
 */
function entryDomain(entry: string): string {
  const folded = asciiLower(entry.trim());
  const dot = folded.startsWith('.') ? '.' : '';
  const name = folded.slice(dot.length);
  // An ASCII name is its own form (an A-label entry matches the A-labels its callers also ask for).
  if (name === '' || name.endsWith('.') || PLAIN_ASCII_NAME.test(name)) return folded;
  const forms = normaliseDomain(name);
  return forms.ok ? `${dot}${forms.value.unicode}` : folded;
}

/**
 * domainMatcher's entries matched against the domain as written and against its A-labels and
 * U-labels: an internationalised domain comes either way (RFC 5890) and is configured either way,
 * so `bücher.example` covers `xn--bcher-kva.example`. The other forms are the domain as UTS #46
 * reads it, which also maps what Unicode folds (`BÜCHER.example`, a Kelvin sign) onto the domain
 * DNS would look up.
 */
export function idnDomainMatcher(entries: readonly string[]): DomainMatcher {
  const matches = domainMatcher(entries);
  return (domain) => {
    if (matches(domain)) return true;
    // Its forms are itself, lower-cased, which matches() has compared: every foreign sender of
    // an SRS forward lookup comes this way, and need not pay for UTS #46.
    if (PLAIN_ASCII_NAME.test(domain) && !A_LABEL.test(domain)) return false;
    const forms = normaliseDomain(domain);
    return forms.ok && (matches(forms.value.ascii) || matches(forms.value.unicode));
  };
}

export function domainMatcher(entries: readonly string[]): DomainMatcher {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  for (const entry of entries) {
    const domain = entryDomain(entry);
    if (domain === '') continue;
    if (domain.startsWith('.')) suffixes.push(domain);
    else exact.add(domain);
  }
  return (domain) => {
    const lower = asciiLower(domain);
    return exact.has(lower) || suffixes.some((suffix) => lower.endsWith(suffix));
  };
}
