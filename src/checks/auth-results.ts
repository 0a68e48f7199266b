/**
 * NAME
 *   checks/auth-results - Authentication-Results, Received-SPF and X-Callout-Result header fields
 *
 * DESCRIPTION
 *   Pure formatting of the check verdicts into header fields (`Name: value`, no CRLF at the
 *   end). Values that are not RFC 2045 tokens are written as quoted-strings; comment text has
 *   "(", ")" and "\" escaped; anything outside printable ASCII is replaced by "?" so a DNS
 *   answer can never inject a header line. With `fold: true` the field is folded (CRLF SP)
 *   between elements to keep lines within 78 characters where possible; the policy pipeline
 *   PREPENDs one line and takes them unfolded.
 *
 *   The callout has no Authentication-Results method: RFC 8601 §2.7 admits only methods in
 *   the IANA "Email Authentication Methods" registry, and consumers ignore unknown ones, so a
 *   made-up "callout=" method (or a ptype.property under one) would be both non-conformant and
 *   invisible. A comment inside Authentication-Results would be conformant but unparseable
 *   by design (comments carry no semantics). The callout is therefore reported in its own,
 *   site-specific field, X-Callout-Result, written in the key=value syntax of Received-SPF so
 *   existing parsers of that syntax can read it.
 *
 * RFC
 *   RFC 8601 §2.2 (authres-header-field = authserv-id *( ";" resinfo ) / "; none"; resinfo =
 *   methodspec [reasonspec] *propspec; pvalue a token, a quoted-string or [local-part "@"]
 *   domain), §2.7.2 (spf with smtp.mailfrom / smtp.helo; sender-id with header.<field>
 *   naming the PRA's field), §2.7.3 (iprev with policy.iprev=<address>); RFC 7208 §9.1
 *   (Received-SPF: result, comment, then key=value pairs client-ip, envelope-from, helo,
 *   problem, receiver, identity, mechanism, each a dot-atom or quoted-string); RFC 5322
 *   §3.2.2 (comments), §3.2.4 (quoted-strings), §2.2.3 (folding).
 *
 * LIMITS
 *   Comment and problem texts are cut to 200 characters. A field stays within MAX_HEADER_LINE
 *   (core/text) unfolded: past it the PREPEND would be cut anywhere, perhaps inside a
 *   quoted-string or comment, or inside a value, which then names another host or domain (an
 *   attacker's long sender and a HELO of "paypal.comx.attacker.example" could leave
 *   "smtp.helo=paypal.com"). So comments go first (they carry no semantics), then the longest
 *   property or key=value pair (each is optional, RFC 8601 §2.2, RFC 7208 §9.1); a method and
 *   its result are always kept.
 */

import { MAX_HEADER_LINE, clip } from '../core/text.js';
import type { IprevVerdict } from './iprev/index.js';
import type { SpfVerdict } from './spf/types.js';
import type { VerifyResult } from '../verify/types.js';

/** The Sender ID (RFC 4406) outcome of the PRA scope, as reported by method sender-id. */
export interface SenderIdReport {
  result: SpfVerdict['result'];
  /** The header field the PRA came from, lower case ("from", "resent-sender", ...). */
  header?: string;
  /** The PRA itself; absent when none could be determined. */
  address?: string;
  problem?: string;
}

export interface AuthenticationResultsInput {
  /** The ADMD's identifier, normally this host's name (RFC 8601 §2.5). */
  authservId: string;
  /** One verdict per identity checked (MAIL FROM and, when checked, HELO). */
  spf?: SpfVerdict[];
  iprev?: IprevVerdict;
  senderId?: SenderIdReport;
}

export interface HeaderOptions {
  fold?: boolean;
}

const MAX_TEXT = 200;
const TSPECIALS = /[()<>@,;:\\"/[\]?=\s]/;
const FOLD_WIDTH = 78;
const ATEXT = "[A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~]+";
const DOT_ATOM = new RegExp(`^${ATEXT}(?:\\.${ATEXT})*$`);
/**
 * RFC 8601's domain-name is RFC 6376 §3.5's: two or more RFC 5321 sub-domains, none starting or
 * ending with "-". "user@localhost" is no pvalue unquoted (a token cannot hold "@"), and a strict
 * reader rejects the whole field over it.
 */
const SUB_DOMAIN = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
const DOMAIN = new RegExp(`^${SUB_DOMAIN}(?:\\.${SUB_DOMAIN})+$`);

/** Whether text is a MIME token (RFC 2045 §5.1), which value() writes as it is. */
export function isToken(text: string): boolean {
  return text !== '' && printable(text) === text && !TSPECIALS.test(text);
}

/** A MIME token (RFC 2045 §5.1) as is, anything else as a quoted-string. */
function value(text: string): string {
  const clean = printable(text);
  return isToken(clean) ? clean : quoted(clean);
}

/** RFC 8601 pvalue: a token, a quoted-string, or local-part@domain with a dot-atom local part. */
function propertyValue(text: string): string {
  const clean = printable(text);
  const at = clean.lastIndexOf('@');
  const domain = clean.slice(at + 1);
  const localPart = clean.slice(0, Math.max(at, 0));
  const mailboxForm = DOMAIN.test(domain) && (at < 0 || localPart === '' || DOT_ATOM.test(localPart));
  return mailboxForm ? clean : value(clean);
}

/** RFC 7208 §9.1 key-value: dot-atom or quoted-string. */
function dotAtomOrQuoted(text: string): string {
  const clean = printable(text);
  return DOT_ATOM.test(clean) ? clean : quoted(clean);
}

function quoted(text: string): string {
  return `"${text.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`;
}

function comment(text: string): string {
  const clean = printable(text);
  return `(${clip(clean, MAX_TEXT).replace(/[()\\]/g, (ch) => `\\${ch}`)})`;
}

function printable(text: string): string {
  return text.replace(/[\r\n\t]+/g, ' ').replace(/[^\x20-\x7e]/g, '?');
}

/** Joins elements with single spaces, or folds them at element boundaries. */
function field(name: string, elements: string[], options: HeaderOptions): string {
  if (!options.fold) return `${name}: ${elements.join(' ')}`;
  const lines: string[] = [];
  let line = `${name}:`;
  for (const element of elements) {
    if (line.length + 1 + element.length > FOLD_WIDTH && line.trim() !== `${name}:`) {
      lines.push(line);
      line = ` ${element}`;
    } else {
      line += ` ${element}`;
    }
  }
  lines.push(line);
  return lines.join('\r\n');
}

/**
 * field() of the groups (resinfos, or the one list of a key=value field) that fit in
 * MAX_HEADER_LINE (see LIMITS); `elements` lays the kept groups out as the field's elements.
 * The first element of a group (method and result) is never dropped.
 */
function fittedField(name: string, groups: string[][], elements: (groups: string[][]) => string[], options: HeaderOptions): string {
  const fits = (kept: string[][]): boolean => field(name, elements(kept), {}).length <= MAX_HEADER_LINE;
  let kept = groups;
  if (!fits(kept)) kept = kept.map(([first = '', ...rest]) => [first, ...rest.filter((element) => !element.startsWith('('))]);
  while (!fits(kept)) {
    let longest: { group: number; position: number; length: number } | undefined;
    kept.forEach((group, g) =>
      group.forEach((element, position) => {
        if (position > 0 && element.length > (longest?.length ?? 0)) longest = { group: g, position, length: element.length };
      }),
    );
    if (longest === undefined) break;
    const { group: dropFrom, position: dropAt } = longest;
    kept = kept.map((group, g) => (g === dropFrom ? group.filter((_, position) => position !== dropAt) : group));
  }
  return field(name, elements(kept), options);
}

/** RFC 7208 §9.1-style comment text for an SPF verdict. */
export function spfComment(verdict: SpfVerdict, receiver?: string): string {
  const who = verdict.identity === 'helo' ? `HELO ${verdict.helo}` : `domain of ${verdict.sender}`;
  const prefix = receiver === undefined ? '' : `${receiver}: `;
  switch (verdict.result) {
    case 'pass':
      return `${prefix}${who} designates ${verdict.ip} as permitted sender`;
    case 'fail':
      return `${prefix}${who} does not designate ${verdict.ip} as permitted sender`;
    case 'softfail':
      return `${prefix}${who} discourages use of ${verdict.ip} as permitted sender`;
    case 'neutral':
      return `${prefix}${verdict.ip} is neither permitted nor denied by ${who}`;
    case 'none':
      return `${prefix}${who} does not designate permitted sender hosts`;
    case 'temperror':
      return `${prefix}temporary error checking ${who}: ${verdict.problem ?? 'DNS error'}`;
    case 'permerror':
      return `${prefix}permanent error in the SPF record of ${verdict.domain}: ${verdict.problem ?? 'unusable record'}`;
  }
}

function spfResinfo(verdict: SpfVerdict): string[] {
  const property = verdict.identity === 'helo' ? `smtp.helo=${propertyValue(verdict.helo)}` : `smtp.mailfrom=${propertyValue(verdict.sender)}`;
  return [`spf=${verdict.result}`, comment(spfComment(verdict)), property];
}

function iprevResinfo(verdict: IprevVerdict): string[] {
  const note = verdict.result === 'pass' ? (verdict.confirmedNames[0] ?? '') : verdict.reason;
  return [`iprev=${verdict.result}`, comment(note), `policy.iprev=${propertyValue(verdict.ip)}`];
}

function senderIdResinfo(report: SenderIdReport): string[] {
  const elements = [`sender-id=${report.result}`];
  if (report.problem !== undefined) elements.push(comment(report.problem));
  if (report.header !== undefined && report.address !== undefined) elements.push(`header.${report.header.toLowerCase()}=${propertyValue(report.address)}`);
  return elements;
}

/** RFC 8601 Authentication-Results; "none" when no method produced a result. */
export function formatAuthenticationResults(input: AuthenticationResultsInput, options: HeaderOptions = {}): string {
  const resinfos: string[][] = [
    ...(input.spf ?? []).map(spfResinfo),
    ...(input.iprev === undefined ? [] : [iprevResinfo(input.iprev)]),
    ...(input.senderId === undefined ? [] : [senderIdResinfo(input.senderId)]),
  ];
  const id = value(input.authservId);
  if (resinfos.length === 0) return field('Authentication-Results', [`${id};`, 'none'], options);
  const separated = (kept: string[][]): string[] => {
    const elements = [`${id};`];
    kept.forEach((resinfo, index) => {
      const last = resinfo.length - 1;
      resinfo.forEach((element, position) => elements.push(position === last && index < kept.length - 1 ? `${element};` : element));
    });
    return elements;
  };
  return fittedField('Authentication-Results', resinfos, separated, options);
}

/** RFC 7208 §9.1 Received-SPF for one identity's verdict. */
export function formatReceivedSpf(verdict: SpfVerdict, receiver: string, options: HeaderOptions = {}): string {
  const pairs: Array<[string, string]> = [
    ['client-ip', verdict.ip],
    ['envelope-from', verdict.identity === 'helo' ? '' : verdict.sender],
    ['helo', verdict.helo],
    ['receiver', receiver],
    ['identity', verdict.identity],
  ];
  // §9.1: "if no mechanisms matched, substitute the word 'default'": a record was evaluated and
  // its default, neutral, decided (every other result without a term had no record to match in).
  const mechanism = verdict.mechanism ?? (verdict.result === 'neutral' ? 'default' : undefined);
  if (mechanism !== undefined) pairs.push(['mechanism', mechanism]);
  if (verdict.problem !== undefined && (verdict.result === 'permerror' || verdict.result === 'temperror')) pairs.push(['problem', clip(verdict.problem, MAX_TEXT)]);
  const keyValues = pairs.filter(([, text]) => text !== '').map(([key, text]) => `${key}=${dotAtomOrQuoted(text)};`);
  return fittedField('Received-SPF', [[verdict.result, comment(spfComment(verdict, receiver)), ...keyValues]], (kept) => kept.flat(), options);
}

/** X-Callout-Result for a callout verdict (see DESCRIPTION for why not Authentication-Results). */
export function formatCalloutResult(result: VerifyResult, receiver: string, options: HeaderOptions = {}): string {
  const pairs: Array<[string, string]> = [
    ['receiver', receiver],
    ['sender', result.address],
    ['reason', result.reason],
    ['source', result.source],
  ];
  if (result.reply !== undefined) pairs.push(['reply', `${result.reply.code}${result.reply.enhanced === undefined ? '' : ` ${result.reply.enhanced}`}`]);
  const keyValues = pairs.map(([key, text]) => `${key}=${dotAtomOrQuoted(text)};`);
  return fittedField('X-Callout-Result', [[result.verdict, comment(result.description), ...keyValues]], (kept) => kept.flat(), options);
}

