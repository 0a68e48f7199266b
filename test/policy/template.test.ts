// Configured answer texts: placeholders filled in one pass, values taken as they are.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compileTemplate } from '../../src/policy/template.js';

describe('compileTemplate', () => {
  it('fills every placeholder and its aliases, and tells which it uses', () => {
    const text = compileTemplate('Greylisted, retry in {seconds} (%s) s for %r at {retryAt}', { '{seconds}': 'seconds', '%s': 'seconds', '%r': 'domain', '{retryAt}': 'retryAt', '{reason}': 'reason' });
    assert.equal(text.fill({ seconds: '300', domain: 'example.org', retryAt: 'soon', reason: 'new' }), 'Greylisted, retry in 300 (300) s for example.org at soon');
    assert.equal(text.uses('retryAt'), true);
    assert.equal(text.uses('reason'), false);
  });

  it('takes a value as it is: no $-patterns, no placeholders inside values', () => {
    const text = compileTemplate('Sender address rejected: {sender}: {reason}', { '{sender}': 'sender', '{reason}': 'reason' });
    // String.replaceAll read these as the text before the match, the match and the text after it.
    assert.equal(text.fill({ sender: "a$`b$&c$'d$$", reason: 'x' }), "Sender address rejected: a$`b$&c$'d$$: x");
    assert.equal(text.fill({ sender: '"{reason}"@example.org', reason: 'no such user' }), 'Sender address rejected: "{reason}"@example.org: no such user');
  });

  it('prefers the longer of two placeholders that start at one place, and leaves unknown braces alone', () => {
    const text = compileTemplate('{a}{ab}{c} {', { '{a}': 'a', '{ab}': 'ab' });
    assert.equal(text.fill({ a: '1', ab: '2' }), '12{c} {');
    // One placeholder the start of another: the longer is taken, whichever is named first.
    assert.equal(compileTemplate('%s %sec', { '%s': 's', '%sec': 'sec' }).fill({ s: '1', sec: '2' }), '1 2');
    assert.equal(compileTemplate('', { '{a}': 'a' }).fill({ a: 'x' }), '');
    assert.equal(compileTemplate('{a}', { '{a}': 'a' }).fill({ a: '' }), '');
  });

  it('gives what splitting the text at its placeholders and joining with the values gives, for any text and values', () => {
    const placeholders = { '{x}': 'x', '%s': 's' } as const;
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constantFrom('{x}', '%s', '{', '%', '$&', "$'", '$`', 'x', '}'), fc.string({ maxLength: 4 })), { maxLength: 12 }), fc.string(), fc.string(), (pieces, x, s) => {
        const text = pieces.join('');
        const expected = text.split('{x}').map((part) => part.split('%s').join(s)).join(x);
        assert.equal(compileTemplate(text, placeholders).fill({ x, s }), expected);
      }),
    );
  });
});
