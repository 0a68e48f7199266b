import assert from 'node:assert/strict';
import { test } from 'node:test';
import { shown } from '../../src/core/text.js';

test('shown prints a plain value as it is', () => {
  assert.equal(shown('user@example.org'), 'user@example.org');
  assert.equal(shown('üser@bücher.example'), 'üser@bücher.example');
});

test('shown quotes an empty value and one holding a C0 control or DEL', () => {
  assert.equal(shown(''), '""');
  assert.equal(shown('a\x1b[2Jb'), '"a\\u001b[2Jb"');
  assert.equal(shown('a\x7fb'), '"a\x7fb"');
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
