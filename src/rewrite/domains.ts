/**
 * NAME
 *   rewrite/domains - domain lists as postsrsd and Postfix write them, matched as C would
 *
 * DESCRIPTION
 *   An entry 'example.com' matches that domain exactly; '.example.com' matches every subdomain
 *   but not example.com itself (postsrsd's `domains` and `-X` lists). Matching is ASCII
 *   case-insensitive like C's tolower(): text that Unicode case mapping would fold onto ASCII
 *   (the Kelvin sign, dotless i) must not match here when it does not in the peers we mirror.
 *   unmatchableDomainEntry() says why an entry can never match (an empty one, "example.org."
 *   with the root's dot, "@example.org", "*.example.org", "BÜCHER.example" where an address
 *   is read into bücher.example), for those who take the lists: such
 *   an entry, accepted, left the domain it was meant for silently unprotected (BATV) or
 *   rewritten (SRS local domains).
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
  const forms = trimmed.endsWith('.') ? undefined : normaliseDomain(name);
  if (!forms?.ok) return 'expected a domain such as example.com, or .example.com for its subdomains (no @, no * and no trailing dot)';
  // A recipient is read into lower-case U-labels and A-labels, and an entry is compared with
  // them with only A-Z folded: "BÜCHER.example" (or one in decomposed or full-width
  // characters) names bücher.example, was taken, and protected none of its mail.
  const { unicode, ascii } = forms.value;
  const folded = asciiLower(name);
  if (folded !== unicode && folded !== ascii) {
    const dot = trimmed.startsWith('.') ? '.' : '';
    const written = unicode === ascii ? `${dot}${ascii}` : `${dot}${unicode} or ${dot}${ascii}`;
    return `expected ${written}, the domain as an address is read into (an entry is compared with only A-Z folded)`;
  }
  return undefined;
}

export function domainMatcher(entries: readonly string[]): DomainMatcher {
  const exact = new Set<string>();
  const suffixes: string[] = [];
  for (const entry of entries) {
    const domain = asciiLower(entry.trim());
    if (domain === '') continue;
    if (domain.startsWith('.')) suffixes.push(domain);
    else exact.add(domain);
  }
  return (domain) => {
    const lower = asciiLower(domain);
    return exact.has(lower) || suffixes.some((suffix) => lower.endsWith(suffix));
  };
}
