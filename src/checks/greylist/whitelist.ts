/**
 * NAME
 *   greylist/whitelist - postgrey's whitelist_clients and whitelist_recipients files
 *
 * DESCRIPTION
 *   Sites keep their postgrey lists: the same files are read with the same meaning (postgrey
 *   1.37 read_clients_whitelists / read_recipients_whitelists). In both, `#` starts a comment,
 *   blank lines are skipped and each line is one entry.
 *
 *   whitelist_clients, matched against the verified client name (Postfix's client_name, which
 *   is `unknown` unless the PTR name resolves back to the address) or the client address:
 *     /regexp/          the name matches the regular expression (case-insensitive)
 *     a.b.c.d[/len]     the IPv4 address or network
 *     a.b.c  a.b        a partial IPv4 address: the /24, the /16
 *     IPv6[/len]        an IPv6 address or network (any entry with two colons)
 *     domain.tld        the name is domain.tld or ends in .domain.tld
 *     .domain.tld       matches nothing in postgrey (access(5)'s subdomain form is not
 *                       postgrey's); reported as a problem, so a site sees it
 *     *.domain.tld      (or any name with a character other than letters, digits, `-`, `_`
 *                       and dots: a U-label, an address) matches nothing in postgrey either:
 *                       Postfix's client_name never holds one; reported
 *   whitelist_recipients, matched against the recipient:
 *     /regexp/          the recipient matches the regular expression (case-insensitive)
 *     user@domain       that address, also user+extension@domain
 *     user@             that local part (and its extensions) in any domain
 *     domain.tld        any recipient in domain.tld or a subdomain of it
 *     .domain.tld       nothing, as for clients (reported)
 *     @domain.tld       any recipient in domain.tld itself
 *
 *   Deviations from postgrey, each where postgrey's behaviour contradicts its own comment or
 *   Postfix's access(5): `a.b` whitelists the /16 (postgrey 1.37 builds a /24 from it), and
 *   `@domain` means any recipient in exactly that domain, as in access(5), where `@domain` does
 *   not reach subdomains (postgrey would match only the literal address `@domain`). Regular
 *   expressions are JavaScript's, which agree with Perl's for the constructs these lists use
 *   (classes, anchors, \d, alternation); one that does not compile is reported as a problem,
 *   as is a line postgrey warns about.
 *
 * LIMITS
 *   A line longer than 4096 characters and a regular expression longer than 1000 are refused
 *   (reported as problems); at most 100000 entries per list. Matching a name walks its labels
 *   (one set lookup per label) and then tries the regular expressions in order. A regular
 *   expression whose matching can take time exponential in the subject's length, or growing as
 *   it to a power over 2, is refused (reported, naming the shape and how to write it instead;
 *   see backtrackingProblem), and none is tried on a client name or recipient longer than 320
 *   characters (none is matched there): the client chooses the recipient, and /^(a|a)*@x$/ held
 *   the single-threaded service for 3 s on 30 characters, twice as long for each one more.
 */

import { asciiLower } from '../../address/index.js';
import { MIB, readFileLimited } from '../../core/files.js';
import { AddressSet, networkExpected, parseCidr, type Cidr } from '../../core/ip.js';
import { clientAddress as parsedClientAddress } from '../client-ip.js';

export const WHITELIST_LIMITS = { lineLength: 4096, regexLength: 1000, entries: 100_000, regexSubject: 320, regexDegree: 2 } as const;

export interface WhitelistSource {
  /** File name (or another label) used in problem reports. */
  source: string;
  text: string;
}

export interface WhitelistProblem {
  source: string;
  line: number;
  message: string;
}

interface Line {
  source: string;
  line: number;
  entry: string;
}

function* entriesOf(sources: readonly WhitelistSource[], problems: WhitelistProblem[]): Generator<Line> {
  let count = 0;
  for (const { source, text } of sources) {
    const lines = text.split('\n');
    for (const [index, raw] of lines.entries()) {
      if (raw.length > WHITELIST_LIMITS.lineLength) {
        problems.push({ source, line: index + 1, message: `line longer than ${WHITELIST_LIMITS.lineLength} characters` });
        continue;
      }
      // A CRLF file: JavaScript's `.` stops at the CR, Perl's does not, so it goes first.
      const entry = (raw.endsWith('\r') ? raw.slice(0, -1) : raw).replace(/#.*$/, '').trim();
      if (entry === '') continue;
      if (++count > WHITELIST_LIMITS.entries) {
        problems.push({ source, line: index + 1, message: `more than ${WHITELIST_LIMITS.entries} entries; the rest is ignored` });
        return;
      }
      yield { source, line: index + 1, entry };
    }
  }
}

function regexOf(line: Line, problems: WhitelistProblem[]): RegExp | undefined {
  const body = /^\/(\S+)\/$/.exec(line.entry)?.[1];
  if (body === undefined) return undefined;
  if (body.length > WHITELIST_LIMITS.regexLength) {
    problems.push({ source: line.source, line: line.line, message: `regular expression longer than ${WHITELIST_LIMITS.regexLength} characters` });
    return undefined;
  }
  const translated = perlToJavaScript(body);
  if (!translated.ok) {
    problems.push({ source: line.source, line: line.line, message: translated.message });
    return undefined;
  }
  let regex: RegExp;
  try {
    regex = new RegExp(translated.source, 'i');
  } catch (err) {
    // V8 says "Invalid regular expression: /source/i: why", quoting the entry a second time.
    const why = (err as Error).message.replace(`Invalid regular expression: /${translated.source}/i: `, '');
    problems.push({ source: line.source, line: line.line, message: `got ${JSON.stringify(line.entry)}, expected a regular expression (${why})` });
    return undefined;
  }
  const slow = backtrackingProblem(translated.source);
  if (slow === undefined) return regex;
  problems.push({ source: line.source, line: line.line, message: `regular expression ${line.entry} ${slow}` });
  return undefined;
}

const POSIX_CLASSES: Record<string, string> = {
  alpha: 'a-zA-Z',
  digit: '0-9',
  alnum: 'a-zA-Z0-9',
  upper: 'A-Z',
  lower: 'a-z',
  space: '\\s',
  xdigit: '0-9a-fA-F',
  word: '\\w',
  punct: '!-\\/:-@\\[-`{-~',
};

/**
 * The Perl syntax of postgrey's lists that JavaScript reads differently: \A, \z and \Z become
 * ^ and $, POSIX classes ([[:alpha:]]) their ranges, \x{HHHH} the \uHHHH JavaScript reads
 * without the u flag, a `]` right after a class opens (`[]a]`, `[^]a]`: a literal in Perl,
 * an empty class in JavaScript) an escaped one, and the quantifier {,n} (Perl 5.34 and later,
 * as Debian's postgrey runs on: at most n) {0,n}, which JavaScript reads as the text `{,n}`;
 * \p, \P, \h, \H, \v, \V, \K, \G, \Q, \N, \R and \X, which JavaScript would silently read as
 * letters or as another character (\v is a vertical tab there), are refused so the entry is
 * reported, not dead. (Perl's blanks inside a quantifier's braces cannot occur: an entry's
 * regular expression has no white space.)
 */
export function perlToJavaScript(body: string): { ok: true; source: string } | { ok: false; message: string } {
  let out = '';
  /** Where the current class's members start in `out` (after `[` or `[^`); -1 outside a class. */
  let classStart = -1;
  for (let i = 0; i < body.length; i += 1) {
    const c = body[i]!;
    const inClass = classStart >= 0;
    if (c === '\\' && i + 1 < body.length) {
      const next = body[i + 1]!;
      i += 1;
      if (!inClass && next === 'A') out += '^';
      else if (!inClass && (next === 'z' || next === 'Z')) out += '$';
      else if (next === 'x' && body[i + 1] === '{') {
        const hex = /^\{([0-9a-fA-F]{1,4})\}/.exec(body.slice(i + 1));
        if (!hex) return { ok: false, message: `\\x{...} is supported with 1 to 4 hex digits (up to FFFF): ${JSON.stringify(body)}` };
        out += `\\u${hex[1]!.padStart(4, '0')}`;
        i += hex[0].length;
      } else if ('pPhHvVKGQENRX'.includes(next)) return { ok: false, message: `Perl-only regular expression syntax \\${next} is not supported: ${JSON.stringify(body)}` };
      else out += `\\${next}`;
      continue;
    }
    if (inClass && c === '[' && body[i + 1] === ':') {
      const end = body.indexOf(':]', i + 2);
      const name = end < 0 ? undefined : body.slice(i + 2, end);
      const range = name === undefined ? undefined : POSIX_CLASSES[name];
      if (range === undefined) return { ok: false, message: `unknown POSIX class in regular expression: ${JSON.stringify(body)}` };
      out += range;
      i = end + 1;
      continue;
    }
    if (!inClass && c === '[') {
      out += body[i + 1] === '^' ? '[^' : '[';
      if (body[i + 1] === '^') i += 1;
      classStart = out.length;
      continue;
    }
    if (inClass && c === ']') {
      if (out.length === classStart) {
        out += '\\]';
      } else {
        out += ']';
        classStart = -1;
      }
      continue;
    }
    const upTo = !inClass && c === '{' ? /^\{,(\d+)\}/.exec(body.slice(i)) : null;
    if (upTo) {
      out += `{0,${upTo[1]!}}`;
      i += upTo[0].length - 1;
      continue;
    }
    out += c;
  }
  return { ok: true, source: out };
}

interface Item {
  /** The atom as written, without its quantifier; undefined for a group. */
  source: string | undefined;
  quantified: boolean;
  /** Whether its quantifier lets it match nothing (?, *, {0,n}). */
  optional: boolean;
  /** The group's own frame, for whether something in it can match a character. */
  group: Frame | undefined;
}

interface Frame {
  /**
   * Its parts of varying length whose backtracking multiplies (.* and .* in .*a.*a), a group
   * repeated n times counting n times its own.
   */
  degree: number;
  /** Whether a quantifier is inside. */
  quantified: boolean;
  alternation: boolean;
  items: Item[];
  /**
   * Its parts of varying length not yet ended, until the atoms after them say whether they are:
   * the last one and, while only optional groups that they cannot match follow, those before.
   */
  pending: Pending[];
}

/**
 * A part of varying length and the atoms of one character written after it ([a-z]+ and [a-z] in
 * [a-z]+[a-z]@): a character that none of them matches ends them all, at one place.
 */
interface Pending {
  part: Item;
  between: Item[];
}

const UNBOUNDED = Number.POSITIVE_INFINITY;

const newFrame = (): Frame => ({ degree: 0, quantified: false, alternation: false, items: [], pending: [] });

/** The quantifier at `at` in a JavaScript regular expression (non-Unicode mode): its length and bounds. */
function quantifierAt(source: string, at: number): { length: number; min: number; max: number } | undefined {
  const c = source[at];
  let length: number;
  let min: number;
  let max: number;
  if (c === '*' || c === '+') [length, min, max] = [1, c === '*' ? 0 : 1, UNBOUNDED];
  else if (c === '?') [length, min, max] = [1, 0, 1];
  else {
    // A brace that opens no {n}, {n,} or {n,m} is a literal there.
    const braces = c === '{' ? /^\{(\d+)(,(\d*))?\}/.exec(source.slice(at)) : null;
    if (!braces) return undefined;
    length = braces[0].length;
    min = Number(braces[1]);
    max = braces[2] === undefined ? min : braces[3] === '' ? UNBOUNDED : Number(braces[3]);
  }
  return { length: source[at + length] === '?' ? length + 1 : length, min, max };
}

/**
 * The characters an atom of literals matches, whatever its quantifier: x, \., or a class of
 * them, [._-] (no range, no negation, no \w); undefined for any other atom or a group.
 */
function literalChars(item: Item | undefined): string[] | undefined {
  const source = item?.source;
  if (source === undefined) return undefined;
  const single = /^(?:\\([^A-Za-z0-9])|([^\\.[^$]))$/.exec(source);
  if (single) return [single[1] ?? single[2]!];
  const members = /^\[(?!\^)((?:\\[^A-Za-z0-9]|[^\\\]])+)\]$/.exec(source)?.[1];
  if (members === undefined) return undefined;
  const chars = [...members.matchAll(/\\(.)|(.)/g)].map((m) => ({ ch: (m[1] ?? m[2])!, escaped: m[1] !== undefined, at: m.index }));
  // A `-` between two members makes a range.
  return chars.some(({ ch, escaped, at }) => ch === '-' && !escaped && at > 0 && at < members.length - 1) ? undefined : chars.map(({ ch }) => ch);
}

/** The characters an item must start with: its literals, or a group's first item's when that is not optional. */
function startChars(item: Item | undefined): string[] | undefined {
  if (item?.group === undefined) return literalChars(item);
  const first = item.group.items[0];
  return item.group.alternation || first === undefined || first.optional ? undefined : startChars(first);
}

/** A separator between a group's repetitions: one literal character or class of them, unquantified. */
const separatorChars = (item: Item | undefined) => (item === undefined || item.quantified ? undefined : literalChars(item));

const atomMatches = (source: string, ch: string) => new RegExp(`^(?:${source})$`, 'i').test(ch);

/** Whether an item can match `ch` (any item of a group, nested ones included). */
function matchesChar(item: Item, ch: string): boolean {
  return item.group === undefined ? atomMatches(item.source!, ch) : item.group.items.some((inner) => matchesChar(inner, ch));
}

const holdsAlternation = (frame: Frame): boolean => frame.alternation || frame.items.some((item) => item.group !== undefined && holdsAlternation(item.group));

/**
 * Whether each repetition of a group is told from the next by a character: one written first
 * or last, unrepeated, that nothing else in the group (its nested groups included) matches, as
 * the dot of (\w+\.)* and the [._-] of ([._-][a-z0-9]+)* (linear). Nested groups repeated
 * themselves were judged when they closed.
 */
function delimited(group: Frame): boolean {
  if (group.alternation) return false;
  const separates = (at: number) => {
    const chars = separatorChars(group.items[at]);
    return chars !== undefined && group.items.every((item, index) => index === at || chars.every((ch) => !matchesChar(item, ch)));
  };
  return separates(0) || separates(group.items.length - 1);
}

/**
 * Why matching `source` (translated, valid) can take time out of proportion to a name or an
 * address, or undefined. JavaScript's engine backtracks, as Perl's does, without Perl's cache of
 * positions tried: /^(a|a)*@x$/ took 3 s on a recipient of 30 characters and doubles with each
 * further one, and the subject is what the sending client chose. V8's fallback to a linear engine
 * (--enable-experimental-regexp-engine-on-excessive-backtracks) does not take these, which are
 * case-insensitive: Node 20 runs no /i expression on it. So the shapes that backtrack without
 * bound are refused where the entry is read:
 *   - a group repeated more than once that holds a quantifier, unless a character (or a class
 *     of them) that nothing else in it, nested groups included, matches starts or ends it, as in
 *     (\w+\.)* and ([._-][a-z0-9]+)*: (a+)+, (\w+\.?)*, (\d{1,3})+;
 *   - alternatives repeated more than 3 times, in a nested group too: (a|ab)*, ((a|a)\.)*;
 *   - more than WHITELIST_LIMITS.regexDegree parts of varying length (.*, \w+, -?) that the
 *     characters written right after them do not end (as `-` ends [0-9]+ in [0-9]+-, and
 *     [._-] ends [a-z]+ in [a-z]+([._-][a-z]+)*@, where `@` ends it once the group is done), the
 *     search of an expression that does not start with ^ counting as one: time grows as the
 *     subject's length to that power (.*a.*a.*a.*a).
 * Matching a subject of WHITELIST_LIMITS.regexSubject characters then takes milliseconds for
 * the usual entries, and up to a few hundred for the worst shapes the degree bound lets through
 * (^(\.a*)*(\.a*)*(\.a*)*x$: ~150 ms on 320 dots): polynomial, never exponential.
 */
export function backtrackingProblem(source: string): string | undefined {
  const stack: Frame[] = [newFrame()];
  let topLevelAlternation = false;
  /**
   * Counts each pending part of `frame` unless `next` starts with characters it cannot match;
   * one that an optional `next` ends stays pending, as what follows it when skipped must end it too.
   */
  const settle = (frame: Frame, next: Item | undefined) => {
    const chars = startChars(next);
    frame.pending = frame.pending.flatMap((pending) => {
      const run = [pending.part, ...pending.between];
      if (chars !== undefined && !chars.some((ch) => run.some((item) => matchesChar(item, ch)))) return next!.optional ? [pending] : [];
      if (next !== undefined && next.group === undefined && !next.quantified) return [{ part: pending.part, between: [...pending.between, next] }];
      frame.degree += 1;
      return [];
    });
  };
  for (let i = 0; i < source.length; ) {
    const c = source[i]!;
    const top = stack[stack.length - 1]!;
    let inner: Frame | undefined;
    let written: string | undefined;
    if (c === '(') {
      stack.push(newFrame());
      i += source[i + 1] === '?' ? (/^\(\?(?:<[=!]|<[^>]*>|.)/.exec(source.slice(i))?.[0].length ?? 1) : 1;
      continue;
    } else if (c === '|') {
      settle(top, undefined);
      top.alternation = true;
      if (stack.length === 1) topLevelAlternation = true;
      i += 1;
      continue;
    } else if (c === ')') {
      // What is pending at its end is ended, or not, by what follows the group.
      inner = stack.length > 1 ? stack.pop()! : newFrame();
      i += 1;
    } else if (c === '[') {
      let end = i + 1;
      while (end < source.length && source[end] !== ']') end += source[end] === '\\' ? 2 : 1;
      written = source.slice(i, end + 1);
      i = end + 1;
    } else {
      written = source.slice(i, c === '\\' ? i + 2 : i + 1);
      i += written.length;
    }
    const quantifier = quantifierAt(source, i);
    if (quantifier !== undefined) i += quantifier.length;
    const enclosing = stack[stack.length - 1]!;
    const { min, max } = quantifier ?? { min: 1, max: 1 };
    const item: Item = { source: written, quantified: quantifier !== undefined, optional: min === 0, group: inner };
    settle(enclosing, item);
    enclosing.items.push(item);
    enclosing.quantified ||= item.quantified || inner?.quantified === true;
    if (inner !== undefined && max > 1) {
      // Between two repetitions, what follows a part pending at the group's end is its start.
      settle(inner, { ...item, optional: true });
      const repeated = `${source.slice(0, i)}...`;
      // Delimited repetitions still multiply the ways each one can match: (a?a*\.)+.
      if (inner.quantified && (!delimited(inner) || (max === UNBOUNDED && inner.degree > 0))) {
        const growth = max === UNBOUNDED ? 'exponential in the length of a name or address' : `growing as the length of a name or address to the power ${max}`;
        return `can take time ${growth}: a group repeated more than once holds a quantifier (as (a+)+ does; here ${repeated}): write the repetition once, (a+)+ as a+, or end the group with a character nothing else in it matches, as in (\\w+\\.)*`;
      }
      if (holdsAlternation(inner) && max > 3) {
        return `can take time exponential in the length of a name or address: alternatives are repeated ${max === UNBOUNDED ? 'without bound' : `up to ${max} times`} (as (a|ab)* does; here ${repeated}): write a character class, (a|b)* as [ab]*, or repeat them at most 3 times`;
      }
    }
    if (inner !== undefined) {
      enclosing.degree += max === UNBOUNDED ? inner.degree : inner.degree * max;
      enclosing.pending.push(...inner.pending);
    }
    if (max > min) enclosing.pending.push({ part: item, between: [] });
  }
  const outer = stack[0]!;
  settle(outer, undefined);
  const anchored = source.startsWith('^') && !topLevelAlternation;
  const degree = outer.degree + (anchored ? 0 : 1);
  if (degree > WHITELIST_LIMITS.regexDegree) {
    const search = anchored ? '' : ', and an expression that does not start with ^ is tried at every position';
    return `can take time growing as the length of a name or address to the power ${degree}: ${outer.degree} parts of varying length (such as .*, \\w+ and -?) are not followed by a character they cannot match, which would end them${search}; at most ${WHITELIST_LIMITS.regexDegree} are taken`;
  }
  return undefined;
}

/** The domain of the set that `name` is or ends in (`.domain`), or undefined. */
export function domainUnder(domains: ReadonlySet<string>, name: string): string | undefined {
  let rest = name;
  for (;;) {
    if (domains.has(rest)) return rest;
    const dot = rest.indexOf('.');
    if (dot < 0) return undefined;
    rest = rest.slice(dot + 1);
  }
}

/**
 * access(5)'s `.domain` (its subdomains) is no form of postgrey's lists: there it is a name
 * that must follow a dot, `..domain`, and matches nothing, silently. The plain `domain`
 * already matches the domain and its subdomains.
 */
function leadingDot(entry: string): string {
  return `${JSON.stringify(entry)} matches nothing (as in postgrey): write ${JSON.stringify(entry.replace(/^\.+/, ''))}, which matches that domain and its subdomains`;
}

/** What a verified client name is made of: Postfix passes on only a valid_hostname() (A-labels, `_` allowed). */
const HOST_NAME_TEXT = /^[A-Za-z0-9._-]+$/;

/**
 * `*.domain`, a U-label, an address: postgrey quotes the entry (\Q...\E) and compares it with
 * Postfix's client_name, which never holds such a character, so it matches nothing, silently.
 */
function notAHostName(entry: string): string {
  const wildcard = /^\*\.+([A-Za-z0-9._-]+)$/.exec(entry)?.[1];
  const instead = wildcard ? `; write ${JSON.stringify(wildcard)}, which matches that domain and its subdomains` : '';
  return `${JSON.stringify(entry)} matches nothing (as in postgrey): a verified client name holds only letters, digits, "-", "_" and dots${instead}`;
}

/**
 * The first pattern `subject` matches; none for a subject longer than a DNS name or an address
 * (RFC 5321's 64-octet local part, '@', 255 octets of domain), where backtracking that
 * backtrackingProblem lets through would take long: the client chooses the recipient.
 */
function matchingPattern(patterns: readonly RegExp[], subject: string): RegExp | undefined {
  return subject.length > WHITELIST_LIMITS.regexSubject ? undefined : patterns.find((p) => p.test(subject));
}

function isRegexEntry(entry: string): boolean {
  return /^\/\S+\/$/.test(entry);
}

export class ClientWhitelist {
  constructor(
    private readonly domains: ReadonlySet<string>,
    private readonly patterns: readonly RegExp[],
    private readonly networks: AddressSet,
  ) {}

  get size(): number {
    return this.domains.size + this.patterns.length + this.networks.cidrs.length;
  }

  /** The entry that lets the client through, or undefined. */
  match(clientName: string, clientAddress: string): string | undefined {
    const name = asciiLower(clientName).replace(/\.$/, '');
    const domain = domainUnder(this.domains, name);
    if (domain !== undefined) return domain;
    const pattern = matchingPattern(this.patterns, name);
    if (pattern) return `/${pattern.source}/`;
    if (this.networks.cidrs.length === 0) return undefined;
    // Parsed once while the client recurs (checks/client-ip), which also reduces ::ffff:a.b.c.d.
    const parsed = parsedClientAddress(clientAddress);
    return parsed && this.networks.holds({ family: parsed.family, bits: parsed.host.network }) ? `network of ${clientAddress}` : undefined;
  }
}

export function parseClientWhitelist(sources: readonly WhitelistSource[]): { whitelist: ClientWhitelist; problems: WhitelistProblem[] } {
  const problems: WhitelistProblem[] = [];
  const domains = new Set<string>();
  const patterns: RegExp[] = [];
  const cidrs: Cidr[] = [];
  const network = (line: Line, text: string) => {
    const parsed = parseCidr(text);
    if (parsed.ok) cidrs.push(parsed.value);
    else {
      // The entry as written (a partial one, 10.020.30, was read as 10.020.30.0/24), once, worded
      // as a configuration's lists of networks word theirs (config/networks).
      const octal = parsed.leadingZero ? '; postgrey reads it as octal: 010 is 8' : '';
      problems.push({ source: line.source, line: line.line, message: `got ${JSON.stringify(line.entry)}, ${networkExpected(parsed)}${octal}` });
    }
  };
  for (const line of entriesOf(sources, problems)) {
    const { entry } = line;
    if (isRegexEntry(entry)) {
      const regex = regexOf(line, problems);
      if (regex) patterns.push(regex);
    } else if (/^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?:\/\d{1,2})?$/.test(entry)) {
      network(line, entry);
    } else if (/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(entry)) {
      network(line, `${entry}.0/24`);
    } else if (/^\d{1,3}\.\d{1,3}$/.test(entry)) {
      network(line, `${entry}.0.0/16`);
    } else if (entry.indexOf(':') !== entry.lastIndexOf(':')) {
      // Two colons or more: postgrey's /^.*:.*:.*(?:\/\d{1,3})?$/, whose .* backtracked
      // quadratically over a long line that a CR or U+2028 (where JavaScript's . stops) kept from matching.
      network(line, entry);
    } else if (entry.startsWith('.')) {
      problems.push({ source: line.source, line: line.line, message: leadingDot(entry) });
    } else if (HOST_NAME_TEXT.test(entry)) {
      domains.add(asciiLower(entry).replace(/\.$/, ''));
    } else if (/^\S+$/.test(entry)) {
      problems.push({ source: line.source, line: line.line, message: notAHostName(entry) });
    } else {
      problems.push({ source: line.source, line: line.line, message: `got ${JSON.stringify(entry)}, expected a host name or domain, an address or network, or a /regular expression/` });
    }
  }
  return { whitelist: new ClientWhitelist(domains, patterns, new AddressSet(cidrs)), problems };
}

/**
 * The local parts an entry may name for this recipient, lower-cased: the whole one and each
 * shorter one before a `+`, as postgrey's `^user(?:\+[^@]+)?@` matches `user`, `user+ext` and
 * `user+ext+more` for the entry `user`, and the entry `user+ext` matches the last two. The
 * extension is not empty there: `user+@` is not `user@`'s (a `+` that ends the local part
 * starts no candidate).
 */
function localPartCandidates(local: string): string[] {
  const lower = asciiLower(local);
  const candidates = [lower];
  for (let plus = lower.lastIndexOf('+', lower.length - 2); plus > 0; plus = lower.lastIndexOf('+', plus - 1)) candidates.push(lower.slice(0, plus));
  return candidates;
}

export class RecipientWhitelist {
  constructor(
    private readonly addresses: ReadonlySet<string>,
    private readonly localParts: ReadonlySet<string>,
    private readonly domains: ReadonlySet<string>,
    /** `@domain` entries: the domain itself, not its subdomains. */
    private readonly exactDomains: ReadonlySet<string>,
    private readonly patterns: readonly RegExp[],
  ) {}

  get size(): number {
    return this.addresses.size + this.localParts.size + this.domains.size + this.exactDomains.size + this.patterns.length;
  }

  /** The entry that lets the recipient through, or undefined. */
  match(recipient: string): string | undefined {
    const at = recipient.lastIndexOf('@');
    if (at >= 0) {
      const domain = asciiLower(recipient.slice(at + 1));
      for (const local of localPartCandidates(recipient.slice(0, at))) {
        if (this.addresses.has(`${local}@${domain}`)) return `${local}@${domain}`;
        if (this.localParts.has(local)) return `${local}@`;
      }
      if (this.exactDomains.has(domain)) return `@${domain}`;
      const listed = domainUnder(this.domains, domain);
      if (listed !== undefined) return listed;
    }
    const pattern = matchingPattern(this.patterns, recipient);
    return pattern ? `/${pattern.source}/` : undefined;
  }
}

export function parseRecipientWhitelist(sources: readonly WhitelistSource[]): { whitelist: RecipientWhitelist; problems: WhitelistProblem[] } {
  const problems: WhitelistProblem[] = [];
  const addresses = new Set<string>();
  const localParts = new Set<string>();
  const domains = new Set<string>();
  const exactDomains = new Set<string>();
  const patterns: RegExp[] = [];
  for (const line of entriesOf(sources, problems)) {
    const { entry } = line;
    if (isRegexEntry(entry)) {
      const regex = regexOf(line, problems);
      if (regex) patterns.push(regex);
      continue;
    }
    if (!/^\S+$/.test(entry)) {
      problems.push({ source: line.source, line: line.line, message: `got ${JSON.stringify(entry)}, expected an address, a local part (user@), a domain (domain.tld, @domain.tld) or a /regular expression/` });
      continue;
    }
    const at = entry.indexOf('@');
    const user = at < 0 ? entry : entry.slice(0, at);
    const domain = at < 0 ? '' : asciiLower(entry.slice(at + 1));
    if (at < 0 && entry.startsWith('.')) problems.push({ source: line.source, line: line.line, message: leadingDot(entry) });
    else if (at < 0) domains.add(asciiLower(entry));
    else if (user === '') exactDomains.add(domain);
    else if (domain === '') localParts.add(asciiLower(user));
    else addresses.add(`${asciiLower(user)}@${domain}`);
  }
  return { whitelist: new RecipientWhitelist(addresses, localParts, domains, exactDomains, patterns), problems };
}

/** postgrey's own lists are a few kilobytes; a site's may be longer, not this long. */
const WHITELIST_FILE_BYTES = 8 * MIB;

/**
 * Reads whitelist files. A missing file whose name ends in `.local` is skipped silently, as
 * postgrey does (a site may simply not have one); any other unreadable file is a problem.
 */
export function readWhitelistFiles(paths: readonly string[]): { sources: WhitelistSource[]; problems: WhitelistProblem[] } {
  const sources: WhitelistSource[] = [];
  const problems: WhitelistProblem[] = [];
  for (const path of paths) {
    const read = readFileLimited(path, WHITELIST_FILE_BYTES, { governing: true });
    if (read.ok) sources.push({ source: path, text: read.bytes.toString('utf8') });
    else if (!(read.code === 'ENOENT' && path.endsWith('.local'))) problems.push({ source: path, line: 0, message: read.reason });
  }
  return { sources, problems };
}
