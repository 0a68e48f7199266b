import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { expandDomainSpec, expandMacroString, MAX_NAME_LENGTH, parseDomainSpec, parseMacroString, targetName, type MacroContext } from '../../../src/checks/spf/macro.js';
import { MAX_RECORD_LENGTH, parseRecordTerms } from '../../../src/checks/spf/record.js';

const context: MacroContext = {
  sender: 'strong-bad@email.example.com',
  localPart: 'strong-bad',
  senderDomain: 'email.example.com',
  domain: 'email.example.com',
  ipDotted: '192.0.2.3',
  ipReadable: '192.0.2.3',
  ipVersion: 'in-addr',
  helo: 'mx.example.org',
  receiver: 'receiver.example.net',
  nowSeconds: 1234567890,
  validatedName: 'mx.example.org',
};

function expand(text: string, explanation = false): string {
  const parsed = parseMacroString(text, { explanation });
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.problem);
  return expandMacroString(parsed.value, context);
}

test('RFC 7208 §7.4 macro examples expand as the RFC says', () => {
  assert.equal(expand('%{s}'), 'strong-bad@email.example.com');
  assert.equal(expand('%{o}'), 'email.example.com');
  assert.equal(expand('%{d}'), 'email.example.com');
  assert.equal(expand('%{d4}'), 'email.example.com');
  assert.equal(expand('%{d3}'), 'email.example.com');
  assert.equal(expand('%{d2}'), 'example.com');
  assert.equal(expand('%{d1}'), 'com');
  assert.equal(expand('%{dr}'), 'com.example.email');
  assert.equal(expand('%{d2r}'), 'example.email');
  assert.equal(expand('%{l}'), 'strong-bad');
  assert.equal(expand('%{l-}'), 'strong.bad');
  assert.equal(expand('%{lr}'), 'strong-bad');
  assert.equal(expand('%{lr-}'), 'bad.strong');
  assert.equal(expand('%{l1r-}'), 'strong');
  assert.equal(expand('%{ir}.%{v}._spf.%{d2}'), '3.2.0.192.in-addr._spf.example.com');
  assert.equal(expand('%{lr-}.lp.%{ir}.%{v}._spf.%{d2}'), 'bad.strong.lp.3.2.0.192.in-addr._spf.example.com');
  assert.equal(expand('%{p2}.trusted-domains.example.net'), 'example.org.trusted-domains.example.net');
});

test('escapes, upper-case URL escaping and explanation-only letters', () => {
  assert.equal(expand('a%%b%_c%-d'), 'a%b c%20d');
  assert.equal(expand('%{S}'), 'strong-bad%40email.example.com');
  assert.equal(expand('%{c} %{r} %{t}', true), '192.0.2.3 receiver.example.net 1234567890');
  const inDomain = parseMacroString('%{c}', { explanation: false });
  assert.equal(inDomain.ok, false);
  assert.equal(parseMacroString('a b', { explanation: false }).ok, false);
  assert.equal(parseMacroString('a b', { explanation: true }).ok, true);
});

test('macro syntax errors are values', () => {
  for (const bad of ['%(ir)', 'foo%', '%{', '%{x}', '%{d0}', '%{d000}', '%{d!}', '%{}', 'caf\u00e9']) {
    assert.equal(parseMacroString(bad, { explanation: false }).ok, false, bad);
  }
});

test('a transformer number may have any number of digits (RFC 7208 §7.1: transformers = *DIGIT ["r"]); more parts than there are means all of them', () => {
  assert.equal(expand('%{d100}'), 'email.example.com');
  assert.equal(expand('%{d1234}'), 'email.example.com');
  assert.equal(expand('%{d002}'), 'example.com');
  assert.equal(expand(`%{d${'9'.repeat(400)}r}`), 'com.example.email');
  assert.equal(parseRecordTerms(' exists:%{i}.%{l100r-}.%{d999}.bl.example.com -all').ok, true);
});

test('domain-spec must end in a macro or "." toplabel', () => {
  // "%%", "%_" and "%-" are macro-expand and may end it; in "x%%-" the "%%" is one and "-" is a literal.
  for (const good of ['example.com', 'example.com.', '%{d}', '_spf.%{d2}', 'foo.example.xn--zckzah', 'a%%', 'x%-', 'x%%%-', 'x%%%_', 'foo:bar/baz.example.com']) {
    assert.equal(parseDomainSpec(good).ok, true, good);
  }
  for (const bad of ['', 'museum', 'museum.', 'foo-bar', 'example.-com', 'abc.123', 'example.com:8080', '%{d}.', 'x%%-', 'example.com%%-', 'x%%_']) {
    assert.equal(parseDomainSpec(bad).ok, false, bad);
  }
});

test('target names are truncated from the left and need usable labels', () => {
  const long = `${'a'.repeat(60)}.`.repeat(5) + 'example.com';
  const target = targetName(long);
  assert.ok(target.ok, 'target.ok');
  assert.ok(target.name.length <= 253, 'target.name.length <= 253');
  assert.ok(target.name.endsWith('.example.com'), 'target.name.endsWith(\'.example.com\')');
  assert.equal(targetName('a..b').ok, false);
  assert.equal(targetName(`${'x'.repeat(64)}.example.com`).ok, false);
  assert.deepEqual(targetName('example.com.'), { ok: true, name: 'example.com' });
});

test('a target name of exactly 253 characters is kept whole (RFC 7208 §7.3 cuts only a longer one)', () => {
  const exact = [...Array.from({ length: 3 }, () => 'c'.repeat(63)), 'c'.repeat(61)].join('.');
  assert.equal(exact.length, MAX_NAME_LENGTH);
  assert.deepEqual(targetName(exact), { ok: true, name: exact });
  assert.deepEqual(targetName(`${exact}.`), { ok: true, name: exact });
  assert.deepEqual(targetName(`x.${exact}`), { ok: true, name: exact });
});

test('the part of a domain-spec expansion that is kept reaches the dot before the last 253 characters, so the cut falls between labels (RFC 7208 §7.3)', () => {
  // "strong-bad." + 250 characters + ".": the name is the 250 characters, without the "ad" of
  // "strong-bad" that the last 253 characters before the final dot begin with.
  const right = `${`${'b'.repeat(62)}.`.repeat(3)}${'b'.repeat(61)}`;
  assert.equal(right.length, 250);
  const parsed = parseDomainSpec(`%{l}.${right}.`);
  assert.ok(parsed.ok, 'parsed.ok');
  assert.deepEqual(targetName(expandDomainSpec(parsed.value, context)), { ok: true, name: right });
  assert.deepEqual(targetName(expandMacroString(parsed.value, context)), { ok: true, name: right });
});

test('records: directives, modifiers and their errors', () => {
  const parsed = parseRecordTerms(' ip4:192.0.2.0/24 -a:mail.example.com/24//64 ~mx ?ptr include:_spf.example.com exists:%{i}.bl.example.com ip6:2001:db8::/32 redirect=other.example.com exp=explain.example.com foo=bar -all ');
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.problem);
  assert.deepEqual(parsed.record.directives.map((d) => `${d.qualifier}${d.mechanism.kind}`), ['+ip4', '-a', '~mx', '?ptr', '+include', '+exists', '+ip6', '-all']);
  assert.equal(parsed.record.redirect?.text, 'redirect=other.example.com');
  assert.equal(parsed.record.explanation?.text, 'exp=explain.example.com');
  const a = parsed.record.directives[1]?.mechanism;
  assert.deepEqual(a?.kind === 'a' ? [a.cidr4, a.cidr6] : [], [24, 64]);
  for (const bad of ['ip4:1.2.3.4/032', 'ip4:192.0.2.0/08', 'a/08', 'mx:example.com/00', 'a//064', 'ip6:2001:db8::1//128', 'ip4:1.2.3', 'ip6:1.2.3.4', 'ip4:::1', 'a/33', 'a//129', 'a/24/64', 'all.', '-all:x', 'ptr/0', 'include', 'exists:', 'redirect=a redirect=b', 'exp=', 'moo', '1up=x', '=all', 'foo=%x', 'a:b\tc']) {
    assert.equal(parseRecordTerms(` ${bad}`).ok, false, bad);
  }
  assert.equal(parseRecordTerms(' ' + 'a'.repeat(MAX_RECORD_LENGTH)).ok, false);
});

test('records: CIDR lengths are written without leading zeros, up to 32 and 128, on either side of a dual-cidr (RFC 7208 §5.6)', () => {
  const parsed = parseRecordTerms(' a/0 a//0 a/8 a//128 mx:example.com/32//128 ip4:192.0.2.0/32 ip6:2001:db8::1/128 -all');
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.problem);
  const lengths = parsed.record.directives.flatMap((d) => (d.mechanism.kind === 'a' || d.mechanism.kind === 'mx' ? [[d.mechanism.cidr4, d.mechanism.cidr6]] : []));
  assert.deepEqual(lengths, [[0, 128], [32, 0], [8, 128], [32, 128], [32, 128]]);
});

test('records: a record of exactly MAX_RECORD_LENGTH characters is parsed, one character more is a permerror', () => {
  const exact = `${' '.repeat(MAX_RECORD_LENGTH - '-all'.length)}-all`;
  assert.equal(exact.length, MAX_RECORD_LENGTH);
  assert.equal(parseRecordTerms(exact).ok, true);
  assert.deepEqual(parseRecordTerms(` ${exact}`), { ok: false, problem: `record longer than ${MAX_RECORD_LENGTH} characters` });
});

test('records: DEL (0x7f) is not printable US-ASCII: a record holding one is refused for it, wherever it is (RFC 7208 §3.1)', () => {
  for (const terms of [' -all\x7f', ' \x7f -all', ' ip4:192.0.2.1\x7f -all', ' a:exam\x7fple.com -all']) {
    assert.deepEqual(parseRecordTerms(terms), { ok: false, problem: 'record contains character 0x7f, which is not printable US-ASCII' }, JSON.stringify(terms));
  }
});

test('fuzz: parsing records and macro-strings never throws', () => {
  const termChars = fc.constantFrom(...'aip46:/.%{}-+~?=_ lrdsx0123456789mxeclude'.split(''));
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200 }), fc.array(termChars, { maxLength: 120 }).map((chars) => chars.join(''))), (text) => {
      const record = parseRecordTerms(text);
      assert.equal(typeof record.ok, 'boolean');
      for (const explanation of [true, false]) {
        const parsed = parseMacroString(text, { explanation });
        if (parsed.ok) assert.equal(typeof expandMacroString(parsed.value, context), 'string');
      }
      const domain = parseDomainSpec(text);
      if (domain.ok) targetName(expandMacroString(domain.value, context));
    }),
    { numRuns: 3000 },
  );
});
