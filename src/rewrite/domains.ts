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
 *   with the root's dot, "@example.org", "*.example.org"), for those who take the lists: such
 *   an entry, accepted, left the domain it was meant for silently unprotected (BATV) or
 *   rewritten (SRS local domains).
 */

import { asciiLower, normaliseDomain } from '../address/index.js';
import { abbreviate } from '../core/errors.js';

export type DomainMatcher = (domain: string) => boolean;

/** Why domainMatcher would never match `entry`, as "got ..." for a message naming the list; undefined when it can. */
export function unmatchableDomainEntry(entry: string): string | undefined {
  const trimmed = entry.trim();
  if (trimmed === '' || trimmed === '.') return 'got an empty domain';
  const shown = JSON.stringify(abbreviate(trimmed, 60));
  // Domains are matched as addresses carry them, without the root's dot.
  if (trimmed.endsWith('.')) return `got ${shown}, which matches no domain: write it without the trailing dot`;
  const name = trimmed.startsWith('.') ? trimmed.slice(1) : trimmed;
  if (!normaliseDomain(name).ok) return `got ${shown}, which matches no domain: expected a domain such as example.com, or .example.com for its subdomains (no @, no *)`;
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
