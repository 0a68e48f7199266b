import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { asciiLower, isDigestedKeyPart, keyPart, mailboxKey } from '../../src/address/index.js';
import { elapsedMs } from '../support/fuzz.js';

describe('mailboxKey', () => {
  it('folds A-Z only, and keys a U-label domain and its A-label alike', () => {
    assert.equal(mailboxKey('ÉLISE@Bücher.Example'), 'Élise@xn--bcher-kva.example');
    assert.equal(mailboxKey('Bob@XN--BCHER-KVA.Example'), 'bob@xn--bcher-kva.example');
    assert.equal(mailboxKey('\u212Aate@example.org'), '\u212Aate@example.org');
    assert.equal(mailboxKey('"A@B"@Bücher.Example'), '"a@b"@xn--bcher-kva.example', 'the domain follows the last @');
  });

  it('keeps a domain that is no valid IDN as written, and folds text without @ whole', () => {
    assert.equal(mailboxKey('bob@a\u200d.example'), 'bob@a\u200d.example');
    assert.equal(mailboxKey('Bob'), 'bob');
  });
});

describe('asciiLower', () => {
  it('changes only A-Z, as C tolower() does', () => {
    assert.equal(asciiLower('ABC.Example'), 'abc.example');
    assert.equal(asciiLower('\u212A\u0130X'), '\u212A\u0130x');
  });
});

describe('keyPart', () => {
  it('keeps the key of every address RFC 5321 allows as it was, up to 256 octets', () => {
    const longest = `${'l'.repeat(64)}@${'d'.repeat(63)}.${'e'.repeat(63)}.${'f'.repeat(61)}.example`.slice(0, 256);
    const utf8 = `${'ü'.repeat(128)}`; // 256 octets
    for (const address of ['bob@sender.example', '', longest, utf8, 'a/b%c@x.example']) {
      assert.equal(keyPart(address), address);
    }
    assert.notEqual(keyPart(`${utf8}x`), `${utf8}x`, 'one octet more is digested');
    assert.match(keyPart('ü'.repeat(200)), /^ü{32}…/, 'never cut within a character');
    assert.match(keyPart('日'.repeat(86)), /^日{21}…/, '86 characters of 3 octets are 258 octets');
  });

  it('tells its digest of an over-long part, which is its own key, from an address', () => {
    const digested = keyPart(`${'a'.repeat(300)}@example.org`);
    assert.match(digested, /^a{64}…\[sha256:[0-9a-f]{64}\]$/);
    assert.equal(keyPart(digested), digested);
    assert.ok(isDigestedKeyPart(digested), 'isDigestedKeyPart(digested)');
    const long = 'a'.repeat(300);
    assert.notEqual(keyPart(`${long}\ud800`), keyPart(`${long}\udc00`), 'lone surrogates that UTF-8 would encode alike');
    for (const part of ['bob@example.org', 'postmaster@[192.0.2.1]', `${'a'.repeat(300)}@example.org`]) assert.ok(!isDigestedKeyPart(part), part);
  });
});

describe('mailboxKey and keyPart fuzzed', () => {
  it('key any text without throwing, within 256 octets, and keyPart is its own key', () => {
    const text = fc.oneof(fc.string({ unit: 'binary', maxLength: 400 }), fc.emailAddress(), fc.tuple(fc.string({ maxLength: 300 }), fc.domain()).map(([local, domain]) => `${local}@${domain}`));
    fc.assert(
      fc.property(text, (address) => {
        const key = keyPart(mailboxKey(address));
        assert.ok(Buffer.byteLength(key) <= 256, key);
        assert.equal(keyPart(key), key);
      }),
      { numRuns: 500 },
    );
  });

  it('keys the longest policy attribute (4 kB) and far longer crafted texts in linear time', () => {
    for (const crafted of ['@'.repeat(100_000), `a@${'ü.'.repeat(50_000)}`, `${'Ä'.repeat(100_000)}@X`, '\ud800'.repeat(100_000)]) {
      assert.ok(elapsedMs(() => keyPart(mailboxKey(crafted))) < 500, crafted.slice(0, 10));
    }
  });
});
