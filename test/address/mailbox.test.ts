import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CalloutError } from '../../src/core/errors.js';
import {
  AddressSyntaxError,
  formatMailbox,
  normaliseDomain,
  parseMailbox,
  type AddressSyntaxRule,
} from '../../src/address/index.js';
import { assertParsed, assertSyntaxError } from './support.js';

describe('AddressSyntaxError', () => {
  it('is a CalloutError with code ADDRESS_SYNTAX, a rule and a position', () => {
    const error = new AddressSyntaxError('unbalanced-quote', 7, 'unbalanced quote');
    assert.ok(error instanceof CalloutError, 'error instanceof CalloutError');
    assert.equal(error.code, 'ADDRESS_SYNTAX');
    assert.equal(error.name, 'AddressSyntaxError');
    assert.equal(error.rule, 'unbalanced-quote');
    assert.equal(error.position, 7);
    assert.equal(error.message, 'unbalanced quote at 7');
  });
});

describe('normaliseDomain', () => {
  const valid: { input: string; ascii: string; unicode: string }[] = [
    { input: 'Example.COM', ascii: 'example.com', unicode: 'example.com' },
    { input: 'mx1.example.com.', ascii: 'mx1.example.com', unicode: 'mx1.example.com' },
    { input: 'bücher.example', ascii: 'xn--bcher-kva.example', unicode: 'bücher.example' },
    { input: 'xn--bcher-kva.example', ascii: 'xn--bcher-kva.example', unicode: 'bücher.example' },
    { input: 'ＥＸＡＭＰＬＥ.com', ascii: 'example.com', unicode: 'example.com' },
    { input: 'faß.de', ascii: 'xn--fa-hia.de', unicode: 'faß.de' },
  ];
  for (const { input, ascii, unicode } of valid) {
    it(input, () => assert.deepEqual(assertParsed(normaliseDomain(input), input), { ascii, unicode }));
  }

  it('accepts 255 octets and refuses 256', () => {
    const labels = (count: number, last: number) => [...Array<string>(count).fill('a'.repeat(63)), 'b'.repeat(last)].join('.');
    const exact = labels(3, 63);
    assert.equal(exact.length, 255);
    assertParsed(normaliseDomain(exact), '255');
    assertParsed(normaliseDomain(`${exact}.`), '255 and the root');
    assertSyntaxError(normaliseDomain(`${labels(3, 62)}.bb`), '256', 'domain-too-long', 0);
  });

  const invalid: { input: string; rule: AddressSyntaxRule; position: number }[] = [
    { input: '', rule: 'empty-input', position: 0 },
    { input: '.', rule: 'empty-domain', position: 0 },
    { input: '..', rule: 'empty-domain-label', position: 0 },
    { input: 'a..b', rule: 'empty-domain-label', position: 2 },
    { input: 'a.b..', rule: 'empty-domain-label', position: 4 },
    { input: '[192.0.2.1]', rule: 'bad-character', position: 0 },
    { input: 'exa mple.com', rule: 'bad-character', position: 3 },
    { input: '-a.com', rule: 'bad-domain-label', position: 0 },
    { input: 'xn--zz.com', rule: 'bad-idn-label', position: 0 },
    { input: `x.${'a'.repeat(64)}`, rule: 'label-too-long', position: 2 },
    { input: 'a'.repeat(4097), rule: 'input-too-long', position: 4096 },
  ];
  for (const { input, rule, position } of invalid) {
    it(`${JSON.stringify(input.slice(0, 20))} -> ${rule} at ${position}`, () => {
      assertSyntaxError(normaliseDomain(input), input, rule, position);
    });
  }

  it('without utf8, refuses U-labels', () => {
    assertSyntaxError(normaliseDomain('bücher.example', { utf8: false }), 'idn', 'non-ascii', 1);
  });
});

describe('formatMailbox', () => {
  it('gives the ASCII form to send and the Unicode form to show', () => {
    const mailbox = assertParsed(parseMailbox('"Jörg M"@Bücher.example'), 'idn');
    assert.equal(formatMailbox(mailbox), '"Jörg M"@xn--bcher-kva.example');
    assert.equal(formatMailbox(mailbox, 'ascii'), mailbox.address);
    assert.equal(formatMailbox(mailbox, 'unicode'), '"Jörg M"@bücher.example');
  });
});
