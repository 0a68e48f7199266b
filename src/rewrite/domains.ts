/**
 * NAME
 *   rewrite/domains - domain lists as postsrsd and Postfix write them, matched as C would
 *
 * DESCRIPTION
 *   An entry 'example.com' matches that domain exactly; '.example.com' matches every subdomain
 *   but not example.com itself (postsrsd's `domains` and `-X` lists). Matching is ASCII
 *   case-insensitive like C's tolower(): text that Unicode case mapping would fold onto ASCII
 *   (the Kelvin sign, dotless i) must not match here when it does not in the peers we mirror.
 */

import { asciiLower } from '../address/index.js';

export type DomainMatcher = (domain: string) => boolean;

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
