/**
 * NAME
 *   checks/spf/macro - SPF macro-strings: parsing, expansion, and the names they make
 *
 * DESCRIPTION
 *   A macro-string is parsed once, with the record, into literal and macro tokens, so a syntax
 *   error anywhere in a record is found before any term is evaluated (RFC 7208 §4.6). Expansion
 *   is then a pure function of a MacroContext; the one letter that needs DNS, %{p}, is resolved
 *   by the evaluator beforehand and passed in.
 *
 * RFC
 *   RFC 7208 §7.1 (syntax: "%{" letter *DIGIT ["r"] *delimiter "}", "%%", "%_", "%-";
 *   domain-spec = macro-string domain-end), §7.2 (letters s l o d i p v h, and c r t only in
 *   explanation text), §7.3 (transformers, upper-case letters URL-escaped, names longer than
 *   253 characters truncated from the left by whole labels), §7.4 (explanation strings may hold
 *   spaces). %{i} of an IPv6 client gives upper-case nibbles, as the OpenSPF suite expects
 *   (DNS does not care; only explanation text shows it). DIGIT must be non-zero.
 *
 * LIMITS
 *   A transformer number may have any number of digits (§7.1: *DIGIT); one larger than the
 *   number of parts means all of them (§7.3), so a long one costs nothing. Input length is
 *   bounded by the caller (records, explanations); so is the output, when the caller keeps it
 *   (an explanation: each macro may repeat the whole sender). A domain-spec's expansion is
 *   bounded here (expandDomainSpec).
 *
 * ERRORS
 *   Syntax errors are returned as values naming the problem; nothing here throws.
 */

import { MAX_NAME_LENGTH } from '../../dns/names.js';

export { MAX_NAME_LENGTH };

export type MacroLetter = 's' | 'l' | 'o' | 'd' | 'i' | 'p' | 'h' | 'v' | 'c' | 'r' | 't';

export type MacroToken =
  | { kind: 'literal'; text: string }
  | { kind: 'macro'; letter: MacroLetter; escape: boolean; parts: number | undefined; reverse: boolean; delimiters: string };

export type MacroString = readonly MacroToken[];

export type MacroParse = { ok: true; value: MacroString } | { ok: false; problem: string };

/** Values of the letters for one expansion; %{p} is looked up only when usesValidatedName says so. */
export interface MacroContext {
  sender: string;
  localPart: string;
  senderDomain: string;
  domain: string;
  /** %{i}: dotted quad, or 32 dot-separated nibbles for IPv6. */
  ipDotted: string;
  /** %{c}: dotted quad or RFC 5952 text. */
  ipReadable: string;
  ipVersion: 'in-addr' | 'ip6';
  helo: string;
  receiver: string;
  nowSeconds: number;
  validatedName?: string;
}

const DOMAIN_LETTERS = new Set<string>(['s', 'l', 'o', 'd', 'i', 'p', 'h', 'v']);
const EXPLANATION_ONLY = new Set<string>(['c', 'r', 't']);
const DELIMITERS = new Set<string>(['.', '-', '+', ',', '/', '_', '=']);
const TOPLABEL = /^(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])$/;
const MAX_LABEL_LENGTH = 63;

/**
 * Parses a macro-string. `explanation` allows the letters c, r, t and spaces (an
 * explain-string, §6.2); otherwise only visible ASCII other than '%' may appear literally.
 */
export function parseMacroString(text: string, options: { explanation: boolean }): MacroParse {
  const tokens: MacroToken[] = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const code = text.charCodeAt(i);
    const ch = text[i] as string;
    if (ch !== '%') {
      const visible = code >= 0x21 && code <= 0x7e;
      if (!visible && !(options.explanation && code === 0x20)) {
        return { ok: false, problem: `character 0x${code.toString(16).padStart(2, '0')} is not allowed in a macro-string` };
      }
      literal += ch;
      i += 1;
      continue;
    }
    const next = text[i + 1];
    if (next === '%' || next === '_' || next === '-') {
      literal += next === '%' ? '%' : next === '_' ? ' ' : '%20';
      i += 2;
      continue;
    }
    if (next !== '{') return { ok: false, problem: `'%' must be followed by '{', '%', '_' or '-' in ${JSON.stringify(text)}` };
    const close = text.indexOf('}', i + 2);
    if (close < 0) return { ok: false, problem: `unterminated macro in ${JSON.stringify(text)}` };
    const macro = parseMacroBody(text.slice(i + 2, close), options.explanation);
    if (!macro.ok) return macro;
    if (literal !== '') tokens.push({ kind: 'literal', text: literal });
    literal = '';
    tokens.push(macro.value);
    i = close + 1;
  }
  if (literal !== '') tokens.push({ kind: 'literal', text: literal });
  return { ok: true, value: tokens };
}

function parseMacroBody(body: string, explanation: boolean): { ok: true; value: MacroToken } | { ok: false; problem: string } {
  const match = /^([A-Za-z])([0-9]*)([rR]?)(.*)$/s.exec(body);
  const letterText = match?.[1];
  if (match === null || letterText === undefined) return { ok: false, problem: `empty or malformed macro %{${body}}` };
  const letter = letterText.toLowerCase();
  if (!DOMAIN_LETTERS.has(letter) && !EXPLANATION_ONLY.has(letter)) return { ok: false, problem: `unknown macro letter in %{${body}}` };
  if (EXPLANATION_ONLY.has(letter) && !explanation) return { ok: false, problem: `%{${body}}: the c, r and t macros are allowed only in explanation text` };
  const digits = match[2] ?? '';
  const parts = digits === '' ? undefined : Number(digits);
  if (parts === 0) return { ok: false, problem: `transformer number must not be zero in %{${body}}` };
  const delimiters = match[4] ?? '';
  for (const ch of delimiters) {
    if (!DELIMITERS.has(ch)) return { ok: false, problem: `invalid delimiter ${JSON.stringify(ch)} in %{${body}}` };
  }
  return {
    ok: true,
    value: { kind: 'macro', letter: letter as MacroLetter, escape: letterText !== letter, parts, reverse: (match[3] ?? '') !== '', delimiters },
  };
}

/**
 * Parses a domain-spec: a macro-string that ends in a macro or in "." toplabel with an
 * optional final dot (§7.1), so "a:museum" and "a:example.-com" are syntax errors.
 */
export function parseDomainSpec(text: string): MacroParse {
  const parsed = parseMacroString(text, { explanation: false });
  if (!parsed.ok) return parsed;
  const last = parsed.value[parsed.value.length - 1];
  if (last === undefined) return { ok: false, problem: 'empty domain-spec' };
  if (last.kind === 'macro' || endsWithMacroEscape(text)) return parsed;
  const withoutDot = last.text.endsWith('.') ? last.text.slice(0, -1) : last.text;
  const dot = withoutDot.lastIndexOf('.');
  if (dot < 0 || !TOPLABEL.test(withoutDot.slice(dot + 1))) {
    return { ok: false, problem: `domain-spec ${JSON.stringify(text)} does not end in a macro or a valid top-level label` };
  }
  return parsed;
}

/** "%%", "%_" and "%-" are macro-expand too (§7.1), though they parse to literal text. */
function endsWithMacroEscape(text: string): boolean {
  let percents = 0;
  for (let i = text.length - 2; i >= 0 && text[i] === '%'; i--) percents++;
  return percents % 2 === 1 && ['%', '_', '-'].includes(text[text.length - 1] ?? '');
}

export function usesValidatedName(tokens: MacroString): boolean {
  return tokens.some((token) => token.kind === 'macro' && token.letter === 'p');
}

/** The expansion, cut to maxLength characters; expansion stops once it is that long. */
export function expandMacroString(tokens: MacroString, context: MacroContext, maxLength = Infinity): string {
  let out = '';
  for (const token of tokens) {
    if (out.length >= maxLength) break;
    out += token.kind === 'literal' ? token.text : expandMacro(token, context);
  }
  return out.length > maxLength ? out.slice(0, maxLength) : out;
}

/**
 * The expansion of a domain-spec, of which only the last MAX_NAME_LENGTH + 2 characters are
 * kept: all that targetName's cut from the left (§7.3) reads (a final dot, 253 characters and
 * the dot before them). Tokens are expanded from the right and expansion stops there, so a
 * record of a thousand %{h} costs what one name does, not megabytes kept in the problem text.
 */
export function expandDomainSpec(tokens: MacroString, context: MacroContext): string {
  const keep = MAX_NAME_LENGTH + 2;
  let out = '';
  for (let i = tokens.length - 1; i >= 0 && out.length < keep; i--) {
    const token = tokens[i] as MacroToken;
    out = (token.kind === 'literal' ? token.text : expandMacro(token, context)) + out;
  }
  return out.length > keep ? out.slice(out.length - keep) : out;
}

function letterValue(letter: MacroLetter, context: MacroContext): string {
  switch (letter) {
    case 's':
      return context.sender;
    case 'l':
      return context.localPart;
    case 'o':
      return context.senderDomain;
    case 'd':
      return context.domain;
    case 'i':
      return context.ipDotted;
    case 'p':
      return context.validatedName ?? 'unknown';
    case 'v':
      return context.ipVersion;
    case 'h':
      return context.helo;
    case 'c':
      return context.ipReadable;
    case 'r':
      return context.receiver;
    case 't':
      return String(context.nowSeconds);
  }
}

function expandMacro(token: Extract<MacroToken, { kind: 'macro' }>, context: MacroContext): string {
  let value = letterValue(token.letter, context);
  if (token.reverse || token.parts !== undefined || token.delimiters !== '') {
    const delimiters = token.delimiters === '' ? '.' : token.delimiters;
    let parts = splitOn(value, delimiters);
    if (token.reverse) parts = parts.reverse();
    if (token.parts !== undefined && token.parts < parts.length) parts = parts.slice(parts.length - token.parts);
    value = parts.join('.');
  }
  return token.escape ? urlEscape(value) : value;
}

function splitOn(value: string, delimiters: string): string[] {
  const parts: string[] = [];
  let current = '';
  for (const ch of value) {
    if (delimiters.includes(ch)) {
      parts.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  parts.push(current);
  return parts;
}

/** §7.3: everything outside the URI unreserved set (RFC 3986 §2.3) is percent-encoded. */
function urlEscape(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9\-._~]/.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export type TargetName = { ok: true; name: string } | { ok: false; problem: string };

/**
 * The DNS name an expanded domain-spec stands for: without its final dot, truncated from the
 * left to 253 characters (§7.3), and usable as a query name (labels of 1 to 63 octets).
 */
export function targetName(expanded: string): TargetName {
  let name = expanded.endsWith('.') ? expanded.slice(0, -1) : expanded;
  while (name.length > MAX_NAME_LENGTH && name.includes('.')) name = name.slice(name.indexOf('.') + 1);
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) return { ok: false, problem: `${JSON.stringify(expanded)} is not a usable domain name` };
  for (const label of name.split('.')) {
    if (label.length === 0 || label.length > MAX_LABEL_LENGTH) {
      return { ok: false, problem: `${JSON.stringify(name)} has an empty label or one longer than ${MAX_LABEL_LENGTH} characters` };
    }
  }
  return { ok: true, name };
}
