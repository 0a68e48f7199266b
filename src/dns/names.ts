/**
 * NAME
 *   dns/names - the one canonical form of a domain name for comparison
 *
 * DESCRIPTION
 *   DNS names compare case-insensitively (RFC 4343) and a trailing dot only marks a name as
 *   fully qualified, so `Mail.Example.ORG.` and `mail.example.org` are the same host.
 */

export function canonicalName(name: string): string {
  return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
}
