/**
 * NAME
 *   address/smtp-path - parse RFC 5321 mailboxes, reverse paths and forward paths
 *
 * DESCRIPTION
 *   parseMailbox takes `local@domain` as it appears inside the angle brackets of MAIL FROM or
 *   RCPT TO; parseReversePath and parseForwardPath take the whole bracketed path. ESMTP
 *   parameters (SIZE=, SMTPUTF8) are the caller's to split off first. The tolerant option
 *   accepts what Postfix's policy protocol hands over: the bare address without brackets (with
 *   `internalForm`, in Postfix's internal form, quotes removed: `john doe@example.org`, and one
 *   trailing dot after the domain dropped, as Postfix drops it before delivery), and
 *   for the sender the empty string meaning the null reverse path. `sizeLimits: false` accepts
 *   local parts and paths over RFC 5321's 64 and 256 octets, as a receiving server should
 *   (§4.5.3.1: "implementation techniques that impose no limits on the length of these objects
 *   should be used"; Postfix and Exim impose none): SRS, BATV and VERP senders often exceed 64.
 *
 * RFC
 *   RFC 5321 §4.1.2 (Reverse-path, Forward-path, Mailbox, Dot-string, Quoted-string), §4.1.3
 *   (address literals), §4.5.3.1 (limits); source routes (A-d-l) are accepted and ignored as
 *   Appendix C and §4.1.2 require; the special forward path `<Postmaster>` of §4.1.1.3.
 *   RFC 6531: UTF-8 local parts and U-label domains unless `utf8: false`.
 *
 * LIMITS
 *   4096 characters of input; then the limits of mailbox.ts (local part 64, domain 255, label
 *   63, path 256 octets; the first two unless `sizeLimits: false`).
 *
 * ERRORS
 *   Every failure is a ParseResult with an AddressSyntaxError naming the rule and position.
 */

import { failure, success, type ParseFailure, type ParseResult } from './errors.js';
import {
  ADDRESS_LIMITS,
  buildMailbox,
  checkInput,
  codeUnits,
  isAtext,
  isSurrogate,
  splitLabels,
  validateAddressLiteral,
  validateDomain,
  type LocalPartInput,
  type Mailbox,
  type MailboxDomain,
} from './mailbox.js';

export interface MailboxOptions {
  /** Allow RFC 6531 UTF-8 local parts and U-labels (default true). */
  utf8?: boolean;
  /** Hold the local part and the path to 64 and 256 octets (default true); see DESCRIPTION. */
  sizeLimits?: boolean;
}

export interface PathOptions extends MailboxOptions {
  /** Also accept a bare mailbox without angle brackets, and '' as the null reverse path. */
  tolerant?: boolean;
  /**
   * With tolerant: read a bare address that is no RFC 5321 mailbox as Postfix's internal form,
   * quotes removed, as its policy protocol hands it over (parseInternalForm), and without one
   * trailing dot after the domain, as Postfix delivers it (withoutRootDot). Not for addresses
   * people type, which are in the external form: there `a..b@x` is a mistake, not `"a..b"@x`.
   */
  internalForm?: boolean;
}

export type ReversePath = { kind: 'null' } | { kind: 'mailbox'; mailbox: Mailbox };

export type ForwardPath = { kind: 'postmaster' } | { kind: 'mailbox'; mailbox: Mailbox };

interface Scanned<T> {
  value: T;
  /** Index just past what was consumed. */
  end: number;
}

function scanDotString(input: string, start: number): ParseResult<Scanned<LocalPartInput>> {
  let i = start;
  while (true) {
    const atomStart = i;
    while (i < input.length) {
      const codePoint = input.codePointAt(i) ?? 0;
      if (!isAtext(codePoint)) break;
      i += codeUnits(codePoint);
    }
    if (i === atomStart) {
      if (input[i] === '.') return failure('empty-atom', i, 'leading or double dot in local part');
      if (i < input.length && input[i] !== '@') return failure('bad-character', i, 'character not allowed in a local part');
      if (i === start) return failure('empty-local-part', start, 'empty local part');
      return failure('empty-atom', i - 1, 'trailing dot in local part');
    }
    if (input[i] !== '.') return success({ value: { value: input.slice(start, i), position: start }, end: i });
    i += 1;
  }
}

function scanQuotedString(input: string, start: number): ParseResult<Scanned<LocalPartInput>> {
  let value = '';
  let i = start + 1;
  while (i < input.length) {
    const codePoint = input.codePointAt(i) ?? 0;
    if (codePoint === 0x22) return success({ value: { value, position: start }, end: i + 1 });
    if (codePoint === 0x5c) {
      const escaped = input.charCodeAt(i + 1);
      if (Number.isNaN(escaped)) break;
      if (escaped < 0x20 || escaped > 0x7e) return failure('bad-quoted-pair', i, 'invalid quoted-pair');
      value += input.charAt(i + 1);
      i += 2;
    } else if (codePoint < 0x20 || codePoint === 0x7f || isSurrogate(codePoint)) {
      return failure('bad-character', i, 'character not allowed in a quoted string');
    } else {
      value += String.fromCodePoint(codePoint);
      i += codeUnits(codePoint);
    }
  }
  return failure('unbalanced-quote', start, 'unbalanced quote');
}

/** What to say about the character where a scan stopped unexpectedly. */
function unexpectedAt(input: string, position: number, expected: 'missing-at' | 'missing-angle-bracket'): ParseFailure {
  if (position >= input.length) {
    return failure(expected, position, expected === 'missing-at' ? "missing '@'" : "missing '>'");
  }
  return failure('bad-character', position, 'character not allowed here');
}

/**
 * A Mailbox from `start`. Inside a path the domain ends at '>', otherwise at the end of input;
 * the caller checks what follows `end`.
 */
function scanMailbox(input: string, start: number, inPath: boolean, sizeLimits: boolean): ParseResult<Scanned<Mailbox>> {
  const local = input[start] === '"' ? scanQuotedString(input, start) : scanDotString(input, start);
  if (!local.ok) return local;
  const at = local.value.end;
  if (input[at] !== '@') {
    if (inPath && input[at] === '>') return failure('missing-at', at, "missing '@'");
    return unexpectedAt(input, at, 'missing-at');
  }
  return scanDomain(input, local.value.value, at, inPath, sizeLimits);
}

/** The domain after the '@' at `at`, joined to a local part already read. */
function scanDomain(input: string, local: LocalPartInput, at: number, inPath: boolean, sizeLimits: boolean): ParseResult<Scanned<Mailbox>> {
  const domainStart = at + 1;
  let domain: ParseResult<MailboxDomain>;
  let end: number;
  if (input[domainStart] === '[') {
    const close = input.indexOf(']', domainStart);
    if (close < 0) return failure('bad-address-literal', domainStart, 'unterminated address literal');
    domain = validateAddressLiteral(input.slice(domainStart + 1, close), domainStart);
    end = close + 1;
  } else {
    const bracket = inPath ? input.indexOf('>', domainStart) : -1;
    end = bracket < 0 ? input.length : bracket;
    domain = validateDomain(splitLabels(input.slice(domainStart, end), domainStart), domainStart);
  }
  if (!domain.ok) return domain;
  const mailbox = buildMailbox(local, domain.value, 0, sizeLimits);
  if (!mailbox.ok) return mailbox;
  return success({ value: mailbox.value, end });
}

/**
 * Postfix's internal form, which its policy protocol hands over: smtpd removes the quotes
 * (smtpd.c extract_addr), so `<"john doe"@example.org>` arrives as `john doe@example.org` and
 * `<"a@b"@example.org>` as `a@b@example.org`. A tolerant bare address that is no RFC 5321
 * mailbox is therefore read again as the local part up to the last '@' and the domain after it;
 * buildMailbox quotes the local part back, so RCPT TO names the mailbox the client gave.
 * Undefined for a leading '@' (a source route, not a local part), a local part that no
 * Quoted-string holds, or a domain followed by more: the caller then reports the RFC 5321
 * error. Once the local part is one this form holds, the fault is in what follows it, a missing
 * '@' or a bad domain, and that is reported: the RFC 5321 reading blamed a character that is
 * no fault here (`a b` and `a b@` were "character not allowed here at 1", the space of
 * `john doe@example.org`). So is a `not-utf8` failure, true of either reading
 * (`john doe\xff@example.org` is refused for the byte, not the space).
 */
function parseInternalForm(input: string, sizeLimits: boolean): ParseResult<Mailbox> | undefined {
  if (input.startsWith('@')) return undefined;
  const at = input.lastIndexOf('@');
  const localEnd = at < 0 ? input.length : at;
  for (let i = 0; i < localEnd; ) {
    const codePoint = input.codePointAt(i) ?? 0;
    // Only what a Quoted-string can hold (scanQuotedString), so that the quoted form parses back.
    if (codePoint < 0x20 || codePoint === 0x7f || isSurrogate(codePoint)) return undefined;
    i += codeUnits(codePoint);
  }
  if (at < 0) return failure('missing-at', input.length, "missing '@'");
  const scanned = scanDomain(input, { value: input.slice(0, at), position: 0 }, at, false, sizeLimits);
  if (!scanned.ok) return scanned;
  return scanned.value.end === input.length ? success(scanned.value.value) : undefined;
}

/**
 * `bob@example.org.` as `bob@example.org`: Postfix's smtpd takes `RCPT TO:<bob@example.org.>`
 * and hands it to the policy service as written, and trivial-rewrite then drops the dot and
 * delivers to bob@example.org (rewrite.c: "Strip trailing dot at end of domain, but not dot-dot
 * or @-dot"). Read as written, the address failed to parse and every check of it was skipped:
 * a recipient with the dot passed recipient-callforward unverified.
 */
function withoutRootDot(input: string): string {
  if (!input.endsWith('.') || !input.includes('@')) return input;
  const before = input.at(-2);
  return before === '.' || before === '@' ? input : input.slice(0, -1);
}

/** Skips an RFC 5321 A-d-l and its colon: `@a.example,@b.example:`. */
function skipSourceRoute(input: string, start: number): ParseResult<number> {
  let i = start;
  while (true) {
    if (input[i] !== '@') return failure('bad-source-route', i, "expected '@' in source route");
    const domainStart = i + 1;
    let end = domainStart;
    while (end < input.length && !',:>'.includes(input[end] ?? '')) end += 1;
    const domain = validateDomain(splitLabels(input.slice(domainStart, end), domainStart), domainStart);
    if (!domain.ok) return domain;
    if (input[end] === ':') return success(end + 1);
    if (input[end] !== ',') return failure('bad-source-route', end, "expected ',' or ':' in source route");
    i = end + 1;
  }
}

function expectEnd(input: string, position: number): ParseResult<true> {
  return position === input.length
    ? success(true)
    : failure('trailing-characters', position, 'unexpected characters after the address');
}

export function parseMailbox(input: string, options: MailboxOptions = {}): ParseResult<Mailbox> {
  const checked = checkInput(input, ADDRESS_LIMITS.input, options.utf8 ?? true);
  if (!checked.ok) return checked;
  if (input === '') return failure('empty-input', 0, 'empty address');
  const scanned = scanMailbox(input, 0, false, options.sizeLimits ?? true);
  if (!scanned.ok) return scanned;
  const ended = expectEnd(input, scanned.value.end);
  return ended.ok ? success(scanned.value.value) : ended;
}

/** `<>`, `<mailbox>` or `<A-d-l:mailbox>`; the input has passed checkInput and starts with '<'. */
function parseBracketedPath(input: string, sizeLimits: boolean): ParseResult<ReversePath> {
  if (input[1] === '>') {
    const ended = expectEnd(input, 2);
    return ended.ok ? success({ kind: 'null' }) : ended;
  }
  let start = 1;
  if (input[1] === '@') {
    const routeEnd = skipSourceRoute(input, 1);
    if (!routeEnd.ok) return routeEnd;
    start = routeEnd.value;
  }
  const scanned = scanMailbox(input, start, true, sizeLimits);
  if (!scanned.ok) return scanned;
  const { end } = scanned.value;
  if (input[end] !== '>') return unexpectedAt(input, end, 'missing-angle-bracket');
  const ended = expectEnd(input, end + 1);
  return ended.ok ? success({ kind: 'mailbox', mailbox: scanned.value.value }) : ended;
}

function parsePath(input: string, options: PathOptions): ParseResult<ReversePath> {
  const checked = checkInput(input, ADDRESS_LIMITS.input, options.utf8 ?? true);
  if (!checked.ok) return checked;
  if (input.startsWith('<')) return parseBracketedPath(input, options.sizeLimits ?? true);
  if (!options.tolerant) return failure('missing-angle-bracket', 0, "missing '<'");
  const bare = options.internalForm ? withoutRootDot(input) : input;
  const mailbox = parseMailbox(bare, options);
  if (mailbox.ok) return success({ kind: 'mailbox', mailbox: mailbox.value });
  const internal = options.internalForm ? parseInternalForm(bare, options.sizeLimits ?? true) : undefined;
  if (internal === undefined) return mailbox;
  return internal.ok ? success({ kind: 'mailbox', mailbox: internal.value }) : internal;
}

/** The argument of MAIL FROM: `<>` is the null reverse path (bounces, and callout's own probes). */
export function parseReversePath(input: string, options: PathOptions = {}): ParseResult<ReversePath> {
  if (options.tolerant && input === '') return success({ kind: 'null' });
  return parsePath(input, options);
}

/** The argument of RCPT TO: never null; `<Postmaster>` alone names the server's postmaster. */
export function parseForwardPath(input: string, options: PathOptions = {}): ParseResult<ForwardPath> {
  const path = parsePath(input, options);
  if (path.ok) {
    return path.value.kind === 'null' ? failure('null-forward-path', 0, 'null path is not a forward path') : success(path.value);
  }
  if (/^<postmaster>$/i.test(input) || (options.tolerant && /^postmaster$/i.test(input))) {
    return success({ kind: 'postmaster' });
  }
  return path;
}
