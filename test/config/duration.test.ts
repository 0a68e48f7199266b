// Durations as administrators write them: examples, limits, and any input fuzzed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatDuration, parseDuration } from '../../src/config/duration.js';
import { elapsedMs } from '../support/fuzz.js';

describe('durations', () => {
  it('reads the units and bare seconds, and refuses what is no duration', () => {
    assert.deepEqual(parseDuration('30s'), { ok: true, ms: 30_000 });
    assert.deepEqual(parseDuration('1.5h'), { ok: true, ms: 5_400_000 });
    assert.deepEqual(parseDuration(300), { ok: true, ms: 300_000 });
    assert.deepEqual(parseDuration(' 250ms '), { ok: true, ms: 250 });
    for (const bad of ['', '5 minutes', '-1s', '1e3', 'Infinity', '0x10']) assert.equal(parseDuration(bad).ok, false, bad);
    assert.equal(parseDuration(-1).ok, false);
    assert.equal(parseDuration(Number.NaN).ok, false);
  });

  it('reads a bare number written as text as seconds, rounds to the nearest millisecond, and takes no fraction without its digits', () => {
    assert.deepEqual(parseDuration('90'), { ok: true, ms: 90_000 }, 'a bare number in a file or flag is seconds, as Postfix reads it');
    assert.deepEqual(parseDuration('1.0005s'), { ok: true, ms: 1001 }, '1000.5 ms rounds up, not down');
    assert.deepEqual(parseDuration('0.0004s'), { ok: true, ms: 0 }, '0.4 ms rounds down');
    for (const bad of ['1.s', '1.', '.5s']) assert.equal(parseDuration(bad).ok, false, `${bad}: a decimal point needs digits on both sides`);
  });

  it('refuses a duration too long to keep, saying what was expected without quoting the value (the message that gives the reason quotes it)', () => {
    const digits = '9'.repeat(400);
    const parsed = parseDuration(`${digits}w`);
    assert.equal(parsed.ok, false);
    assert.deepEqual(parsed, { ok: false, reason: 'expected a shorter duration: callout keeps none longer than 285,000 years' });
    assert.equal(parseDuration(1e300).ok, false);
  });

  it('never throws, gives a safe whole number of ms, and formats to a text that reads back the same', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 60 }), fc.stringMatching(/^\s*\d{1,30}(\.\d{1,5})?\s*(ms|s|m|h|d|w)?\s*$/), fc.double()), (input) => {
        const parsed = parseDuration(input);
        if (!parsed.ok) return;
        assert.ok(Number.isSafeInteger(parsed.ms) && parsed.ms >= 0, `${String(input)} -> ${parsed.ms}`);
        assert.deepEqual(parseDuration(formatDuration(parsed.ms)), parsed);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('durations in linear time', () => {
  it('refuses long crafted texts without a quadratic scan', () => {
    for (const text of [`${'1'.repeat(100_000)}s`, `${' '.repeat(100_000)}1x`, `1${' '.repeat(100_000)}x`, `${'1.'.repeat(100_000)}s`, '1 '.repeat(100_000), `1${'.1'.repeat(100_000)}`]) {
      // Generous bound against a quadratic scan, not a speed claim.
      assert.ok(elapsedMs(() => parseDuration(text)) < 200, text.slice(0, 10));
      assert.equal(parseDuration(text).ok, false, text.slice(0, 10));
    }
  });
});
