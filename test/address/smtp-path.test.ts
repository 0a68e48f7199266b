import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  isPostmaster,
  parseForwardPath,
  parseMailbox,
  parseReversePath,
  type AddressSyntaxRule,
  type ForwardPath,
  type Mailbox,
  type ParseResult,
  type ReversePath,
} from '../../src/address/index.js';
import { assertParsed, assertSyntaxError } from './support.js';

interface ErrorCase {
  input: string;
  rule: AddressSyntaxRule;
  position: number;
}

const label63 = 'a'.repeat(63);
/** A domain of exactly `length` octets, in labels of at most 49 octets. */
function domainOf(length: number): string {
  const labels: string[] = [];
  let remaining = length;
  while (remaining > 50) {
    labels.push('a'.repeat(49));
    remaining -= 50;
  }
  labels.push('b'.repeat(remaining));
  return labels.join('.');
}

describe('parseMailbox: valid mailboxes', () => {
  const cases: { input: string; want: Partial<Mailbox> }[] = [
    {
      input: 'user@example.com',
      want: { localPart: 'user', domain: 'example.com', asciiDomain: 'example.com', requiresSmtputf8: false, address: 'user@example.com' },
    },
    { input: 'First.Last@Example.COM', want: { localPart: 'First.Last', asciiDomain: 'example.com', address: 'First.Last@example.com' } },
    { input: "!#$%&'*+-/=?^_`{|}~@x.org", want: { localPart: "!#$%&'*+-/=?^_`{|}~", address: "!#$%&'*+-/=?^_`{|}~@x.org" } },
    { input: '"john doe"@x.org', want: { localPart: 'john doe', address: '"john doe"@x.org' } },
    { input: '"plain"@x.org', want: { localPart: 'plain', address: 'plain@x.org' } },
    { input: '"a\\"b\\\\c"@x.org', want: { localPart: 'a"b\\c', address: '"a\\"b\\\\c"@x.org' } },
    { input: '"\\a\\b"@x.org', want: { localPart: 'ab', address: 'ab@x.org' } },
    { input: '"a..b"@x.org', want: { localPart: 'a..b', address: '"a..b"@x.org' } },
    { input: '"a@b"@x.org', want: { localPart: 'a@b', address: '"a@b"@x.org' } },
    { input: '""@x.org', want: { localPart: '', address: '""@x.org' } },
    { input: 'a@x-y.example', want: { asciiDomain: 'x-y.example' } },
    { input: 'a@1a.example', want: { asciiDomain: '1a.example' } },
    { input: 'a@123.example', want: { asciiDomain: '123.example' } },
    { input: 'a@ab--cd.example', want: { asciiDomain: 'ab--cd.example' } },
    { input: 'a@localhost', want: { asciiDomain: 'localhost' } },
  ];
  for (const { input, want } of cases) {
    it(input, () => {
      const got = assertParsed(parseMailbox(input), input);
      for (const [key, value] of Object.entries(want)) assert.deepEqual(got[key as keyof Mailbox], value, key);
      assert.equal(got.literal, undefined);
    });
  }
});

describe('parseMailbox: syntax errors', () => {
  const cases: ErrorCase[] = [
    { input: '', rule: 'empty-input', position: 0 },
    { input: 'user', rule: 'missing-at', position: 4 },
    { input: '"user"', rule: 'missing-at', position: 6 },
    { input: '@example.com', rule: 'empty-local-part', position: 0 },
    { input: '.a@x.org', rule: 'empty-atom', position: 0 },
    { input: 'a.@x.org', rule: 'empty-atom', position: 1 },
    { input: 'a..b@x.org', rule: 'empty-atom', position: 2 },
    { input: 'a.', rule: 'empty-atom', position: 1 },
    { input: '.', rule: 'empty-atom', position: 0 },
    { input: 'a b@x.org', rule: 'bad-character', position: 1 },
    { input: 'a(b)@x.org', rule: 'bad-character', position: 1 },
    { input: 'a"b"@x.org', rule: 'bad-character', position: 1 },
    { input: '"ab"c@x.org', rule: 'bad-character', position: 4 },
    { input: '"unbalanced@x.org', rule: 'unbalanced-quote', position: 0 },
    { input: 'ab"cd"@x.org', rule: 'bad-character', position: 2 },
    { input: 'abc."def@x.org', rule: 'bad-character', position: 4 },
    { input: '"abc\\', rule: 'unbalanced-quote', position: 0 },
    { input: '"a\tb"@x.org', rule: 'bad-character', position: 2 },
    { input: '"a\\\tb"@x.org', rule: 'bad-quoted-pair', position: 2 },
    { input: '"a\\\u00e9"@x.org', rule: 'bad-quoted-pair', position: 2 },
    // RFC 5321 qtextSMTP and quoted-pairSMTP stop at %d126: DEL is refused where it stands.
    { input: '"a\\\u007f"@x.org', rule: 'bad-quoted-pair', position: 2 },
    { input: '"a\u007fb"@x.org', rule: 'bad-character', position: 2 },
    { input: 'a\ud800@x.org', rule: 'bad-character', position: 1 },
    // The last surrogate code unit is as lone as the first.
    { input: 'a\udfff@x.org', rule: 'bad-character', position: 1 },
    { input: 'a@', rule: 'empty-domain', position: 2 },
    { input: 'a@.x.org', rule: 'empty-domain-label', position: 2 },
    { input: 'a@x..org', rule: 'empty-domain-label', position: 4 },
    { input: 'a@x.org.', rule: 'empty-domain-label', position: 8 },
    { input: 'a@-x.org', rule: 'bad-domain-label', position: 2 },
    { input: 'a@x-.org', rule: 'bad-domain-label', position: 2 },
    { input: 'a@x_y.org', rule: 'bad-character', position: 3 },
    { input: 'a@x.org ', rule: 'bad-character', position: 7 },
    { input: 'a@b@c', rule: 'bad-character', position: 3 },
    { input: '<a@x.org>', rule: 'bad-character', position: 0 },
    { input: 'a@x.org>', rule: 'bad-character', position: 7 },
    { input: 'a@xn--abc.example', rule: 'bad-idn-label', position: 2 },
    { input: 'a@x.\u3002y', rule: 'bad-idn-label', position: 4 },
    { input: 'a@b\u00fc_cher.example', rule: 'bad-character', position: 4 },
    { input: 'a@x\ud800.org', rule: 'bad-character', position: 3 },
    { input: `a@${'a'.repeat(64)}.org`, rule: 'label-too-long', position: 2 },
    // RFC 1123 §2.1: an IP address without brackets is no domain; the top-level label is never all digits.
    { input: 'a@192.0.2.1', rule: 'bad-domain-label', position: 10 },
    { input: 'a@x.123', rule: 'bad-domain-label', position: 4 },
  ];
  for (const { input, rule, position } of cases) {
    it(`${JSON.stringify(input)} -> ${rule} at ${position}`, () => {
      assertSyntaxError(parseMailbox(input), input, rule, position);
    });
  }

  it('names the rule and position in the message', () => {
    const result = parseMailbox('"unbalanced@x.org');
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.error.message, 'unbalanced quote at 0');
  });
});

describe('parseMailbox: limits (RFC 5321 §4.5.3.1)', () => {
  it('accepts a local part of exactly 64 octets and rejects 65', () => {
    assertParsed(parseMailbox(`${'a'.repeat(64)}@x.org`), '64');
    assertSyntaxError(parseMailbox(`${'a'.repeat(65)}@x.org`), '65', 'local-part-too-long', 0);
  });

  it('measures the local part in UTF-8 octets', () => {
    const ue32 = 'ü'.repeat(32);
    assertParsed(parseMailbox(`${ue32}@x.org`), '32 x ü = 64 octets');
    assertSyntaxError(parseMailbox(`${ue32}a@x.org`), '65 octets in 33 characters', 'local-part-too-long', 0);
  });

  it('measures a quoted local part in its canonical form, quotes included', () => {
    const spaced = (n: number) => `${'a'.repeat(n - 1)} `;
    assertParsed(parseMailbox(`"${spaced(62)}"@x.org`), 'quoted 62 + 2');
    assertSyntaxError(parseMailbox(`"${spaced(63)}"@x.org`), 'quoted 63 + 2', 'local-part-too-long', 0);
    assertParsed(parseMailbox(`"${'a'.repeat(64)}"@x.org`), 'needless quotes do not count');
  });

  it('accepts a label of 63 octets and rejects 64, also for A-labels of U-labels', () => {
    assertParsed(parseMailbox(`a@${label63}.org`), '63');
    assertParsed(parseMailbox(`a@${'ü'.repeat(57)}.org`), 'A-label of 63 octets');
    assertSyntaxError(parseMailbox(`a@x.${'ü'.repeat(58)}.org`), 'A-label of 64 octets', 'label-too-long', 4);
  });

  it('accepts a path of exactly 256 octets and rejects 257', () => {
    const local = 'a'.repeat(64);
    const ok = `${local}@${domainOf(189)}`;
    assert.equal(ok.length + 2, 256);
    assertParsed(parseMailbox(ok), 'path 256');
    assertParsed(parseForwardPath(`<${ok}>`), 'forward path 256');
    assertSyntaxError(parseMailbox(`${local}@${domainOf(190)}`), 'path 257', 'path-too-long', 0);
    assertSyntaxError(parseReversePath(`<${local}@${domainOf(190)}>`), 'path 257', 'path-too-long', 0);
  });

  it('with sizeLimits: false accepts longer local parts and paths, as a receiving server should (§4.5.3.1), but not longer domains', () => {
    // postsrsd's SRS0 form of a 41-octet sender: 67 octets of local part.
    const srs = 'SRS0=Ab3d=QX=customer-service.example.com=firstname.lastname.longer@forwarder.example.net';
    assertSyntaxError(parseReversePath(srs, { tolerant: true }), 'strict', 'local-part-too-long', 0);
    const received = { tolerant: true, sizeLimits: false } as const;
    const parsed = parseReversePath(srs, received);
    assert.ok(parsed.ok && parsed.value.kind === 'mailbox' && parsed.value.mailbox.address === srs, 'parsed.ok && parsed.value.kind === \'mailbox\' && parsed.value.mailbox.address === srs');
    assertParsed(parseForwardPath(`<${'a'.repeat(300)}@x.org>`, received), 'path of 308 octets');
    assertParsed(parseMailbox(`${'a'.repeat(100)}@x.org`, { sizeLimits: false }), 'local part of 100');
    assertSyntaxError(parseMailbox(`a@${domainOf(256)}`, { sizeLimits: false }), 'domain 256', 'domain-too-long', 2);
  });

  it('rejects a domain over 255 octets before the path limit', () => {
    assertSyntaxError(parseMailbox(`a@${domainOf(256)}`), 'domain 256', 'domain-too-long', 2);
  });

  it('counts the path after IDN conversion', () => {
    const local = 'a'.repeat(64);
    const unicode = `${'a'.repeat(50)}ü.${domainOf(134)}`;
    assert.equal(Buffer.byteLength(`<${local}@${unicode}>`), 254);
    assertSyntaxError(parseMailbox(`${local}@${unicode}`), 'A-labels make it longer', 'path-too-long', 0);
  });

  it('caps the input before doing any work', () => {
    const longest = `${'a'.repeat(4096 - '@x.org'.length)}@x.org`;
    assertParsed(parseMailbox(longest, { sizeLimits: false }), '4096 characters, the cap itself');
    const input = `${'a'.repeat(4097)}@x.org`;
    assertSyntaxError(parseMailbox(input), 'long', 'input-too-long', 4096);
    assertSyntaxError(parseReversePath(`<${input}>`), 'long path', 'input-too-long', 4096);
  });
});

describe('parseMailbox: internationalised addresses (RFC 6531)', () => {
  it('converts a U-label domain to A-labels for DNS and keeps U-labels for display', () => {
    const got = assertParsed(parseMailbox('user@bücher.example'), 'idn');
    assert.equal(got.asciiDomain, 'xn--bcher-kva.example');
    assert.equal(got.domain, 'bücher.example');
    assert.equal(got.address, 'user@xn--bcher-kva.example');
    assert.equal(got.requiresSmtputf8, false);
  });

  it('lower-cases U-labels and accepts A-labels given directly', () => {
    assert.equal(assertParsed(parseMailbox('user@BÜCHER.Example'), 'upper').asciiDomain, 'xn--bcher-kva.example');
    const aLabel = assertParsed(parseMailbox('user@XN--BCHER-KVA.example'), 'a-label');
    assert.equal(aLabel.asciiDomain, 'xn--bcher-kva.example');
    assert.equal(aLabel.domain, 'bücher.example');
  });

  it('requires SMTPUTF8 for a UTF-8 local part, quoted or not', () => {
    const got = assertParsed(parseMailbox('jörg@example.com'), 'utf8 local');
    assert.equal(got.requiresSmtputf8, true);
    assert.equal(got.address, 'jörg@example.com');
    assert.equal(assertParsed(parseMailbox('"j ö"@example.com'), 'quoted').requiresSmtputf8, true);
    assert.equal(assertParsed(parseMailbox('用户@例子.广告'), 'cjk').asciiDomain, 'xn--fsqu00a.xn--4rr70v');
    assert.equal(assertParsed(parseMailbox('😀@x.org'), 'astral').localPart, '😀');
  });

  it('takes U+FFFF, the last code point of one UTF-16 code unit, as one character', () => {
    assert.equal(assertParsed(parseMailbox('a\uffff@x.org'), 'U+FFFF').localPart, 'a\uffff');
    assertSyntaxError(parseMailbox('\uffff a@x.org'), 'position after U+FFFF', 'bad-character', 1);
  });

  it('measures a label on its A-label: one that UTS #46 maps shorter is checked after mapping', () => {
    // 40 mathematical bold a (80 UTF-16 code units) map to 40 ASCII letters: over 63 as written, not as sent.
    const mapped = assertParsed(parseMailbox(`a@${'\u{1d41a}'.repeat(40)}.example`), 'mapped label');
    assert.equal(mapped.asciiDomain, `${'a'.repeat(40)}.example`);
  });

  it('without utf8, refuses any non-ASCII character by position', () => {
    assertSyntaxError(parseMailbox('user@bücher.example', { utf8: false }), 'idn', 'non-ascii', 6);
    assertSyntaxError(parseMailbox('jörg@example.com', { utf8: false }), 'local', 'non-ascii', 1);
    assertSyntaxError(parseReversePath('<a@x.org>ü', { utf8: false }), 'path', 'non-ascii', 9);
    assertParsed(parseMailbox('user@xn--bcher-kva.example', { utf8: false }), 'a-label is ASCII');
  });

  it('refuses U+FFFD, the mark of bytes that were not UTF-8, in a local part and in a domain', () => {
    // A policy line's `\xff@victim.example`: read as a mailbox, the callout would ask for
    // another one, and every sender with other bad bytes there would be the same mailbox.
    const received = { tolerant: true, sizeLimits: false, internalForm: true } as const;
    for (const input of ['\ufffd@victim.example', 'bob\ufffd@victim.example', '"b \ufffd"@victim.example']) {
      assertSyntaxError(parseReversePath(input, received), input, 'not-utf8', 0);
      assertSyntaxError(parseForwardPath(input, received), input, 'not-utf8', 0);
      assertSyntaxError(parseReversePath(`<${input}>`), input, 'not-utf8', 1);
    }
    // Postfix's internal form, too: the byte is named, not the space that the other reading meets.
    assertSyntaxError(parseReversePath('john doe\ufffd@victim.example', received), 'internal form', 'not-utf8', 0);
    assertSyntaxError(parseMailbox('bob@vic\ufffdtim.example'), 'domain', 'not-utf8', 7);
    assertSyntaxError(parseMailbox('bob@victim.\ufffd'), 'tld', 'not-utf8', 11);
    assertSyntaxError(parseReversePath('bob@\ufffd.example', received), 'received domain', 'not-utf8', 4);
    const refused = parseMailbox('\ufffd@victim.example');
    assert.equal(!refused.ok && refused.error.message, 'local part holds U+FFFD, the mark of bytes that were not UTF-8 at 0');
  });
});

describe('parseMailbox: address literals (RFC 5321 §4.1.3)', () => {
  const valid: { input: string; asciiDomain: string; family: 4 | 6; ip: string }[] = [
    { input: 'a@[192.0.2.1]', asciiDomain: '[192.0.2.1]', family: 4, ip: '192.0.2.1' },
    { input: 'a@[IPv6:2001:db8::1]', asciiDomain: '[IPv6:2001:db8::1]', family: 6, ip: '2001:db8::1' },
    { input: 'a@[ipv6:2001:DB8:0:0:0:0:0:1]', asciiDomain: '[IPv6:2001:db8::1]', family: 6, ip: '2001:db8::1' },
    { input: 'a@[IPv6:::1]', asciiDomain: '[IPv6:::1]', family: 6, ip: '::1' },
    // RFC 5952 §5: an IPv4-mapped address keeps its dotted quad, in any spelling.
    { input: 'a@[IPv6:::ffff:192.0.2.1]', asciiDomain: '[IPv6:::ffff:192.0.2.1]', family: 6, ip: '::ffff:192.0.2.1' },
    { input: 'a@[IPv6:0:0:0:0:0:FFFF:c000:201]', asciiDomain: '[IPv6:::ffff:192.0.2.1]', family: 6, ip: '::ffff:192.0.2.1' },
  ];
  for (const { input, asciiDomain, family, ip } of valid) {
    it(input, () => {
      const got = assertParsed(parseMailbox(input), input);
      assert.equal(got.asciiDomain, asciiDomain);
      assert.equal(got.domain, asciiDomain);
      assert.deepEqual(got.literal, { family, ip });
      assert.equal(got.address, `a@${asciiDomain}`);
    });
  }

  const invalid: ErrorCase[] = [
    { input: 'a@[192.0.2.256]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[192.0.2]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[010.0.0.1]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[0x7f.1]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[2001:db8::1]', rule: 'unsupported-address-literal', position: 2 },
    { input: 'a@[IPv6:192.0.2.1]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[IPv6:fe80::1%eth0]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[IPv6:1:2:3:4:5:6:7:8:9]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[x400:c=us;a=b]', rule: 'unsupported-address-literal', position: 2 },
    // A Standardized-tag is an Ldh-str, which ends in a letter or digit: this is no tag at all.
    { input: 'a@[x-:c]', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[192.0.2.1', rule: 'bad-address-literal', position: 2 },
    { input: 'a@[192.0.2.1]x', rule: 'trailing-characters', position: 13 },
    { input: 'a@x.[192.0.2.1]', rule: 'bad-character', position: 4 },
  ];
  for (const { input, rule, position } of invalid) {
    it(`${input} -> ${rule}`, () => assertSyntaxError(parseMailbox(input), input, rule, position));
  }
});

describe('parseReversePath', () => {
  it('accepts the null reverse path <>', () => {
    assert.deepEqual(assertParsed(parseReversePath('<>'), '<>'), { kind: 'null' });
  });

  it('accepts <mailbox>', () => {
    const got = assertParsed(parseReversePath('<User@Example.com>'), 'path');
    assert.equal(got.kind, 'mailbox');
    if (got.kind === 'mailbox') assert.equal(got.mailbox.address, 'User@example.com');
  });

  it('accepts and ignores source routes', () => {
    for (const input of ['<@a.example,@b.example:user@c.example>', '<@a.example:user@c.example>']) {
      const got = assertParsed(parseReversePath(input), input);
      assert.deepEqual(got.kind === 'mailbox' && got.mailbox.address, 'user@c.example');
    }
  });

  it('finds the closing bracket after a quoted local part containing one', () => {
    const got = assertParsed(parseReversePath('<"a>b"@c.example>'), 'quoted >');
    assert.deepEqual(got.kind === 'mailbox' && got.mailbox.localPart, 'a>b');
  });

  it('with tolerant, takes a bare mailbox and the empty string as the null sender (Postfix policy)', () => {
    assert.deepEqual(assertParsed(parseReversePath('', { tolerant: true }), "''"), { kind: 'null' });
    assert.deepEqual(assertParsed(parseReversePath('<>', { tolerant: true }), '<>'), { kind: 'null' });
    const got = assertParsed(parseReversePath('user@example.com', { tolerant: true }), 'bare');
    assert.deepEqual(got.kind === 'mailbox' && got.mailbox.address, 'user@example.com');
    assertParsed(parseReversePath('<user@example.com>', { tolerant: true }), 'bracketed');
  });

  const invalid: ErrorCase[] = [
    { input: '', rule: 'missing-angle-bracket', position: 0 },
    { input: 'user@example.com', rule: 'missing-angle-bracket', position: 0 },
    { input: '<user@example.com', rule: 'missing-angle-bracket', position: 17 },
    { input: '<user@example.com> SIZE=10', rule: 'trailing-characters', position: 18 },
    { input: '<> ', rule: 'trailing-characters', position: 2 },
    { input: '<user>', rule: 'missing-at', position: 5 },
    { input: '< user@example.com>', rule: 'bad-character', position: 1 },
    { input: '<@a.example:@c.example>', rule: 'empty-local-part', position: 12 },
    { input: '<user@example.com >', rule: 'bad-character', position: 17 },
    { input: '<a@[192.0.2.1]x>', rule: 'bad-character', position: 14 },
    { input: '<a@[192.0.2.1]', rule: 'missing-angle-bracket', position: 14 },
    { input: '<@a.example>', rule: 'bad-source-route', position: 11 },
    { input: '<@a.example;user@c.example>', rule: 'bad-character', position: 11 },
    { input: '<@:user@c.example>', rule: 'empty-domain', position: 2 },
    { input: '<@a.example,b.example:user@c.example>', rule: 'bad-source-route', position: 12 },
    { input: '<@a..example:user@c.example>', rule: 'empty-domain-label', position: 4 },
  ];
  for (const { input, rule, position } of invalid) {
    it(`${JSON.stringify(input)} -> ${rule} at ${position}`, () => {
      assertSyntaxError(parseReversePath(input), input, rule, position);
    });
  }

  it("with internalForm, reads Postfix's internal form, whose quotes smtpd removed, and quotes it back", () => {
    const internal = { tolerant: true, internalForm: true } as const;
    const cases: [string, string, string][] = [
      ['john doe@example.org', 'john doe', '"john doe"@example.org'],
      ['a@b@example.org', 'a@b', '"a@b"@example.org'],
      ['a..b@example.org', 'a..b', '"a..b"@example.org'],
      ['a"b\\c@example.org', 'a"b\\c', '"a\\"b\\\\c"@example.org'],
      ['jörg m@bücher.example', 'jörg m', '"jörg m"@xn--bcher-kva.example'],
    ];
    for (const [input, localPart, address] of cases) {
      const paths: ParseResult<ReversePath | ForwardPath>[] = [parseReversePath(input, internal), parseForwardPath(input, internal)];
      for (const path of paths) {
        const got = assertParsed(path, input);
        assert.deepEqual(got.kind === 'mailbox' && [got.mailbox.localPart, got.mailbox.address], [localPart, address], input);
      }
    }
    // Not without it (people type the external form), and never past a control character or a
    // source route. After a local part it holds, the fault named is what follows, not the space.
    assertSyntaxError(parseMailbox('john doe@example.org'), 'strict', 'bad-character', 4);
    assertSyntaxError(parseReversePath('a..b@example.org', { tolerant: true }), 'tolerant only', 'empty-atom', 2);
    assertSyntaxError(parseReversePath('john doe@example..org', internal), 'domain', 'empty-domain-label', 17);
    assertSyntaxError(parseReversePath('john doe', internal), 'no domain', 'missing-at', 8);
    assertSyntaxError(parseReversePath('john doe@', internal), 'empty domain', 'empty-domain', 9);
    assertSyntaxError(parseReversePath('john\tdoe@example.org', internal), 'tab', 'bad-character', 4);
    assertSyntaxError(parseReversePath('john\ud800 doe@example.org', internal), 'lone surrogate', 'bad-character', 4);
    assertSyntaxError(parseReversePath('john doe@[192.0.2.1]x', internal), 'after a literal', 'bad-character', 4);
    assertSyntaxError(parseReversePath('@a.example:u@c.example', internal), 'route', 'empty-local-part', 0);
  });

  it('with tolerant, still checks a bare mailbox', () => {
    assertSyntaxError(parseReversePath('user', { tolerant: true }), 'user', 'missing-at', 4);
    assertSyntaxError(parseReversePath(' ', { tolerant: true }), 'space', 'bad-character', 0);
  });
});

describe('parseForwardPath', () => {
  it('accepts <mailbox> and source routes', () => {
    const got = assertParsed(parseForwardPath('<@relay.example:user@example.com>'), 'route');
    assert.deepEqual(got.kind === 'mailbox' && got.mailbox.address, 'user@example.com');
  });

  it('accepts <Postmaster> without a domain, in any case', () => {
    for (const input of ['<Postmaster>', '<postmaster>', '<POSTMASTER>']) {
      assert.deepEqual(assertParsed(parseForwardPath(input), input), { kind: 'postmaster' });
    }
    assert.deepEqual(assertParsed(parseForwardPath('postmaster', { tolerant: true }), 'bare'), { kind: 'postmaster' });
    assertSyntaxError(parseForwardPath('postmaster'), 'bare, strict', 'missing-angle-bracket', 0);
    assertSyntaxError(parseForwardPath('<abuse>'), 'other local part', 'missing-at', 6);
  });

  it('refuses the null path', () => {
    assertSyntaxError(parseForwardPath('<>'), '<>', 'null-forward-path', 0);
    assertSyntaxError(parseForwardPath('<>', { tolerant: true }), '<> tolerant', 'null-forward-path', 0);
    assertSyntaxError(parseForwardPath('', { tolerant: true }), "''", 'empty-input', 0);
  });

  it('accepts a bare mailbox with tolerant', () => {
    const got = assertParsed(parseForwardPath('user@bücher.example', { tolerant: true }), 'bare');
    assert.deepEqual(got.kind === 'mailbox' && got.mailbox.asciiDomain, 'xn--bcher-kva.example');
  });
});

describe('isPostmaster (RFC 5321 §4.5.1)', () => {
  const cases: [string, boolean][] = [
    ['postmaster@example.com', true],
    ['PostMaster@example.com', true],
    ['"postmaster"@example.com', true],
    ['postmaster.x@example.com', false],
    ['abuse@example.com', false],
  ];
  for (const [input, want] of cases) {
    it(`${input} -> ${want}`, () => assert.equal(isPostmaster(assertParsed(parseMailbox(input), input)), want));
  }
});
