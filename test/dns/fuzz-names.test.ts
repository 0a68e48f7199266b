// Property test of canonicalName: one form per name, whatever the case and the final dot.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalName } from '../../src/dns/names.js';
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

describe('DNS names in linear time', () => {
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
