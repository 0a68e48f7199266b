// Property tests of cleanAddress (bounce/recipient), which reads the address of a report's
// Final-Recipient, Original-Recipient and prose lines: any text gives a trimmed part of it, a
// name-addr gives its address, and long runs of its brackets and spaces stay linear.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { cleanAddress, makeRecipient } from '../../src/bounce/recipient.js';
import { elapsedMs } from '../support/fuzz.js';

describe('cleanAddress fuzzed', () => {
  it('gives a trimmed part of any text', () => {
    const text = fc.string({ unit: fc.oneof(fc.constantFrom('<', '>', ' ', '\t', '"', '@', 'a', '\n'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), maxLength: 60 });
    fc.assert(
      fc.property(text, (value) => {
        const address = cleanAddress(value);
        assert.equal(address, address.trim());
        assert.ok(value.includes(address), JSON.stringify(address));
      }),
      { numRuns: 2000 },
    );
  });

  it('gives the address of a name-addr or of an angle-addr', () => {
    const noAngles = (unit: fc.Arbitrary<string>) => fc.string({ unit, maxLength: 20 }).filter((s) => !/[<>]/.test(s));
    const name = noAngles(fc.constantFrom('"', ' ', 'B', 'o', '\\', ',', '@', ':'));
    const address = fc.tuple(noAngles(fc.constantFrom('a', '.', '+', '"', ' ')), noAngles(fc.constantFrom('b', '.', '-', '[', ']'))).map(([local, domain]) => `${local}@${domain}`);
    fc.assert(
      fc.property(name, address, fc.constantFrom('', ' ', '\t'), (display, mailbox, space) => {
        assert.equal(cleanAddress(`${space}${display}<${space}${mailbox}${space}>${space}`), mailbox.trim());
      }),
      { numRuns: 1000 },
    );
  });

  it('stays linear on long runs of brackets, spaces and at-signs', () => {
    for (const text of ['<'.repeat(200_000), '>'.repeat(200_000), `<${' '.repeat(200_000)}x`, `a <b@c>${' '.repeat(200_000)}!`, `${'"a" <'.repeat(40_000)}b@c>`, '<@'.repeat(100_000)]) {
      const ms = elapsedMs(() => cleanAddress(text));
      assert.ok(ms < 100, `${JSON.stringify(text.slice(0, 10))}: ${ms.toFixed(0)} ms`);
    }
  });
});

describe('makeRecipient edges (mutation tests)', () => {
  it('takes a bare 400 reply as a temporary status, 4.0.0', () => {
    assert.equal(makeRecipient({ address: 'a@example.org', diagnostic: '400 try again later', defaultAction: 'failed', final: true }).status, '4.0.0');
  });
  it('reads user-unknown text across a run of white space, and gives the diagnostic with it collapsed', () => {
    const recipient = makeRecipient({ address: 'a@example.org', diagnostic: '550 user \t unknown', defaultAction: 'failed' });
    assert.deepEqual([recipient.hard, recipient.diagnostic], [true, '550 user unknown']);
  });
  it('cleans the Original-Recipient as it does the address: <Bob@example.org> is no forwarding of Bob@example.org', () => {
    assert.equal(makeRecipient({ address: 'Bob@example.org', originalRecipient: ' <Bob@example.org>', defaultAction: 'failed' }).originalRecipient, 'Bob@example.org');
  });
});
