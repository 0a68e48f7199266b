/**
 * NAME
 *   core/ip - IPv4/IPv6 parsing, CIDR sets and special-purpose address classification
 *
 * DESCRIPTION
 *   Pure helpers over textual addresses, used to refuse callouts to non-public targets, to match
 *   client addresses against configured networks (like Postfix mynetworks) and to reduce a client
 *   to its /24 or /64 for greylisting.
 *
 *   Addresses are held as a family and a bigint of 32 or 128 bits. An IPv4-mapped IPv6 address
 *   (::ffff:a.b.c.d, RFC 4291 §2.5.5.2) is the IPv4 address a.b.c.d wherever addresses are
 *   compared or classified: a dual-stack socket reports IPv4 clients that way, and a mapped
 *   address must not slip past an IPv4 rule. A CIDR written inside ::ffff:0:0/96 with a prefix of
 *   96 or more is therefore stored as the IPv4 CIDR it denotes.
 *
 *   parseCidr accepts a CIDR whose address has host bits set (10.1.2.3/8) and masks it to its
 *   network (10.0.0.0/8), as RFC 7208 has SPF's ip4:/ip6: terms read. parseNetwork, which
 *   reads what an administrator wrote (AddressSet.parse, for the lists of a configuration, and
 *   commands' arguments), refuses it as Postfix's cidr tables skip it ("non-null
 *   host address bits"): in a list an administrator wrote it is nearly always a typo for a
 *   narrower network. A bare address is a /32 or /128. Postfix's bracketed IPv6 form
 *   ([2001:db8::]/32) is accepted too.
 *
 *   classifyAddress follows the IANA IPv4 and IPv6 Special-Purpose Address Registries
 *   (https://www.iana.org/assignments/iana-ipv4-special-registry,
 *   https://www.iana.org/assignments/iana-ipv6-special-registry; RFC 6890, RFC 8190) and the
 *   IANA IPv6 Address Space registry. Judgement calls:
 *     - 0.0.0.0/32 is 'unspecified'; the rest of 0.0.0.0/8 and 255.255.255.255 are 'reserved'.
 *     - Inside 192.0.0.0/24 and 2001::/23 (reserved), the blocks IANA marks globally reachable
 *       (PCP/TURN/DNS-SD anycast, AMT, AS112, ORCHIDv2, DET) are 'public'; Teredo (2001::/32)
 *       stays 'reserved': it is not a place to find a mail exchanger.
 *     - IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96, RFC 6052) and 6to4 (2002::/16,
 *       RFC 3056) addresses take the class of the IPv4 address they embed, since that is the host
 *       they reach; 64:ff9b:1::/48 (RFC 8215, local NAT64) is 'private'.
 *     - fc00::/7 (unique local) is 'private'; IPv6 outside 2000::/3 that no entry names
 *       (IPv4-compatible ::/96, deprecated site-local fec0::/10, unassigned space) is 'reserved'.
 *     - 3fff::/20 (RFC 9637) is 'documentation' alongside 2001:db8::/32.
 *
 * STANDARDS
 *   RFC 4291 (IPv6 text forms), RFC 5952 (canonical IPv6 text), RFC 4632 (CIDR), RFC 6890.
 *
 * LIMITS
 *   Input longer than 64 characters is refused before parsing. IPv4 is the dotted quad with
 *   decimal octets and no leading zeros: the inet_aton forms (127.1, 0x7f.0.0.1, 017.0.0.1) are
 *   refused because they are a classic way to slip past address filters; parseCidr names a
 *   leading zero as the reason, since whoever wrote 010.1.1.1 meant ten (inet_aton and postgrey
 *   read eight). IPv6 zone identifiers
 *   (fe80::1%eth0) are refused. No function throws on bad input; unusable input yields a value.
 *
 * ERRORS
 *   A reason quotes the text it refuses with core/text's shownJson (a list's entry cut to 80
 *   characters; parseCidr's texts are 64 at most): commands and `config check` print it, and a
 *   C1 or bidi control in it reached the terminal raw.
 *   networkOf throws CalloutError INTERNAL for a prefix length outside the family's range: the
 *   configuration schema bounds these, so reaching it is a bug.
 */

import { CalloutError, abbreviate } from './errors.js';
import { shownJson } from './text.js';

export type IpFamily = 4 | 6;

export interface IpAddress {
  readonly family: IpFamily;
  /** The address as an unsigned 32-bit (IPv4) or 128-bit (IPv6) integer. */
  readonly bits: bigint;
}

export interface Cidr {
  readonly family: IpFamily;
  /** The network address with all host bits cleared. */
  readonly network: bigint;
  readonly prefixLength: number;
}

/**
 * `leadingZero`: the reason is an IPv4 octet written with a leading zero (see LIMITS).
 * `notAddress`: the text (before any prefix) is no address at all, and the reason quotes it.
 */
export type IpParseResult<T> = { ok: true; value: T } | { ok: false; reason: string; leadingZero?: true; notAddress?: true };

export type AddressClass =
  | 'public'
  | 'private'
  | 'loopback'
  | 'link-local'
  | 'multicast'
  | 'unspecified'
  | 'reserved'
  | 'documentation'
  | 'shared'
  | 'benchmark'
  /** The text is not an IPv4 or IPv6 address. */
  | 'invalid';

const MAX_TEXT_LENGTH = 64;
const MAPPED_PREFIX = 0xffffn;

function familyWidth(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

function prefixMask(family: IpFamily, prefixLength: number): bigint {
  const width = familyWidth(family);
  return ((1n << BigInt(prefixLength)) - 1n) << BigInt(width - prefixLength);
}

function parseIpv4Bits(text: string): bigint | undefined {
  const octets = text.split('.');
  if (octets.length !== 4) return undefined;
  let bits = 0n;
  for (const octet of octets) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(octet)) return undefined;
    const value = Number(octet);
    if (value > 255) return undefined;
    bits = (bits << 8n) | BigInt(value);
  }
  return bits;
}

/** Hex groups of one side of '::'; a trailing dotted quad counts as two groups. */
function parseIpv6Groups(text: string, allowTrailingIpv4: boolean): number[] | undefined {
  if (text === '') return [];
  const parts = text.split(':');
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    if (allowTrailingIpv4 && index === parts.length - 1 && part.includes('.')) {
      const ipv4 = parseIpv4Bits(part);
      if (ipv4 === undefined) return undefined;
      groups.push(Number(ipv4 >> 16n), Number(ipv4 & 0xffffn));
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
      groups.push(parseInt(part, 16));
    }
  }
  return groups;
}

function parseIpv6Bits(text: string): bigint | undefined {
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const head = parseIpv6Groups(halves[0] ?? '', false);
    const tail = parseIpv6Groups(halves[1] ?? '', true);
    if (head === undefined || tail === undefined) return undefined;
    // '::' stands for at least one zero group (RFC 4291 §2.2).
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    const all = parseIpv6Groups(text, true);
    if (all === undefined || all.length !== 8) return undefined;
    groups = all;
  }
  let bits = 0n;
  for (const group of groups) bits = (bits << 16n) | BigInt(group);
  return bits;
}

/** Parses a textual IPv4 or IPv6 address; undefined when it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  if (text.length === 0 || text.length > MAX_TEXT_LENGTH) return undefined;
  if (text.includes(':')) {
    const bits = parseIpv6Bits(text);
    return bits === undefined ? undefined : { family: 6, bits };
  }
  const bits = parseIpv4Bits(text);
  return bits === undefined ? undefined : { family: 4, bits };
}

/** The IPv4 address an IPv4-mapped IPv6 address stands for; any other address unchanged. */
function unmapped(address: IpAddress): IpAddress {
  if (address.family === 6 && address.bits >> 32n === MAPPED_PREFIX) {
    return { family: 4, bits: address.bits & 0xffffffffn };
  }
  return address;
}

/**
 * The one text of the host an address names: an IPv4-mapped IPv6 address as its IPv4 address,
 * IPv6 in RFC 5952 form; text that is no address unchanged. Limits and caches kept per host
 * key on it, so that ::ffff:192.0.2.1 and 192.0.2.1 (or two spellings of one IPv6 address)
 * count as the one server they are.
 */
export function hostKey(ip: string): string {
  const parsed = parseIp(ip);
  return parsed === undefined ? ip : formatIp(unmapped(parsed));
}

function formatIpv4Bits(bits: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((bits >> shift) & 0xffn)).join('.');
}

/** Canonical text: dotted quad, or RFC 5952 IPv6 (mapped addresses as ::ffff:a.b.c.d, §5). */
export function formatIp(address: IpAddress): string {
  if (address.family === 4) return formatIpv4Bits(address.bits);
  if (address.bits >> 32n === MAPPED_PREFIX) return `::ffff:${formatIpv4Bits(address.bits & 0xffffffffn)}`;
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((address.bits >> shift) & 0xffffn));
  // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start += 1;
      continue;
    }
    let end = start;
    while (end < 8 && groups[end] === 0) end += 1;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/** The first octet with a leading zero (010) of a dotted quad of decimal octets; undefined when there is none. */
function leadingZeroOctet(text: string): string | undefined {
  const octets = text.split('.');
  if (octets.length !== 4 || !octets.every((octet) => /^[0-9]{1,3}$/.test(octet))) return undefined;
  return octets.find((octet) => /^0[0-9]/.test(octet));
}

/** Parses 'address/prefix' or a bare address; host bits are masked off (see DESCRIPTION). */
export function parseCidr(text: string): IpParseResult<Cidr> {
  if (text.length > MAX_TEXT_LENGTH) return { ok: false, reason: `longer than ${MAX_TEXT_LENGTH} characters` };
  const slash = text.indexOf('/');
  let addressText = slash < 0 ? text : text.slice(0, slash);
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const bracketed = /^\[(.*)\]$/.exec(addressText);
  if (bracketed) addressText = bracketed[1] ?? '';
  const address = parseIp(addressText);
  if (address === undefined || (bracketed && address.family !== 6)) {
    const zero = bracketed ? undefined : leadingZeroOctet(addressText);
    if (zero !== undefined) return { ok: false, reason: `an octet with a leading zero (${zero}): write it in decimal without the zero`, leadingZero: true };
    return { ok: false, reason: `not an IPv4 or IPv6 address: ${shownJson(addressText)}`, notAddress: true };
  }
  const width = familyWidth(address.family);
  let prefixLength = width;
  if (prefixText !== undefined) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > width) {
      return { ok: false, reason: `prefix length must be 0 to ${width}: ${shownJson(prefixText)}` };
    }
    prefixLength = Number(prefixText);
  }
  if (address.family === 6 && prefixLength >= 96 && address.bits >> 32n === MAPPED_PREFIX) {
    const ipv4 = unmapped(address);
    const ipv4Prefix = prefixLength - 96;
    return { ok: true, value: { family: 4, prefixLength: ipv4Prefix, network: ipv4.bits & prefixMask(4, ipv4Prefix) } };
  }
  return {
    ok: true,
    value: { family: address.family, prefixLength, network: address.bits & prefixMask(address.family, prefixLength) },
  };
}

/**
 * parseCidr for a network an administrator wrote (a list entry, a command's argument): one with
 * host bits set after the prefix ("192.0.2.10/8") is refused (see DESCRIPTION), the reason naming
 * the network meant; read as written it would take in 16 million addresses.
 */
export function parseNetwork(text: string): IpParseResult<Cidr> {
  const parsed = parseCidr(text);
  if (!parsed.ok) return parsed;
  const slash = text.indexOf('/');
  const address = slash < 0 ? undefined : parseCidr(text.slice(0, slash));
  // Families differ only for a mapped address under a prefix shorter than 96 (alone it is
  // IPv4, with its prefix IPv6): its ffff group is host bits then, always set.
  if (address?.ok && (address.value.family !== parsed.value.family || address.value.network !== parsed.value.network)) {
    return { ok: false, reason: `host bits set after the prefix: write the network, ${formatCidr(parsed.value)}, or the address alone` };
  }
  return parsed;
}

/**
 * What a list entry parseNetwork or parseCidr refused was expected to be, after `got "entry", `
 * (config/networks; the postgrey whitelist files): with examples when it is nothing like an
 * address (the reason would quote the entry a second time), else with what is wrong with it.
 */
export function networkExpected(refused: { reason: string; notAddress?: true }): string {
  return `expected an IPv4 or IPv6 address or network (${refused.notAddress ? '192.0.2.0/24, 2001:db8::/32' : refused.reason})`;
}

export function formatCidr(cidr: Cidr): string {
  return `${formatIp({ family: cidr.family, bits: cidr.network })}/${cidr.prefixLength}`;
}

function contains(cidr: Cidr, address: IpAddress): boolean {
  return address.family === cidr.family && (address.bits & prefixMask(cidr.family, cidr.prefixLength)) === cidr.network;
}

/** Whether every address of `inner` lies in `outer` (a network of the same family, as long a prefix or longer). */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.family === outer.family && inner.prefixLength >= outer.prefixLength && (inner.network & prefixMask(outer.family, outer.prefixLength)) === outer.network;
}

/** Whether the address (mapped IPv4 counts as IPv4) lies in the CIDR; false for a non-address. */
export function cidrContains(cidr: Cidr, ip: string): boolean {
  const address = parseIp(ip);
  return address !== undefined && contains(cidr, unmapped(address));
}

/**
 * A set of networks, answering membership in time proportional to the number of distinct
 * prefix lengths rather than the number of entries, so a long list stays cheap per connection.
 */
export class AddressSet {
  readonly cidrs: readonly Cidr[];
  private readonly byPrefix = new Map<IpFamily, Map<number, { mask: bigint; networks: Set<bigint> }>>([
    [4, new Map()],
    [6, new Map()],
  ]);

  constructor(cidrs: Iterable<Cidr>) {
    this.cidrs = [...cidrs];
    for (const cidr of this.cidrs) {
      const lengths = this.byPrefix.get(cidr.family);
      let bucket = lengths?.get(cidr.prefixLength);
      if (bucket === undefined) {
        bucket = { mask: prefixMask(cidr.family, cidr.prefixLength), networks: new Set() };
        lengths?.set(cidr.prefixLength, bucket);
      }
      bucket.networks.add(cidr.network);
    }
  }

  /** Builds a set from CIDR or address strings, each read by parseNetwork; the first unusable entry is the reason. */
  static parse(entries: readonly string[]): IpParseResult<AddressSet> {
    const cidrs: Cidr[] = [];
    for (const entry of entries) {
      const parsed = parseNetwork(entry);
      if (!parsed.ok) return { ok: false, reason: `${shownJson(abbreviate(entry, 80))}: ${parsed.reason}` };
      cidrs.push(parsed.value);
    }
    return { ok: true, value: new AddressSet(cidrs) };
  }

  has(ip: string): boolean {
    // An empty set (an allow-list nobody filled in) answers without parsing the address.
    if (this.cidrs.length === 0) return false;
    const parsed = parseIp(ip);
    return parsed !== undefined && this.holds(unmapped(parsed));
  }

  /** Whether a parsed address (IPv4-mapped IPv6 already reduced to IPv4) is in the set. */
  holds(address: IpAddress): boolean {
    for (const { mask, networks } of this.byPrefix.get(address.family)?.values() ?? []) {
      if (networks.has(address.bits & mask)) return true;
    }
    return false;
  }
}

type SpecialClass = Exclude<AddressClass, 'invalid'>;

/** A CIDR written in this module's own tables; a typo there is a bug, caught at load. */
function builtinCidr(text: string): Cidr {
  const parsed = parseCidr(text);
  if (!parsed.ok) throw new CalloutError('INTERNAL', `bad built-in CIDR ${text}: ${parsed.reason}`);
  return parsed.value;
}

function specialTable(entries: ReadonlyArray<readonly [string, SpecialClass]>): Array<{ cidr: Cidr; class: SpecialClass }> {
  const table = entries.map(([text, addressClass]) => ({ cidr: builtinCidr(text), class: addressClass }));
  // The most specific entry wins, so exceptions inside a block need no ordering care.
  return table.sort((a, b) => b.cidr.prefixLength - a.cidr.prefixLength);
}

const IPV4_SPECIAL = specialTable([
  ['0.0.0.0/8', 'reserved'],
  ['0.0.0.0/32', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'],
  ['192.0.0.9/32', 'public'],
  ['192.0.0.10/32', 'public'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmark'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
  ['255.255.255.255/32', 'reserved'],
]);

const IPV6_SPECIAL = specialTable([
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['64:ff9b:1::/48', 'private'],
  ['100::/64', 'reserved'],
  ['2001::/23', 'reserved'],
  ['2001:1::1/128', 'public'],
  ['2001:1::2/128', 'public'],
  ['2001:1::3/128', 'public'],
  ['2001:2::/48', 'benchmark'],
  ['2001:3::/32', 'public'],
  ['2001:4:112::/48', 'public'],
  ['2001:20::/28', 'public'],
  ['2001:30::/28', 'public'],
  ['2001:db8::/32', 'documentation'],
  ['3fff::/20', 'documentation'],
  ['fc00::/7', 'private'],
  ['fe80::/10', 'link-local'],
  ['ff00::/8', 'multicast'],
]);

const NAT64_WELL_KNOWN = builtinCidr('64:ff9b::/96');
const SIX_TO_FOUR = builtinCidr('2002::/16');
const GLOBAL_UNICAST = builtinCidr('2000::/3');

function classifyParsed(address: IpAddress): SpecialClass {
  if (address.family === 4) {
    return IPV4_SPECIAL.find((entry) => contains(entry.cidr, address))?.class ?? 'public';
  }
  if (contains(NAT64_WELL_KNOWN, address)) return classifyParsed({ family: 4, bits: address.bits & 0xffffffffn });
  if (contains(SIX_TO_FOUR, address)) return classifyParsed({ family: 4, bits: (address.bits >> 80n) & 0xffffffffn });
  const special = IPV6_SPECIAL.find((entry) => contains(entry.cidr, address))?.class;
  if (special !== undefined) return special;
  return contains(GLOBAL_UNICAST, address) ? 'public' : 'reserved';
}

/** The special-purpose class of an address (see DESCRIPTION for the judgement calls). */
export function classifyAddress(ip: string): AddressClass {
  const address = parseIp(ip);
  return address === undefined ? 'invalid' : classifyParsed(unmapped(address));
}

/**
 * The network of an address as CIDR text, e.g. '192.0.2.0/24' or '2001:db8:1:2::/64'; mapped
 * IPv4 uses the IPv4 prefix. Undefined when the text is not an address.
 */
export function networkOf(ip: string, v4Prefix: number, v6Prefix: number): string | undefined {
  for (const [family, prefix] of [[4, v4Prefix], [6, v6Prefix]] as const) {
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > familyWidth(family)) {
      throw new CalloutError('INTERNAL', `IPv${family} prefix length out of range: ${prefix}`);
    }
  }
  const parsed = parseIp(ip);
  if (parsed === undefined) return undefined;
  const address = unmapped(parsed);
  const prefixLength = address.family === 4 ? v4Prefix : v6Prefix;
  return formatCidr({ family: address.family, prefixLength, network: address.bits & prefixMask(address.family, prefixLength) });
}
