/**
 * NAME
 *   checks/spf/record - parse the terms of an SPF record into directives and modifiers
 *
 * DESCRIPTION
 *   parseRecordTerms takes the text after the version tag ("v=spf1", or Sender ID's
 *   "spf2.0/scope") and checks the whole record before anything is evaluated, since a syntax
 *   error anywhere makes the result permerror (RFC 7208 §4.6). A term is a modifier when its
 *   name is followed directly by "=" (§4.6.1); everything else must be a known mechanism.
 *
 * RFC
 *   RFC 7208 §4.6.1 (terms separated by one or more spaces, trailing spaces allowed), §5
 *   (mechanisms and their arguments), §5.6 (ip4/ip6 networks; CIDR lengths without leading
 *   zeros, at most 32 and 128), §6 (redirect and exp at most once each; unknown modifiers
 *   ignored but their value must be a valid macro-string), §12 (ABNF). A record must be
 *   printable US-ASCII (§3.1, §4.6.1): any other character is a permerror.
 *
 * LIMITS
 *   Records longer than MAX_RECORD_LENGTH characters are refused (a permerror) before
 *   parsing; RFC 7208 §3.4 advises records to fit a 512-octet DNS reply.
 *
 * ERRORS
 *   Returned as values with a problem text; nothing here throws.
 */

import { parseCidr, type Cidr } from '../../core/ip.js';
import { parseDomainSpec, parseMacroString, type MacroString } from './macro.js';

export const MAX_RECORD_LENGTH = 4096;

export type Qualifier = '+' | '-' | '~' | '?';

export type Mechanism =
  | { kind: 'all' }
  | { kind: 'include' | 'exists'; domain: MacroString }
  | { kind: 'a' | 'mx'; domain: MacroString | undefined; cidr4: number; cidr6: number }
  | { kind: 'ptr'; domain: MacroString | undefined }
  | { kind: 'ip4' | 'ip6'; network: Cidr };

export interface Directive {
  qualifier: Qualifier;
  mechanism: Mechanism;
  /** The term as written, for the trace and Received-SPF mechanism=. */
  text: string;
}

export interface DomainModifier {
  domain: MacroString;
  text: string;
}

export interface ParsedRecord {
  directives: Directive[];
  redirect?: DomainModifier;
  explanation?: DomainModifier;
}

export type RecordParse = { ok: true; record: ParsedRecord } | { ok: false; problem: string };

const MODIFIER = /^([A-Za-z][A-Za-z0-9\-_.]*)=(.*)$/s;
const DIRECTIVE = /^([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)$/s;
const CIDR4 = /^(?:0|[1-9][0-9]?)$/;
const CIDR6 = /^(?:0|[1-9][0-9]{0,2})$/;
const DUAL_CIDR = /^(?:\/([0-9]+))?(?:\/\/([0-9]+))?$/;
const DOMAIN_AND_CIDR = /^(.*?)((?:\/[0-9]+)?(?:\/\/[0-9]+)?)$/s;

export function parseRecordTerms(terms: string): RecordParse {
  if (terms.length > MAX_RECORD_LENGTH) return { ok: false, problem: `record longer than ${MAX_RECORD_LENGTH} characters` };
  for (let i = 0; i < terms.length; i++) {
    const code = terms.charCodeAt(i);
    if (code < 0x20 || code > 0x7e) {
      return { ok: false, problem: `record contains character 0x${code.toString(16).padStart(2, '0')}, which is not printable US-ASCII` };
    }
  }
  const record: ParsedRecord = { directives: [] };
  for (const term of terms.split(' ')) {
    if (term === '') continue;
    const problem = MODIFIER.test(term) ? addModifier(record, term) : addDirective(record, term);
    if (problem !== undefined) return { ok: false, problem };
  }
  return { ok: true, record };
}

function addModifier(record: ParsedRecord, term: string): string | undefined {
  const [, rawName = '', value = ''] = MODIFIER.exec(term) ?? [];
  const name = rawName.toLowerCase();
  if (name === 'redirect' || name === 'exp') {
    const key = name === 'redirect' ? 'redirect' : 'explanation';
    if (record[key] !== undefined) return `${name}= appears more than once`;
    const domain = parseDomainSpec(value);
    if (!domain.ok) return `${term}: ${domain.problem}`;
    record[key] = { domain: domain.value, text: term };
    return undefined;
  }
  const parsed = parseMacroString(value, { explanation: false });
  return parsed.ok ? undefined : `${term}: ${parsed.problem}`;
}

function addDirective(record: ParsedRecord, term: string): string | undefined {
  const match = DIRECTIVE.exec(term);
  if (match === null) return `${JSON.stringify(term)} is neither a mechanism nor a modifier`;
  const qualifier = (match[1] || '+') as Qualifier;
  const name = (match[2] ?? '').toLowerCase();
  const rest = match[3] ?? '';
  const mechanism = parseMechanism(name, rest);
  if (typeof mechanism === 'string') return `${term}: ${mechanism}`;
  record.directives.push({ qualifier, mechanism, text: term });
  return undefined;
}

/** The mechanism, or the problem with it. */
function parseMechanism(name: string, rest: string): Mechanism | string {
  switch (name) {
    case 'all':
      return rest === '' ? { kind: 'all' } : '"all" takes no argument';
    case 'include':
    case 'exists': {
      if (!rest.startsWith(':')) return `"${name}" needs ":domain"`;
      const domain = parseDomainSpec(rest.slice(1));
      return domain.ok ? { kind: name, domain: domain.value } : domain.problem;
    }
    case 'a':
    case 'mx':
      return parseAddressMechanism(name, rest);
    case 'ptr': {
      if (rest === '') return { kind: 'ptr', domain: undefined };
      if (!rest.startsWith(':')) return '"ptr" takes only ":domain"';
      const domain = parseDomainSpec(rest.slice(1));
      return domain.ok ? { kind: 'ptr', domain: domain.value } : domain.problem;
    }
    case 'ip4':
    case 'ip6':
      return parseNetwork(name, rest);
    default:
      return `unknown mechanism "${name}"`;
  }
}

function parseAddressMechanism(name: 'a' | 'mx', rest: string): Mechanism | string {
  let domainText: string | undefined;
  let cidrText = rest;
  if (rest.startsWith(':')) {
    const split = DOMAIN_AND_CIDR.exec(rest.slice(1));
    domainText = split?.[1] ?? '';
    cidrText = split?.[2] ?? '';
  } else if (rest !== '' && !rest.startsWith('/')) {
    return `"${name}" takes ":domain" and CIDR lengths only`;
  }
  const cidr = DUAL_CIDR.exec(cidrText);
  if (cidr === null) return `bad CIDR length ${JSON.stringify(cidrText)}`;
  const [, cidr4Text, cidr6Text] = cidr;
  if (cidr4Text !== undefined && !(CIDR4.test(cidr4Text) && Number(cidr4Text) <= 32)) return `bad IPv4 CIDR length /${cidr4Text}`;
  if (cidr6Text !== undefined && !(CIDR6.test(cidr6Text) && Number(cidr6Text) <= 128)) return `bad IPv6 CIDR length //${cidr6Text}`;
  let domain: MacroString | undefined;
  if (domainText !== undefined) {
    const parsed = parseDomainSpec(domainText);
    if (!parsed.ok) return parsed.problem;
    domain = parsed.value;
  }
  return { kind: name, domain, cidr4: cidr4Text === undefined ? 32 : Number(cidr4Text), cidr6: cidr6Text === undefined ? 128 : Number(cidr6Text) };
}

function parseNetwork(name: 'ip4' | 'ip6', rest: string): Mechanism | string {
  if (!rest.startsWith(':')) return `"${name}" needs ":network"`;
  const value = rest.slice(1);
  const slash = value.lastIndexOf('/');
  const address = slash < 0 ? value : value.slice(0, slash);
  const prefix = slash < 0 ? undefined : value.slice(slash + 1);
  const isIpv6Text = address.includes(':');
  if ((name === 'ip4') === isIpv6Text || address.startsWith('[')) return `${JSON.stringify(address)} is not an ${name === 'ip4' ? 'IPv4' : 'IPv6'} address`;
  if (prefix !== undefined) {
    const valid = name === 'ip4' ? CIDR4.test(prefix) && Number(prefix) <= 32 : CIDR6.test(prefix) && Number(prefix) <= 128;
    if (!valid) return `bad CIDR length /${prefix}`;
  }
  const cidr = parseCidr(value);
  if (!cidr.ok) return cidr.reason;
  return { kind: name, network: cidr.value };
}
