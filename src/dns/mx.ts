/**
 * NAME
 *   dns/mx - the mail exchangers of a domain, with their addresses, in the order to try them
 *
 * DESCRIPTION
 *   resolveMailHosts() follows RFC 5321 §5.1: MX records sorted by preference, exchangers of
 *   equal preference shuffled; no MX records (NODATA) means the domain itself is the one
 *   exchanger, preference 0 (the implicit MX). A single MX whose exchange is the root ("." or,
 *   as node:dns reports it, "") is a null MX (RFC 7505 §3): the domain accepts no mail. A null
 *   MX mixed with real ones is a configuration error the RFC leaves open; it is skipped and the
 *   real ones are used. Each exchanger's AAAA and A records are asked in parallel and its
 *   addresses interleaved IPv6-first (RFC 8305 §4), so one broken address family does not use up
 *   every attempt.
 *
 *   Exchangers whose addresses cannot be found stay in `hosts` with no addresses and an
 *   addressProblem, for the transcript; callers skip them. The result is 'hosts' when at least
 *   one exchanger has an address. Otherwise a temporary failure on any exchanger makes the
 *   whole result 'tempfail' (it might have been the one that works), and only when every
 *   exchanger is known to have no address is it 'no-mail-host', whose reason is a whole sentence
 *   naming the domain, as the client of a refused sender is told it. A temporary failure never
 *   becomes a permanent outcome. With ipv6 off, an exchanger (or implicit MX) that has AAAA
 *   records only is kept without addresses and the result is 'hosts': the domain takes mail,
 *   over a family we do not use, which is not the same as taking none.
 *
 * LIMITS
 *   maxHosts exchangers (default 5, after sorting, so the best are kept) and
 *   maxAddressesPerHost addresses each (default 4). An exchange that is an IP address
 *   ("192.0.2.1") is not a host name (RFC 5321 §5.1), but Postfix delivers to it, so it is that
 *   one address, not looked up; a bracketed one or one with a zone id gets no addresses.
 *   Exchangers are deduplicated by name, keeping the lowest preference.
 *
 * ERRORS
 *   ConfigError for limits that are not positive integers. DNS outcomes are values.
 */

import { isIP } from 'node:net';
import { ConfigError } from '../core/errors.js';
import { formatIp, parseIp } from '../core/ip.js';
import type { DnsAnswer, MxHost, MxRecord, MxResolution, Resolver } from './types.js';
import { canonicalName } from './names.js';

export interface MailHostOptions {
  /** Cap on exchangers, default 5. */
  maxHosts?: number;
  /** Default 4. */
  maxAddressesPerHost?: number;
  /** Whether to ask AAAA records too, default true. */
  ipv6?: boolean;
  /** Source of the equal-preference shuffle, in [0, 1); default Math.random. */
  random?: () => number;
}

const DEFAULT_MAX_ADDRESSES_PER_HOST = 4;

interface Limits {
  maxAddressesPerHost: number;
  ipv6: boolean;
}

type AddressOutcome =
  | { kind: 'found'; addresses: string[] }
  | { kind: 'none'; problem: string }
  | { kind: 'tempfail'; problem: string }
  /** Addresses only in a family we do not use (IPv6 with ipv6 off): the host exists and takes mail. */
  | { kind: 'unusable'; problem: string };

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) {
    throw new ConfigError(`mx ${name}: expected an integer >= 1, got ${String(value)}`);
  }
  return value;
}

function isNullExchange(record: MxRecord): boolean {
  return record.exchange === '' || record.exchange === '.';
}

function isAddressLiteral(exchange: string): boolean {
  return isIP(exchange.replace(/^\[(.*)\]$/, '$1')) !== 0;
}

export async function resolveMailHosts(resolver: Resolver, domain: string, options: MailHostOptions = {}): Promise<MxResolution> {
  const maxHosts = positiveInteger('maxHosts', options.maxHosts ?? 5);
  const limits: Limits = {
    maxAddressesPerHost: positiveInteger('maxAddressesPerHost', options.maxAddressesPerHost ?? DEFAULT_MAX_ADDRESSES_PER_HOST),
    ipv6: options.ipv6 ?? true,
  };
  const random = options.random ?? Math.random;

  const mx = await resolver.mx(domain);
  switch (mx.kind) {
    case 'tempfail':
      return { kind: 'tempfail', reason: mx.reason };
    case 'nxdomain':
      return { kind: 'nxdomain' };
    case 'nodata':
      return implicitMx(resolver, domain, limits);
    case 'records':
      break;
  }

  const real = mx.records.filter((record) => !isNullExchange(record));
  if (real.length === 0) return { kind: 'null-mx' };

  const exchangers = orderByPreference(dedupeByName(real), random).slice(0, maxHosts);
  const resolved = await Promise.all(
    exchangers.map(async (record) => ({ record, outcome: await exchangerAddresses(resolver, record.exchange, limits) })),
  );
  const hosts: MxHost[] = resolved.map(({ record, outcome }) =>
    outcome.kind === 'found'
      ? { name: record.exchange, preference: record.priority, addresses: outcome.addresses }
      : { name: record.exchange, preference: record.priority, addresses: [], addressProblem: outcome.problem },
  );

  // An exchanger we cannot use is not a domain without mail: the caller answers for it (unknown).
  if (hosts.some((host) => host.addresses.length > 0) || resolved.some(({ outcome }) => outcome.kind === 'unusable')) {
    return { kind: 'hosts', hosts, implicit: false };
  }
  const problems = hosts.map((host) => host.addressProblem).join('; ');
  if (resolved.some(({ outcome }) => outcome.kind === 'tempfail')) {
    return { kind: 'tempfail', reason: `no mail exchanger of ${domain} could be resolved: ${problems}` };
  }
  return { kind: 'no-mail-host', reason: `no mail exchanger of ${domain} has an address, so it accepts no mail: ${problems}` };
}

/**
 * Configured hosts instead of a domain's MX (recipient call-forward to an internal host): IP
 * addresses as given, names resolved as exchangers are, in the order given.
 */
export async function resolveConfiguredHosts(resolver: Resolver, names: string[], options: Pick<MailHostOptions, 'maxAddressesPerHost' | 'ipv6'> = {}): Promise<MxResolution> {
  const limits: Limits = {
    maxAddressesPerHost: positiveInteger('maxAddressesPerHost', options.maxAddressesPerHost ?? DEFAULT_MAX_ADDRESSES_PER_HOST),
    ipv6: options.ipv6 ?? true,
  };
  const outcomes = await Promise.all(names.map((name) => (isIP(name) ? Promise.resolve<AddressOutcome>({ kind: 'found', addresses: [name] }) : addressesOf(resolver, name, limits))));
  if (outcomes.every((o) => o.kind === 'tempfail')) return { kind: 'tempfail', reason: outcomes.map((o) => (o.kind === 'tempfail' ? o.problem : '')).join('; ') };
  const hosts: MxHost[] = names.map((name, preference) => {
    const outcome = outcomes[preference]!;
    return outcome.kind === 'found' ? { name, preference, addresses: outcome.addresses } : { name, preference, addresses: [], addressProblem: outcome.problem };
  });
  return { kind: 'hosts', hosts, implicit: false };
}

async function implicitMx(resolver: Resolver, domain: string, limits: Limits): Promise<MxResolution> {
  const outcome = await addressesOf(resolver, domain, limits);
  switch (outcome.kind) {
    case 'found':
      return { kind: 'hosts', hosts: [{ name: domain, preference: 0, addresses: outcome.addresses }], implicit: true };
    case 'tempfail':
      return { kind: 'tempfail', reason: `${domain} has no MX records and its addresses could not be resolved: ${outcome.problem}` };
    case 'none':
      // Said whole, not with the address lookup's own problem, which named the domain again and
      // said again that it has no address. An NXDOMAIN here (the MX lookup's NODATA said the
      // name exists: a zone changed between the two) is no record of either kind all the same.
      return { kind: 'no-mail-host', reason: `${domain} has no MX record and no ${limits.ipv6 ? 'A or AAAA' : 'A'} record: it accepts no mail` };
    case 'unusable':
      return { kind: 'hosts', hosts: [{ name: domain, preference: 0, addresses: [], addressProblem: outcome.problem }], implicit: true };
  }
}

function dedupeByName(records: MxRecord[]): MxRecord[] {
  const byName = new Map<string, MxRecord>();
  for (const record of records) {
    const exchange = canonicalName(record.exchange);
    const known = byName.get(exchange);
    if (known === undefined || record.priority < known.priority) byName.set(exchange, { exchange, priority: record.priority });
  }
  return [...byName.values()];
}

/** Sorted by preference; within equal preference, by a random key each, which is a uniform shuffle. */
function orderByPreference(records: MxRecord[], random: () => number): MxRecord[] {
  return records
    .map((record) => ({ record, key: random() }))
    .sort((left, right) => left.record.priority - right.record.priority || left.key - right.key)
    .map(({ record }) => record);
}

async function exchangerAddresses(resolver: Resolver, exchange: string, limits: Limits): Promise<AddressOutcome> {
  // RFC 5321 §5.1 wants a host name here, but Postfix delivers to the address an exchange such
  // as "192.0.2.1" names (warning "numeric domain name in resource data of MX record"), so the
  // domain gets its mail; calling it no-mail-host would refuse senders whose mail is delivered.
  const numeric = parseIp(exchange);
  if (numeric !== undefined) {
    if (numeric.family === 6 && !limits.ipv6) return { kind: 'unusable', problem: `MX exchange ${exchange} is an IPv6 address, and IPv6 is off (callout.ipv6)` };
    return { kind: 'found', addresses: [formatIp(numeric)] };
  }
  if (isAddressLiteral(exchange)) {
    return { kind: 'none', problem: `MX exchange ${exchange} is an address literal, not a host name (RFC 5321 §5.1)` };
  }
  return addressesOf(resolver, exchange, limits);
}

async function addressesOf(resolver: Resolver, name: string, limits: Limits): Promise<AddressOutcome> {
  const noAnswer: DnsAnswer<string> = { kind: 'nodata', ttl: 0 };
  const [v6, v4] = await Promise.all([limits.ipv6 ? resolver.aaaa(name) : Promise.resolve(noAnswer), resolver.a(name)]);
  const v6Addresses = v6.kind === 'records' ? v6.records : [];
  const v4Addresses = v4.kind === 'records' ? v4.records : [];
  const addresses = [...new Set(interleave(v6Addresses, v4Addresses))].slice(0, limits.maxAddressesPerHost);
  if (addresses.length > 0) return { kind: 'found', addresses };

  const temporaryReasons = [v6, v4].flatMap((answer) => (answer.kind === 'tempfail' ? [answer.reason] : []));
  if (temporaryReasons.length > 0) return { kind: 'tempfail', problem: temporaryReasons.join(', ') };
  if (!limits.ipv6 && v4.kind !== 'nxdomain') {
    // Asked only now: with IPv6 off, AAAA records tell only that the host is there, out of reach.
    const only6 = await resolver.aaaa(name);
    if (only6.kind === 'records' && only6.records.length > 0) return { kind: 'unusable', problem: `${name} has IPv6 addresses only, and IPv6 is off (callout.ipv6)` };
  }
  if (v4.kind === 'nxdomain' || v6.kind === 'nxdomain') return { kind: 'none', problem: `${name} does not exist (NXDOMAIN)` };
  return { kind: 'none', problem: `${name} has no ${limits.ipv6 ? 'AAAA or A' : 'A'} records` };
}

function interleave(first: string[], second: string[]): string[] {
  const merged: string[] = [];
  for (let i = 0; i < Math.max(first.length, second.length); i++) {
    const a = first[i];
    const b = second[i];
    if (a !== undefined) merged.push(a);
    if (b !== undefined) merged.push(b);
  }
  return merged;
}
