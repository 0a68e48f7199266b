import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { asciiLower, mailboxKey } from '../../src/address/index.js';

describe('mailboxKey', () => {
  it('folds A-Z only, and keys a U-label domain and its A-label alike', () => {
    assert.equal(mailboxKey('ÉLISE@Bücher.Example'), 'Élise@xn--bcher-kva.example');
    assert.equal(mailboxKey('Bob@XN--BCHER-KVA.Example'), 'bob@xn--bcher-kva.example');
    assert.equal(mailboxKey('\u212Aate@example.org'), '\u212Aate@example.org');
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
