import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { CONTROL_CHARACTER, DISPLAY_CONTROL, clip, escapeDisplayControls, shown, shownField, shownJson } from '../../src/core/text.js';
import { elapsedMs } from '../support/fuzz.js';

test('shown prints a plain value as it is', () => {
  assert.equal(shown('user@example.org'), 'user@example.org');
  assert.equal(shown('üser@bücher.example'), 'üser@bücher.example');
});

test('escapeDisplayControls escapes every C1 control, the first (U+0080) and the last (U+009F) too', () => {
  assert.equal(escapeDisplayControls('a\x80b\x9fc'), 'a\\u0080b\\u009fc');
  assert.equal(escapeDisplayControls('a\x7fb'), 'a\x7fb', 'DEL is left to JSON.stringify, which keeps it');
});

test('shown quotes an empty value and one holding a C0 control or DEL', () => {
  assert.equal(shown(''), '""');
  assert.equal(shown('a\x1b[2Jb'), '"a\\u001b[2Jb"');
  assert.equal(shown('a\x7fb'), '"a\x7fb"');
});

test('shownField quotes a field holding white space or a double quote, and only a field', () => {
  assert.equal(shownField('user@example.org'), 'user@example.org');
  assert.equal(shownField('"john doe"@example.org'), '"\\"john doe\\"@example.org"');
  assert.equal(shownField('"john"@example.org'), '"\\"john\\"@example.org"');
  assert.equal(shownField('a\u00a0b'), '"a\u00a0b"');
  assert.equal(shownField('a\\b'), 'a\\b', 'a backslash neither splits nor starts a field');
  assert.equal(shown('no such user'), 'no such user');
});

test('clip keeps a text of max characters whole and cuts a longer one to max, ending in "..."', () => {
  assert.equal(clip('abcdef', 6), 'abcdef');
  assert.equal(clip('abcdefg', 6), 'abc...');
  assert.equal(clip('abcdefg', 6).length, 6);
});

test('CONTROL_CHARACTER matches the C0 controls and DEL, not printable or 8-bit text', () => {
  for (const c of ['\x00', '\r', '\n', '\x1f', '\x7f']) assert.ok(CONTROL_CHARACTER.test(`a${c}b`), JSON.stringify(c));
  for (const text of [' ~', 'üser', '\u00a0']) assert.ok(!CONTROL_CHARACTER.test(text), text);
});

test('shown escapes C1 controls, which a terminal may read as CSI', () => {
  const printed = shown('v=spf1 \u009b2J -all');
  assert.equal(printed, '"v=spf1 \\u009b2J -all"');
  assert.doesNotMatch(printed, /[\x80-\x9f]/);
  assert.equal(JSON.parse(printed), 'v=spf1 \u009b2J -all');
});

test('shown escapes line separators and bidi controls, which make a viewer show other text than there is', () => {
  // U+202E reverses what follows: raw, this sender would show as "x@paypal.com".
  const printed = shown('\u202emoc.lapyap@x');
  assert.equal(printed, '"\\u202emoc.lapyap@x"');
  assert.equal(JSON.parse(printed), '\u202emoc.lapyap@x');
  assert.equal(shown('a\u2028b\u2029c\u2066d\u200fe\u061c'), '"a\\u2028b\\u2029c\\u2066d\\u200fe\\u061c"');
});

test('fuzz: shown and shownJson never give a raw control, and read back as what they were given', () => {
  const unit = fc.oneof(fc.constantFrom('\u009b', '\u0085', '\u2028', '\u2029', '\u202e', '\u2066', '\u200f', '\u061c', '\x1b', '\r', '\n', '\\', '"', 'u', '0', 'a', '\ud800'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }));
  const text = fc.string({ unit, maxLength: 40 });
  const rawControl = new RegExp(`[\\x00-\\x1f]|${DISPLAY_CONTROL.source}`);
  fc.assert(
    fc.property(text, (value) => {
      const printed = shown(value);
      if (printed !== value) assert.equal(JSON.parse(printed), value);
      assert.doesNotMatch(printed, rawControl);
      const json = shownJson({ [value]: [value] });
      assert.deepEqual(JSON.parse(json), { [value]: [value] });
      assert.doesNotMatch(json, rawControl);
    }),
    { numRuns: 2000 },
  );
  // A million characters, half of them controls: linear, about 100 ms of CPU time (up to 900 ms
  // on the clock of a loaded machine); an escaper that scans again from the start after each
  // control took 5 s at a fortieth of this size, so hours here.
  const ms = elapsedMs(() => shown('\u202e\\'.repeat(500_000)));
  assert.ok(ms < 2000, `${ms.toFixed(0)} ms`);
});
