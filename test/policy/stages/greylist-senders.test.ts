// The greylist stage's memo of normalised senders: bounded in what one entry may hold.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { normaliseSender } from '../../../src/checks/greylist/index.js';
import { SENDER_MEMO_LENGTH, normalisedSenders } from '../../../src/policy/stages/greylist.js';

describe('greylist normalised senders', () => {
  it('remembers a sender up to SENDER_MEMO_LENGTH characters, and normalises a longer one each time without remembering it', () => {
    const senders = normalisedSenders(true);
    const domain = '@sender.example';
    const longest = `${'b'.repeat(SENDER_MEMO_LENGTH - domain.length)}${domain}`;
    const tooLong = `prvs=0123abcdef=${'b'.repeat(4000)}${domain}`;
    assert.equal(senders.get(longest), normaliseSender(longest, { verp: true }));
    assert.equal(senders.size, 1, 'a sender of SENDER_MEMO_LENGTH characters is remembered');
    for (let i = 0; i < 2; i++) assert.equal(senders.get(tooLong), normaliseSender(tooLong, { verp: true }), 'a long one is still normalised (its BATV tag taken off)');
    assert.equal(senders.size, 1, 'expected a sender longer than SENDER_MEMO_LENGTH not to be remembered (up to 8,192 of 4 kB held tens of MB)');
    assert.equal(senders.get('bob+list-1234@sender.example'), normaliseSender('bob+list-1234@sender.example', { verp: true }));
    assert.equal(senders.size, 2);
  });
});
