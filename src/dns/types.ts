/**
 * NAME
 *   dns/types - the resolver interface every check and the callout engine use
 *
 * DESCRIPTION
 *   A lookup answers with a value, never an exception: records, NXDOMAIN, no data (the name
 *   exists without records of that type), or a temporary failure (SERVFAIL, timeout, refused,
 *   network down). RFC 5321 §5.1 and RFC 7208 §5 both depend on telling the permanent answers
 *   apart from the temporary one: a temporary failure must never become "does not exist".
 */

export interface MxRecord {
  exchange: string;
  priority: number;
}

export type DnsRecordType = 'A' | 'AAAA' | 'MX' | 'TXT' | 'PTR';

export type DnsAnswer<T> =
  | { kind: 'records'; records: T[]; ttl: number }
  | { kind: 'nxdomain'; ttl: number }
  | { kind: 'nodata'; ttl: number }
  | { kind: 'tempfail'; reason: string };

export interface Resolver {
  a(name: string): Promise<DnsAnswer<string>>;
  aaaa(name: string): Promise<DnsAnswer<string>>;
  mx(name: string): Promise<DnsAnswer<MxRecord>>;
  /** Each TXT record as its character-strings joined (RFC 7208 §3.3). */
  txt(name: string): Promise<DnsAnswer<string>>;
  /** PTR names of an IPv4 or IPv6 address (the reverse name is built by the resolver). */
  ptr(address: string): Promise<DnsAnswer<string>>;
}

/** A mail exchanger with its resolved addresses, as the callout will try it. */
export interface MxHost {
  name: string;
  preference: number;
  /** IPv6 and IPv4 addresses, in the order they should be tried. */
  addresses: string[];
  /** Why an exchanger has no addresses, when it has none (for the transcript). */
  addressProblem?: string;
}

/** The outcome of MX resolution for one domain (RFC 5321 §5.1, RFC 7505). */
export type MxResolution =
  | { kind: 'hosts'; hosts: MxHost[]; implicit: boolean }
  | { kind: 'null-mx' }
  | { kind: 'nxdomain' }
  | { kind: 'no-mail-host'; reason: string }
  | { kind: 'tempfail'; reason: string };
