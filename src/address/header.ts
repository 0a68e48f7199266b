/**
 * NAME
 *   address/header - parse RFC 5322 address headers (From, Sender, Reply-To, To, Cc)
 *
 * DESCRIPTION
 *   parseAddressList reads an address-list, parseHeaderMailbox exactly one mailbox. The value is
 *   the field body after the colon, folded or not. Each mailbox becomes a Mailbox as the SMTP
 *   parser would give it, so header and envelope addresses compare directly; a domain must
 *   therefore be a usable RFC 5321 domain or IP literal.
 *   Groups are flattened: each member carries the group's display name in `group`, and an empty
 *   group (`undisclosed-recipients:;`) contributes nothing. Display names keep encoded words
 *   (RFC 2047) as they are; words are joined by one space where the header had white space or
 *   comments between them. `groups: false` reads a mailbox-list (RFC 5322 §3.6.2 From, §3.6.6
 *   Resent-From), in which any group, even an empty one, is an error. `sizeLimits: false` lifts
 *   RFC 5321's 64 and 256 octet limits, which bind SMTP, not headers: a mailing list's VERP
 *   Sender is often longer.
 *
 * RFC
 *   RFC 5322 §3.2 (CFWS, nested comments, quoted-pairs), §3.4 (address-list, name-addr, group,
 *   addr-spec), §4.4 (obs-phrase with dots, obs-local-part and obs-domain with CFWS around dots,
 *   obs-route `<@a,@b:user@host>`, obs-addr-list empty elements); RFC 6532 UTF-8 unless
 *   `utf8: false`. obs-qp (quoted control characters) is not accepted.
 *
 * LIMITS
 *   65536 characters of input, comment nesting depth 100, and per mailbox the limits of
 *   mailbox.ts (local part and path only with sizeLimits, the default). Parsing is a single
 *   pass; only a group recurses, once, for its members.
 *
 * ERRORS
 *   Every failure is a ParseResult with an AddressSyntaxError naming the rule and position.
 */

import { failure, success, type ParseFailure, type ParseResult } from './errors.js';
import {
  buildMailbox,
  checkInput,
  codeUnits,
  isAtext,
  isSurrogate,
  validateAddressLiteral,
  validateDomain,
  type DomainLabel,
  type Mailbox,
  type MailboxDomain,
} from './mailbox.js';

export const HEADER_LIMITS = {
  input: 65536,
  commentDepth: 100,
} as const;

export interface HeaderAddress {
  displayName?: string;
  /** Display name of the group the mailbox was listed in. */
  group?: string;
  mailbox: Mailbox;
}

export interface HeaderOptions {
  /** Allow RFC 6532 UTF-8 in the header (default true). */
  utf8?: boolean;
  /** Hold each mailbox to RFC 5321's 64-octet local part and 256-octet path (default true). */
  sizeLimits?: boolean;
  /** parseAddressList: accept groups (default true); false reads a mailbox-list. */
  groups?: boolean;
}

interface Cursor {
  readonly input: string;
  position: number;
  readonly sizeLimits: boolean;
}

interface PhraseToken {
  kind: 'word' | 'dot';
  value: string;
  position: number;
  /** White space or a comment came before it. */
  spaced: boolean;
}

function isWsp(ch: string | undefined): boolean {
  return ch === ' ' || ch === '\t';
}

/** Length of the folding white space at `i` (a CRLF counts only when a WSP follows), or 0. */
function fwsLength(input: string, i: number): number {
  if (isWsp(input[i])) return 1;
  if (input[i] === '\r' && input[i + 1] === '\n' && isWsp(input[i + 2])) return 3;
  return 0;
}

/**
 * Code units taken by the quoted-pair at `i`: the character after the backslash must be VCHAR,
 * WSP or (RFC 6532) non-ASCII. 'end' when the input ends after the backslash, which the caller
 * reports as its own unterminated quote or comment.
 */
function quotedPairLength(input: string, i: number): number | 'end' | 'invalid' {
  const codePoint = input.codePointAt(i + 1);
  if (codePoint === undefined) return 'end';
  if (codePoint === 0x09 || (codePoint >= 0x20 && codePoint <= 0x7e) || (codePoint >= 0x80 && !isSurrogate(codePoint))) {
    return 1 + codeUnits(codePoint);
  }
  return 'invalid';
}

function skipComment(cursor: Cursor): ParseFailure | undefined {
  const { input } = cursor;
  const open = cursor.position;
  let depth = 0;
  let i = open;
  while (i < input.length) {
    const codePoint = input.codePointAt(i) ?? 0;
    if (codePoint === 0x28) {
      depth += 1;
      if (depth > HEADER_LIMITS.commentDepth) {
        return failure('comment-too-deep', i, `comments nested deeper than ${HEADER_LIMITS.commentDepth}`);
      }
      i += 1;
    } else if (codePoint === 0x29) {
      depth -= 1;
      i += 1;
      if (depth === 0) {
        cursor.position = i;
        return undefined;
      }
    } else if (codePoint === 0x5c) {
      const length = quotedPairLength(input, i);
      if (length === 'end') break;
      if (length === 'invalid') return failure('bad-quoted-pair', i, 'invalid quoted-pair');
      i += length;
    } else if (fwsLength(input, i) > 0) {
      i += fwsLength(input, i);
    } else if (codePoint < 0x21 || codePoint === 0x7f || isSurrogate(codePoint)) {
      return failure('bad-character', i, 'character not allowed in a comment');
    } else {
      i += codeUnits(codePoint);
    }
  }
  return failure('unbalanced-comment', open, 'unbalanced comment');
}

function skipCfws(cursor: Cursor): ParseFailure | undefined {
  while (cursor.position < cursor.input.length) {
    const fws = fwsLength(cursor.input, cursor.position);
    if (fws > 0) {
      cursor.position += fws;
    } else if (cursor.input[cursor.position] === '(') {
      const error = skipComment(cursor);
      if (error) return error;
    } else {
      return undefined;
    }
  }
  return undefined;
}

function readAtom(cursor: Cursor): string {
  const { input } = cursor;
  const start = cursor.position;
  while (cursor.position < input.length) {
    const codePoint = input.codePointAt(cursor.position) ?? 0;
    if (!isAtext(codePoint)) break;
    cursor.position += codeUnits(codePoint);
  }
  return input.slice(start, cursor.position);
}

/** RFC 5322 quoted-string at the cursor; folding CRLFs are removed, white space kept. */
function readQuotedString(cursor: Cursor): ParseResult<string> {
  const { input } = cursor;
  const open = cursor.position;
  let value = '';
  let i = open + 1;
  while (i < input.length) {
    const codePoint = input.codePointAt(i) ?? 0;
    if (codePoint === 0x22) {
      cursor.position = i + 1;
      return success(value);
    }
    if (codePoint === 0x5c) {
      const length = quotedPairLength(input, i);
      if (length === 'end') break;
      if (length === 'invalid') return failure('bad-quoted-pair', i, 'invalid quoted-pair');
      value += input.slice(i + 1, i + length);
      i += length;
    } else if (input[i] === '\r' && fwsLength(input, i) === 3) {
      i += 2;
    } else if (codePoint === 0x09 || (codePoint >= 0x20 && codePoint !== 0x7f && !isSurrogate(codePoint))) {
      value += String.fromCodePoint(codePoint);
      i += codeUnits(codePoint);
    } else {
      return failure('bad-character', i, 'character not allowed in a quoted string');
    }
  }
  return failure('unbalanced-quote', open, 'unbalanced quote');
}

/** Words and dots up to the first character that can end a phrase or a local part. */
function readPhrase(cursor: Cursor): ParseResult<PhraseToken[]> {
  const tokens: PhraseToken[] = [];
  while (true) {
    const before = cursor.position;
    const error = skipCfws(cursor);
    if (error) return error;
    const spaced = cursor.position > before;
    const position = cursor.position;
    const ch = cursor.input[position];
    if (ch === '.') {
      cursor.position += 1;
      tokens.push({ kind: 'dot', value: '.', position, spaced });
    } else if (ch === '"') {
      const quoted = readQuotedString(cursor);
      if (!quoted.ok) return quoted;
      tokens.push({ kind: 'word', value: quoted.value, position, spaced });
    } else {
      const atom = readAtom(cursor);
      if (atom === '') return success(tokens);
      tokens.push({ kind: 'word', value: atom, position, spaced });
    }
  }
}

function displayName(tokens: PhraseToken[]): string {
  return tokens.map((token, i) => (i > 0 && token.spaced ? ` ${token.value}` : token.value)).join('');
}

/** local-part = dot-atom / quoted-string / obs-local-part, i.e. word *("." word). */
function localPartOf(tokens: PhraseToken[], at: number): ParseResult<{ value: string; position: number }> {
  const words: string[] = [];
  for (const [i, token] of tokens.entries()) {
    const wordExpected = i % 2 === 0;
    if (token.kind === 'dot' && wordExpected) {
      return failure('empty-atom', token.position, 'leading or double dot in local part');
    }
    if (token.kind === 'word' && !wordExpected) {
      return failure('bad-local-part', token.position, 'words of a local part must be separated by dots');
    }
    if (token.kind === 'word') words.push(token.value);
  }
  const last = tokens[tokens.length - 1];
  const first = tokens[0];
  if (last === undefined || first === undefined) return failure('empty-local-part', at, 'empty local part');
  if (last.kind === 'dot') return failure('empty-atom', last.position, 'trailing dot in local part');
  return success({ value: words.join('.'), position: first.position });
}

/** domain = dot-atom / domain-literal / obs-domain, the cursor just past '@'. */
function readDomain(cursor: Cursor): ParseResult<MailboxDomain> {
  const { input } = cursor;
  const leading = skipCfws(cursor);
  if (leading) return leading;
  const start = cursor.position;
  if (input[start] === '[') {
    let content = '';
    let i = start + 1;
    while (i < input.length && input[i] !== ']') {
      const fws = fwsLength(input, i);
      if (fws === 0) content += input.charAt(i);
      i += Math.max(fws, 1);
    }
    if (i >= input.length) return failure('bad-address-literal', start, 'unterminated address literal');
    cursor.position = i + 1;
    const literal = validateAddressLiteral(content, start);
    if (!literal.ok) return literal;
    const trailing = skipCfws(cursor);
    return trailing ?? literal;
  }
  const labels: DomainLabel[] = [];
  while (true) {
    const position = cursor.position;
    labels.push({ text: readAtom(cursor), position });
    const error = skipCfws(cursor);
    if (error) return error;
    if (input[cursor.position] !== '.') break;
    cursor.position += 1;
    const afterDot = skipCfws(cursor);
    if (afterDot) return afterDot;
  }
  return validateDomain(labels, start);
}

/** addr-spec whose local-part tokens have been read; the cursor is on '@'. */
function readAddrSpec(cursor: Cursor, localTokens: PhraseToken[]): ParseResult<Mailbox> {
  const local = localPartOf(localTokens, cursor.position);
  if (!local.ok) return local;
  cursor.position += 1;
  const domain = readDomain(cursor);
  if (!domain.ok) return domain;
  return buildMailbox(local.value, domain.value, local.value.position, cursor.sizeLimits);
}

/** RFC 5322 obs-route, `@a,@b:` with CFWS and empty elements; the domains must be valid. */
function skipObsRoute(cursor: Cursor): ParseFailure | undefined {
  const { input } = cursor;
  while (true) {
    const error = skipCfws(cursor);
    if (error) return error;
    const ch = input[cursor.position];
    if (ch === ':') {
      cursor.position += 1;
      return undefined;
    }
    if (ch === ',') {
      cursor.position += 1;
    } else if (ch === '@') {
      cursor.position += 1;
      const domain = readDomain(cursor);
      if (!domain.ok) return domain;
    } else {
      return failure('bad-source-route', cursor.position, "expected '@', ',' or ':' in route");
    }
  }
}

/** angle-addr / obs-angle-addr, the cursor on '<'. */
function readAngleAddr(cursor: Cursor): ParseResult<Mailbox> {
  const { input } = cursor;
  cursor.position += 1;
  const error = skipCfws(cursor);
  if (error) return error;
  if (input[cursor.position] === '@' || input[cursor.position] === ',') {
    const routeError = skipObsRoute(cursor);
    if (routeError) return routeError;
  }
  const localTokens = readPhrase(cursor);
  if (!localTokens.ok) return localTokens;
  if (input[cursor.position] !== '@') {
    if (cursor.position >= input.length || input[cursor.position] === '>') {
      return localTokens.value.length === 0
        ? failure('empty-local-part', cursor.position, 'empty local part')
        : failure('missing-at', cursor.position, "missing '@'");
    }
    return failure('bad-character', cursor.position, 'character not allowed here');
  }
  const mailbox = readAddrSpec(cursor, localTokens.value);
  if (!mailbox.ok) return mailbox;
  if (input[cursor.position] !== '>') {
    return cursor.position >= input.length
      ? failure('missing-angle-bracket', cursor.position, "missing '>'")
      : failure('bad-character', cursor.position, 'character not allowed here');
  }
  cursor.position += 1;
  return mailbox;
}

/** One mailbox, or with allowGroup a group; leaves the cursor after any trailing CFWS. */
function readAddress(cursor: Cursor, allowGroup: boolean): ParseResult<HeaderAddress[]> {
  const { input } = cursor;
  const phrase = readPhrase(cursor);
  if (!phrase.ok) return phrase;
  const tokens = phrase.value;
  const position = cursor.position;
  const ch = input[position];
  let result: ParseResult<HeaderAddress[]>;
  if (ch === '<') {
    const mailbox = readAngleAddr(cursor);
    if (!mailbox.ok) return mailbox;
    result = success([tokens.length > 0 ? { displayName: displayName(tokens), mailbox: mailbox.value } : { mailbox: mailbox.value }]);
  } else if (ch === '@') {
    const mailbox = readAddrSpec(cursor, tokens);
    if (!mailbox.ok) return mailbox;
    result = success([{ mailbox: mailbox.value }]);
  } else if (ch === ':') {
    if (!allowGroup) return failure('group-not-allowed', position, 'a group is not allowed here');
    if (tokens.length === 0) return failure('empty-group-name', position, 'group without a display name');
    result = readGroupMembers(cursor, displayName(tokens));
  } else if (tokens.length > 0 && (ch === undefined || ch === ',' || ch === ';')) {
    return failure('missing-at', position, "missing '@'");
  } else if (ch === undefined) {
    return failure('no-address', position, 'no address');
  } else {
    return failure('bad-character', position, 'character not allowed here');
  }
  const error = skipCfws(cursor);
  return error ?? result;
}

/** group-list up to and including ';', the cursor on ':'. */
function readGroupMembers(cursor: Cursor, group: string): ParseResult<HeaderAddress[]> {
  const { input } = cursor;
  const colon = cursor.position;
  cursor.position += 1;
  const members: HeaderAddress[] = [];
  while (true) {
    const error = skipCfws(cursor);
    if (error) return error;
    const ch = input[cursor.position];
    if (ch === undefined) return failure('unterminated-group', colon, "group without ';'");
    if (ch === ';') {
      cursor.position += 1;
      return success(members);
    }
    if (ch === ',') {
      cursor.position += 1;
      continue;
    }
    const member = readAddress(cursor, false);
    if (!member.ok) return member;
    for (const address of member.value) members.push({ ...address, group });
    const next = input[cursor.position];
    if (next !== ',' && next !== ';' && next !== undefined) {
      return failure('bad-character', cursor.position, "expected ',' or ';'");
    }
  }
}

/** An address-list (To, Cc, Bcc, Reply-To, a From with several authors). */
export function parseAddressList(headerValue: string, options: HeaderOptions = {}): ParseResult<HeaderAddress[]> {
  const checked = checkInput(headerValue, HEADER_LIMITS.input, options.utf8 ?? true);
  if (!checked.ok) return checked;
  const cursor: Cursor = { input: headerValue, position: 0, sizeLimits: options.sizeLimits ?? true };
  const addresses: HeaderAddress[] = [];
  let sawAddress = false;
  while (true) {
    const error = skipCfws(cursor);
    if (error) return error;
    const ch = headerValue[cursor.position];
    if (ch === undefined) break;
    if (ch === ',') {
      cursor.position += 1;
      continue;
    }
    const address = readAddress(cursor, options.groups ?? true);
    if (!address.ok) return address;
    addresses.push(...address.value);
    sawAddress = true;
    const next = headerValue[cursor.position];
    if (next !== ',' && next !== undefined) return failure('bad-character', cursor.position, "expected ','");
  }
  return sawAddress ? success(addresses) : failure('no-address', cursor.position, 'no address');
}

/** Exactly one mailbox (Sender, or a From with one author); a group is refused. */
export function parseHeaderMailbox(value: string, options: HeaderOptions = {}): ParseResult<HeaderAddress> {
  const checked = checkInput(value, HEADER_LIMITS.input, options.utf8 ?? true);
  if (!checked.ok) return checked;
  const cursor: Cursor = { input: value, position: 0, sizeLimits: options.sizeLimits ?? true };
  const address = readAddress(cursor, false);
  if (!address.ok) return address;
  const [mailbox] = address.value;
  if (mailbox === undefined) return failure('no-address', 0, 'no address');
  if (cursor.position < value.length) {
    return failure('trailing-characters', cursor.position, 'unexpected characters after the mailbox');
  }
  return success(mailbox);
}
