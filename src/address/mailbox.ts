/**
 * NAME
 *   address/mailbox - the Mailbox value and the checks shared by the SMTP and the header parsers
 *
 * DESCRIPTION
 *   Both parsers reduce an address to a semantic local part (quotes and quoted-pairs removed) and
 *   a domain given as labels with their positions, or as an address literal; this module turns
 *   those into a Mailbox, so that the limits, IDN handling and the canonical form are decided in
 *   one place. The canonical `address` is what callout sends in RCPT TO: the A-label domain and
 *   the local part quoted only when it is not a valid dot-string. Every non-ASCII character is
 *   allowed except U+FFFD, which stands for bytes that were not UTF-8 (rule `not-utf8`).
 *
 * RFC
 *   RFC 5321 §4.1.2 (Domain, address-literal), §4.1.3 (IPv4/IPv6 literals), §4.5.1 (postmaster),
 *   §4.5.3.1 (size limits); RFC 6531 §3.3 (UTF-8 local parts, U-labels); RFC 5890 (A-labels,
 *   converted with node:url domainToASCII, which applies UTS #46 mapping and validates Punycode).
 *   RFC 1123 §2.1, RFC 3696 §2 (no all-numeric top-level label: a bare IP address is refused).
 *
 * LIMITS
 *   local part 64 octets and path 256 octets, both measured in UTF-8 on the canonical form that
 *   callout sends (so a needlessly quoted input is not held against the address); domain 255
 *   octets and labels 63 octets, measured on the A-label form that DNS sees (a label of more
 *   than 255 characters is refused before it is converted).
 *
 * ERRORS
 *   Returned as AddressSyntaxError values (see errors.ts); nothing here throws.
 */

import { isIPv4 } from 'node:net';
import { domainToASCII, domainToUnicode } from 'node:url';
import { formatIp, parseIp } from '../core/ip.js';
import { failure, success, type ParseResult } from './errors.js';

export const ADDRESS_LIMITS = {
  /** Characters accepted before any parsing work; far above any valid path. */
  input: 4096,
  localPartOctets: 64,
  domainOctets: 255,
  labelOctets: 63,
  pathOctets: 256,
} as const;

export interface AddressLiteral {
  family: 4 | 6;
  ip: string;
}

export interface Mailbox {
  /** Semantic value: quotes and quoted-pairs removed, case preserved. */
  localPart: string;
  /** Lower-cased, U-labels, for display; for literals the bracketed literal. */
  domain: string;
  /** Lower-cased A-labels, for DNS; for literals the bracketed literal. */
  asciiDomain: string;
  literal?: AddressLiteral;
  /** The local part is not ASCII, so the address can only be sent with SMTPUTF8 (RFC 6531). */
  requiresSmtputf8: boolean;
  /** Canonical `local@asciiDomain`, for use in MAIL FROM and RCPT TO. */
  address: string;
}

export interface NormalisedDomain {
  unicode: string;
  ascii: string;
}

/** The domain half of a mailbox, before it is joined to a local part. */
export interface MailboxDomain extends NormalisedDomain {
  literal?: AddressLiteral;
}

export interface DomainLabel {
  text: string;
  /** Index of the label's first character in the parsed input. */
  position: number;
}

export interface LocalPartInput {
  value: string;
  position: number;
}

const ATEXT = new Uint8Array(128);
for (const ch of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~") {
  ATEXT[ch.charCodeAt(0)] = 1;
}

/** Letters, digits and hyphen: the ASCII a domain label may hold (RFC 5321 Let-dig, Ldh-str). */
const LDH = new Uint8Array(128);
for (const ch of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-') {
  LDH[ch.charCodeAt(0)] = 1;
}

export function isSurrogate(codePoint: number): boolean {
  return codePoint >= 0xd800 && codePoint <= 0xdfff;
}

/** RFC 5321/5322 atext, extended by RFC 6531/6532 with every non-ASCII character. */
export function isAtext(codePoint: number): boolean {
  if (codePoint < 0x80) return ATEXT[codePoint] === 1;
  return !isSurrogate(codePoint);
}

/** UTF-16 code units taken by a code point. */
export function codeUnits(codePoint: number): number {
  return codePoint > 0xffff ? 2 : 1;
}

/** Index of the first code unit matching `test`, or -1. */
function findCodeUnit(text: string, test: (unit: number) => boolean): number {
  for (let i = 0; i < text.length; i += 1) if (test(text.charCodeAt(i))) return i;
  return -1;
}

/**
 * Callout's inputs (policy lines, message files, address lists, argv) are decoded as UTF-8 with
 * U+FFFD for every byte that is not UTF-8, so the character stands for bytes that are lost: an
 * address that holds it is not the one that was sent, and every sender with other bad bytes in
 * the same place would read as the same mailbox (one callout cache entry, one greylist triplet).
 * No mailbox is named with U+FFFD itself, so it is refused wherever it stands.
 */
const isReplacement = (unit: number): boolean => unit === 0xfffd;
const NOT_UTF8 = (part: string): string => `${part} holds U+FFFD, the mark of bytes that were not UTF-8`;
const isNonAscii = (unit: number): boolean => unit > 0x7f;
const isControl = (unit: number): boolean => unit < 0x20 || unit === 0x7f;

export function octets(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * The checks every parser makes before any other work: a length cap, so that no input can make
 * a parser do unbounded work, and, when UTF-8 is not allowed, the first non-ASCII character.
 */
export function checkInput(input: string, limit: number, utf8: boolean): ParseResult<string> {
  if (input.length > limit) return failure('input-too-long', limit, `input longer than ${limit} characters`);
  if (!utf8) {
    const nonAscii = findCodeUnit(input, isNonAscii);
    if (nonAscii >= 0) return failure('non-ascii', nonAscii, 'non-ASCII character without UTF-8 support');
  }
  return success(input);
}

/** A valid RFC 5321 Dot-string (RFC 6531 atext), i.e. a local part that needs no quotes. */
function isDotString(value: string): boolean {
  if (value === '') return false;
  return value.split('.').every((atom) => {
    if (atom === '') return false;
    for (const ch of atom) if (!isAtext(ch.codePointAt(0) ?? 0)) return false;
    return true;
  });
}

export function quoteLocalPart(localPart: string): string {
  return isDotString(localPart) ? localPart : `"${localPart.replace(/["\\]/g, '\\$&')}"`;
}

const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;

/** Splits domain text into labels, keeping each label's position in the input. */
export function splitLabels(text: string, position: number): DomainLabel[] {
  const labels: DomainLabel[] = [];
  let start = 0;
  for (const label of text.split('.')) {
    labels.push({ text: label, position: position + start });
    start += label.length + 1;
  }
  return labels;
}

function normaliseLabel(label: DomainLabel): ParseResult<{ ascii: string; international: boolean }> {
  const { text, position } = label;
  if (text === '') return failure('empty-domain-label', position, 'empty domain label');
  // domainToASCII's Punycode encoder is quadratic in a label's distinct code points (38000 CJK
  // characters in a From header took 1.5 s). An A-label takes a character for every code point
  // that UTS #46 keeps, so a label longer than a whole domain fits in 63 octets only if it is
  // mostly characters that UTS #46 deletes (soft hyphens, variation selectors): no real name.
  if (text.length > ADDRESS_LIMITS.domainOctets) {
    return failure('label-too-long', position, `domain label exceeds ${ADDRESS_LIMITS.labelOctets} octets`);
  }
  let ascii = true;
  for (let i = 0; i < text.length; ) {
    const codePoint = text.codePointAt(i) ?? 0;
    if (isReplacement(codePoint)) return failure('not-utf8', position + i, NOT_UTF8('domain'));
    if (codePoint >= 0x80 && !isSurrogate(codePoint)) {
      ascii = false;
    } else if (codePoint >= 0x80 || LDH[codePoint] !== 1) {
      return failure('bad-character', position + i, 'character not allowed in a domain');
    }
    i += codeUnits(codePoint);
  }
  if (text.startsWith('-') || text.endsWith('-')) {
    return failure('bad-domain-label', position, 'domain label starts or ends with a hyphen');
  }
  const lower = text.toLowerCase();
  const international = !ascii || lower.startsWith('xn--');
  // domainToASCII runs the URL host parser, which rewrites numbers such as 0x7f into IPv4
  // addresses; it is given only labels that need IDNA, and its answer must be one LDH label.
  const converted = international ? domainToASCII(text) : lower;
  if (!LDH_LABEL.test(converted)) return failure('bad-idn-label', position, 'invalid internationalised label');
  if (converted.length > ADDRESS_LIMITS.labelOctets) {
    return failure('label-too-long', position, `domain label exceeds ${ADDRESS_LIMITS.labelOctets} octets`);
  }
  return success({ ascii: converted, international });
}

/** RFC 5321 Domain with RFC 6531 U-labels, from labels found by a parser. */
export function validateDomain(labels: DomainLabel[], position: number): ParseResult<NormalisedDomain> {
  const first = labels[0];
  if (first === undefined || (labels.length === 1 && first.text === '')) {
    return failure('empty-domain', position, 'empty domain');
  }
  const asciiLabels: string[] = [];
  let international = false;
  for (const label of labels) {
    const normalised = normaliseLabel(label);
    if (!normalised.ok) return normalised;
    asciiLabels.push(normalised.value.ascii);
    international ||= normalised.value.international;
  }
  // RFC 1123 §2.1 and RFC 3696 §2: a top-level label is never all digits. `user@192.0.2.1` is an
  // IP address without the brackets of an address literal (Postfix refuses it too); read as a
  // name it would only be looked up in DNS and fail there as a missing domain, not as syntax.
  const last = labels[labels.length - 1] ?? first;
  if (/^[0-9]+$/.test(asciiLabels[asciiLabels.length - 1] ?? '')) {
    return failure('bad-domain-label', last.position, 'all-numeric top-level label (an IP address needs brackets: [192.0.2.1])');
  }
  const ascii = asciiLabels.join('.');
  if (ascii.length > ADDRESS_LIMITS.domainOctets) {
    return failure('domain-too-long', position, `domain exceeds ${ADDRESS_LIMITS.domainOctets} octets (${ascii.length})`);
  }
  return success({ ascii, unicode: international ? domainToUnicode(ascii) || ascii : ascii });
}

/**
 * RFC 5321 §4.1.3 address literal, given without its brackets. General address literals
 * (`[tag:content]`) name no address callout could use, so they are refused by their own rule.
 */
export function validateAddressLiteral(content: string, position: number): ParseResult<MailboxDomain> {
  const ipv6 = /^ipv6:/i.test(content) ? content.slice(5) : undefined;
  if (ipv6 !== undefined) {
    // parseIp takes the RFC 4291 text forms without zone identifiers; formatIp gives the RFC 5952
    // form, so that equal addresses compare equal, with an IPv4-mapped address as ::ffff:a.b.c.d
    // (§5), as written and as core/ip prints it everywhere else.
    const parsed = parseIp(ipv6);
    if (parsed?.family === 6) {
      const ip = formatIp(parsed);
      const text = `[IPv6:${ip}]`;
      return success({ unicode: text, ascii: text, literal: { family: 6, ip } });
    }
    return failure('bad-address-literal', position, 'invalid IPv6 address literal');
  }
  if (/^[A-Za-z0-9-]*[A-Za-z0-9]:/.test(content)) {
    return failure('unsupported-address-literal', position, 'general address literals are not supported');
  }
  if (/^[0-9.]+$/.test(content) && isIPv4(content)) {
    const text = `[${content}]`;
    return success({ unicode: text, ascii: text, literal: { family: 4, ip: content } });
  }
  return failure('bad-address-literal', position, 'invalid IPv4 address literal');
}

/** Joins a semantic local part and a checked domain into a Mailbox, applying the size limits unless told not to. */
export function buildMailbox(local: LocalPartInput, domain: MailboxDomain, pathPosition: number, sizeLimits = true): ParseResult<Mailbox> {
  const control = findCodeUnit(local.value, isControl);
  if (control >= 0) return failure('bad-character', local.position, 'control character in local part');
  if (findCodeUnit(local.value, isReplacement) >= 0) return failure('not-utf8', local.position, NOT_UTF8('local part'));
  const quoted = quoteLocalPart(local.value);
  const localOctets = octets(quoted);
  if (sizeLimits && localOctets > ADDRESS_LIMITS.localPartOctets) {
    return failure(
      'local-part-too-long',
      local.position,
      `local part exceeds ${ADDRESS_LIMITS.localPartOctets} octets (${localOctets})`,
    );
  }
  const address = `${quoted}@${domain.ascii}`;
  const pathOctets = octets(address) + 2;
  if (sizeLimits && pathOctets > ADDRESS_LIMITS.pathOctets) {
    return failure('path-too-long', pathPosition, `path exceeds ${ADDRESS_LIMITS.pathOctets} octets (${pathOctets})`);
  }
  const mailbox: Mailbox = {
    localPart: local.value,
    domain: domain.unicode,
    asciiDomain: domain.ascii,
    requiresSmtputf8: findCodeUnit(local.value, isNonAscii) >= 0,
    address,
  };
  if (domain.literal) mailbox.literal = domain.literal;
  return success(mailbox);
}

/** The mailbox as text: `ascii` is the form to send, `unicode` the form to show to people. */
export function formatMailbox(mailbox: Mailbox, form: 'ascii' | 'unicode' = 'ascii'): string {
  return form === 'ascii' ? mailbox.address : `${quoteLocalPart(mailbox.localPart)}@${mailbox.domain}`;
}

/** RFC 5321 §4.5.1: the postmaster local part is case-insensitive. */
export function isPostmaster(mailbox: Mailbox): boolean {
  return mailbox.localPart.toLowerCase() === 'postmaster';
}

/**
 * A domain on its own (an MX exchange, a configured domain, a HELO name), in both forms. One
 * trailing dot, the DNS root, is accepted and dropped.
 */
export function normaliseDomain(domain: string, options: { utf8?: boolean } = {}): ParseResult<NormalisedDomain> {
  const checked = checkInput(domain, ADDRESS_LIMITS.input, options.utf8 ?? true);
  if (!checked.ok) return checked;
  if (domain === '') return failure('empty-input', 0, 'empty domain');
  const text = domain.endsWith('.') ? domain.slice(0, -1) : domain;
  return validateDomain(splitLabels(text, 0), 0);
}
