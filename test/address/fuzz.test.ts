// Property tests: every parser answers any string with a result (never a throw), its errors
// point into the input, and every mailbox it gives back re-parses from its canonical address.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isIPv6 } from 'node:net';
import fc from 'fast-check';
import {
  AddressSyntaxError,
  normaliseDomain,
  parseAddressList,
  parseForwardPath,
  parseHeaderMailbox,
  parseMailbox,
  parseReversePath,
  type Mailbox,
  type ParseResult,
} from '../../src/address/index.js';
import { elapsedMs } from '../support/fuzz.js';

const specials = [...'\\"()<>[]@,;:. \t\r\n'];
const character = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...specials) },
  { weight: 3, arbitrary: fc.constantFrom(...'aZ09-_!#~ü') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((unit) => String.fromCharCode(unit)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0x1f }).map((unit) => String.fromCharCode(unit)) },
);
const messy = fc.string({ unit: character, maxLength: 60 });
/** Strings shaped like addresses, so that parsing gets past the first character more often. */
const addressLike = fc
  .tuple(messy, fc.constantFrom('@', '<', '>', '"', '(', ':'), messy, fc.constantFrom('', '.example', '>', ';'))
  .map((parts) => parts.join(''));
const atextCharacter = fc.constantFrom(...[..."abcXYZ0189!#$%&'*+-/=?^_`{|}~"], 'ü', '日', '😀');
const atom = fc.string({ unit: atextCharacter, minLength: 1, maxLength: 8 });
const dotString = fc.array(atom, { minLength: 1, maxLength: 4 }).map((atoms) => atoms.join('.'));
const ldhLabel = fc
  .tuple(fc.stringMatching(/^[a-zA-Z0-9]$/), fc.stringMatching(/^[a-zA-Z0-9-]{0,10}[a-zA-Z0-9]$/), fc.boolean())
  .map(([first, rest, short]) => (short ? first : first + rest))
  // An xn-- label is an A-label and must be valid Punycode, which random text is not.
  .filter((label) => !/^xn--/i.test(label));
const domain = fc
  .array(ldhLabel, { minLength: 1, maxLength: 4 })
  // An all-numeric top-level label is refused (RFC 1123 §2.1: that is an IP address without brackets).
  .filter((labels) => !/^[0-9]+$/.test(labels[labels.length - 1] ?? ''))
  .map((labels) => labels.join('.'));

const quotedString = fc
  .string({ unit: fc.constantFrom(...'a "\\()<>@,;:.ü\t'), maxLength: 10 })
  .map((value) => `"${value.replace(/["\\]/g, '\\$&')}"`);
const localPart = fc.oneof(dotString, quotedString);
const host = fc.oneof(domain, fc.constantFrom('[192.0.2.1]', '[IPv6:2001:DB8::1]', 'Bücher.example', 'xn--bcher-kva.example'));
const cfws = fc.constantFrom('', ' ', '(c)', ' (a (b) \\) ) ', '\r\n ');
const wellFormed = fc
  .tuple(localPart, host, cfws, cfws, fc.constantFrom<(l: string, h: string, c: string, d: string) => string>(
    (l, h) => `${l}@${h}`,
    (l, h) => `<${l}@${h}>`,
    (l, h) => `<@relay.example,@b.example:${l}@${h}>`,
    (l, h, c, d) => `Name${c}<${d}${l}${c}@${d}${h}${c}>${d}`,
    (l, h, c, d) => `g${c}:${d}${l}@${h}${c},${d}x@y;${c}, z@w`,
  ))
  .map(([local, domainPart, c, d, shape]) => shape(local, domainPart, c, d));
/** Well-formed addresses with one character inserted or removed, to reach the deeper states. */
const mutated = fc
  .tuple(wellFormed, fc.nat(), character, fc.boolean())
  .map(([text, at, ch, insert]) => {
    const i = at % (text.length + 1);
    return insert ? text.slice(0, i) + ch + text.slice(i) : text.slice(0, i) + text.slice(i + 1);
  });
const input = fc.oneof(messy, addressLike, wellFormed, mutated);

function checkResult<T>(result: ParseResult<T>, text: string): T | undefined {
  assert.equal(typeof result.ok, 'boolean');
  if (result.ok) return result.value;
  assert.ok(result.error instanceof AddressSyntaxError, 'result.error instanceof AddressSyntaxError');
  assert.ok(Number.isInteger(result.error.position), 'Number.isInteger(result.error.position)');
  assert.ok(result.error.position >= 0 && result.error.position <= text.length, `position ${result.error.position}`);
  return undefined;
}

/** A mailbox's canonical address must parse back to the same mailbox. */
function checkCanonical(mailbox: Mailbox): void {
  const again = parseMailbox(mailbox.address, { sizeLimits: false });
  assert.ok(again.ok, `${mailbox.address}: ${again.ok ? '' : again.error.message}`);
  assert.deepEqual(again.value, mailbox);
}

const options = { numRuns: 2000 };

describe('address parsers never throw', () => {
  it('parseMailbox, parseReversePath, parseForwardPath', () => {
    fc.assert(
      fc.property(input, fc.boolean(), fc.boolean(), (text, utf8, tolerant) => {
        const mailbox = checkResult(parseMailbox(text, { utf8 }), text);
        if (mailbox) checkCanonical(mailbox);
        const pathOptions = { utf8, tolerant, internalForm: tolerant };
        for (const path of [parseReversePath(text, pathOptions), parseForwardPath(text, pathOptions)]) {
          const value = checkResult<{ kind: string; mailbox?: Mailbox }>(path, text);
          if (value?.mailbox) checkCanonical(value.mailbox);
        }
        const bracketed = `<${text}>`;
        const value = checkResult<{ kind: string; mailbox?: Mailbox }>(parseReversePath(bracketed, { utf8 }), bracketed);
        if (value?.mailbox) checkCanonical(value.mailbox);
      }),
      options,
    );
  });

  it('normaliseDomain', () => {
    fc.assert(
      fc.property(input, fc.boolean(), (text, utf8) => {
        const domain = checkResult(normaliseDomain(text, { utf8 }), text);
        if (domain) assert.deepEqual(normaliseDomain(domain.ascii), { ok: true, value: domain });
      }),
      options,
    );
  });

  it('parseAddressList and parseHeaderMailbox', () => {
    fc.assert(
      fc.property(input, fc.boolean(), fc.boolean(), fc.boolean(), (text, utf8, sizeLimits, groups) => {
        const list = checkResult(parseAddressList(text, { utf8, sizeLimits, groups }), text) ?? [];
        for (const address of list) checkCanonical(address.mailbox);
        if (!groups) assert.ok(list.every((address) => address.group === undefined), 'list.every((address) => address.group === undefined)');
        const single = checkResult(parseHeaderMailbox(text, { utf8, sizeLimits }), text);
        if (single) checkCanonical(single.mailbox);
      }),
      options,
    );
  });

  it('answers pathological inputs at the limits', () => {
    const cases = [
      '('.repeat(65536),
      `${'('.repeat(100)}${'\\'.repeat(65000)}`,
      '"'.repeat(4096),
      'a.'.repeat(2048),
      `<${'@a,'.repeat(1000)}`,
      `${'g:'.repeat(20000)}`,
      `${'a@b,'.repeat(16000)}`,
      '\ud800'.repeat(4096),
      `"${'a\\ '.repeat(21000)}"@x.org`,
    ];
    for (const text of cases) {
      checkResult(parseMailbox(text), text);
      checkResult(parseReversePath(text), text);
      checkResult(parseAddressList(text), text);
      checkResult(parseHeaderMailbox(text), text);
      // Without the RFC 5321 size limits a local part can take the whole input.
      const ms = elapsedMs(() => {
        checkResult(parseAddressList(text, { sizeLimits: false, groups: false }), text);
        checkResult(parseHeaderMailbox(text, { sizeLimits: false }), text);
      });
      assert.ok(ms < 200, `${text.slice(0, 10)}: ${ms.toFixed(0)} ms`);
      checkResult(normaliseDomain(text), text);
    }
  });

  it('refuses a long internationalised label before converting it, in linear time', () => {
    // Punycode encoding is quadratic in a label's distinct code points: a From header of
    // 38000 distinct CJK characters used to take 1.5 s in domainToASCII.
    let label = '';
    for (const [from, to] of [[0x4e00, 0x9fff], [0xac00, 0xd7a3], [0x3400, 0x4dbf]] as const) {
      for (let codePoint = from; codePoint <= to; codePoint += 1) label += String.fromCodePoint(codePoint);
    }
    const header = `a@${label}`;
    const result = parseAddressList(header);
    assert.ok(!result.ok && result.error.rule === 'label-too-long' && result.error.position === 2, '!result.ok && result.error.rule === \'label-too-long\' && result.error.position === 2');
    const ms = elapsedMs(() => parseAddressList(header));
    assert.ok(ms < 200, `${ms.toFixed(0)} ms`);
    const mailbox = parseMailbox(`a@${label.slice(0, 4000)}`);
    assert.ok(!mailbox.ok && mailbox.error.rule === 'label-too-long', '!mailbox.ok && mailbox.error.rule === \'label-too-long\'');
  });
});

describe('valid addresses round-trip', () => {
  it('dot-string@domain keeps its local part and lower-cases its domain', () => {
    fc.assert(
      fc.property(dotString, domain, (local, host) => {
        const input = `${local}@${host}`;
        const mailbox = parseMailbox(input);
        assert.ok(mailbox.ok, `${input}: ${mailbox.ok ? '' : mailbox.error.message}`);
        assert.equal(mailbox.value.localPart, local);
        assert.equal(mailbox.value.asciiDomain, host.toLowerCase());
        assert.equal(mailbox.value.address, `${local}@${host.toLowerCase()}`);
        assert.equal(mailbox.value.requiresSmtputf8, /[^\x20-\x7e]/u.test(local));
        const path = parseForwardPath(`<${input}>`);
        assert.ok(path.ok && path.value.kind === 'mailbox', 'path.ok && path.value.kind === \'mailbox\'');
        assert.deepEqual(path.value.mailbox, mailbox.value);
        const header = parseHeaderMailbox(`Name <${input}>`);
        assert.ok(header.ok, 'header.ok');
        assert.deepEqual(header.value.mailbox, mailbox.value);
      }),
      options,
    );
  });

  it('a quoted local part keeps its semantic value through quoting and re-parsing', () => {
    const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 30 });
    fc.assert(
      fc.property(printable, domain, (value, host) => {
        const input = `"${value.replace(/["\\]/g, '\\$&')}"@${host}`;
        const mailbox = parseMailbox(input);
        assert.ok(mailbox.ok, `${input}: ${mailbox.ok ? '' : mailbox.error.message}`);
        assert.equal(mailbox.value.localPart, value);
        checkCanonical(mailbox.value);
      }),
      options,
    );
  });

  it('IPv4 and IPv6 literals', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.ipV6(), (v4, v6) => {
        const four = parseMailbox(`a@[${v4}]`);
        assert.ok(four.ok, 'four.ok');
        assert.deepEqual(four.value.literal, { family: 4, ip: v4 });
        const six = parseMailbox(`a@[IPv6:${v6}]`);
        assert.ok(six.ok, `${v6}: ${six.ok ? '' : six.error.message}`);
        assert.ok(six.value.literal && isIPv6(six.value.literal.ip), 'six.value.literal && isIPv6(six.value.literal.ip)');
        checkCanonical(six.value);
      }),
      options,
    );
  });
});
