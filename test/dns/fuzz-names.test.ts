// Property tests of canonicalName (one form per name, whatever the case and the final dot) and
// of queryName (any text is a name node:dns can put on the wire, or a reason why not).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalName, MAX_NAME_LENGTH, queryName } from '../../src/dns/names.js';
import { reverseName } from '../../src/dns/reverse.js';
import { elapsedMs } from '../support/fuzz.js';

describe('canonicalName fuzzed', () => {
  it('is idempotent and equal for names that differ in ASCII case or a final dot', () => {
    fc.assert(
      fc.property(fc.oneof(fc.domain(), fc.string({ unit: 'binary', maxLength: 30 })), fc.boolean(), (name, dot) => {
        const canonical = canonicalName(name);
        // Only one final dot marks a name as fully qualified: "a.." is the name "a.", not "a".
        if (!name.endsWith('..')) assert.equal(canonicalName(canonical), canonical);
        const upper = name.replace(/[a-z]/g, (c) => c.toUpperCase());
        assert.equal(canonicalName(dot && !name.endsWith('.') ? `${upper}.` : upper), canonical);
      }),
      { numRuns: 500 },
    );
  });
});

describe('queryName fuzzed', () => {
  it('answers any text with an ASCII name of at most MAX_NAME_LENGTH characters, or a reason', () => {
    const label = fc.oneof(fc.domain(), fc.string({ unit: 'grapheme', maxLength: 70 }), fc.string({ unit: 'binary', maxLength: 300 }));
    fc.assert(
      fc.property(fc.array(label, { maxLength: 6 }), (labels) => {
        const name = labels.join('.');
        const answer = queryName(name);
        if (!answer.ok) return assert.ok(['too-long', 'not-idna', 'nul'].includes(answer.problem), '[\'too-long\', \'not-idna\', \'nul\'].includes(answer.problem)');
        assert.ok(answer.name.length <= MAX_NAME_LENGTH, name);
        assert.doesNotMatch(answer.name, /[\u0080-\uffff]/);
      }),
      { numRuns: 500 },
    );
  });
});

describe('DNS names in linear time', () => {
  it('queryName refuses a long name of many different non-ASCII characters without a quadratic Punycode encoding', () => {
    // Punycode encodes a label in time its length times its distinct code points: a 16000
    // character label of CJK ideographs took 600 ms, one of 64000 over 2 s.
    const label = Array.from({ length: 16_000 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
    for (const text of [`${label}.example`, `xn--${'a'.repeat(16_000)}-${'b'.repeat(16_000)}`, `${'ä'.repeat(100_000)}.example`]) {
      assert.deepEqual(queryName(text), { ok: false, problem: 'too-long' });
      assert.ok(elapsedMs(() => queryName(text)) < 50, text.slice(0, 10));
    }
  });


  it('canonicalName and reverseName answer long crafted texts without a quadratic scan', () => {
    for (const text of ['.'.repeat(200_000), 'a.'.repeat(100_000), `${'A'.repeat(200_000)}.`, ':'.repeat(100_000), `::ffff:${'1.'.repeat(50_000)}`]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => {
        canonicalName(text);
        try {
          reverseName(text);
        } catch {
          // Refusing a text that is no address is its answer; only the time is checked here.
        }
      }) < 200, text.slice(0, 10));
    }
  });
});
