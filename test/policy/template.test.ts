// Configured answer texts: placeholders filled in one pass, values taken as they are.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compileTemplate } from '../../src/policy/template.js';

describe('compileTemplate', () => {
  it('fills every placeholder and its aliases, and tells which it uses', () => {
    const text = compileTemplate('Greylisted, retry in {seconds} (%s) s for %r at {retryAt}', { '{seconds}': 'seconds', '%s': 'seconds', '%r': 'domain', '{retryAt}': 'retryAt', '{reason}': 'reason' }, 'text');
    assert.equal(text.fill({ seconds: '300', domain: 'example.org', retryAt: 'soon', reason: 'new' }), 'Greylisted, retry in 300 (300) s for example.org at soon');
    assert.equal(text.uses('retryAt'), true);
    assert.equal(text.uses('reason'), false);
  });

  it('takes a value as it is: no $-patterns, no placeholders inside values', () => {
    const text = compileTemplate('Sender address rejected: {sender}: {reason}', { '{sender}': 'sender', '{reason}': 'reason' }, 'rejectText');
    // String.replaceAll read these as the text before the match, the match and the text after it.
    assert.equal(text.fill({ sender: "a$`b$&c$'d$$", reason: 'x' }), "Sender address rejected: a$`b$&c$'d$$: x");
    assert.equal(text.fill({ sender: '"{reason}"@example.org', reason: 'no such user' }), 'Sender address rejected: "{reason}"@example.org: no such user');
  });

  it('prefers the longer of two placeholders that start at one place, and leaves other braces alone', () => {
    const text = compileTemplate('{a}{ab}{ {} {a b} }{{a}} {', { '{a}': 'a', '{ab}': 'ab' }, 'text');
    assert.equal(text.fill({ a: '1', ab: '2' }), '12{ {} {a b} }{1} {');
    // One placeholder the start of another: the longer is taken, whichever is named first.
    assert.equal(compileTemplate('%s %sec', { '%s': 's', '%sec': 'sec' }, 'text').fill({ s: '1', sec: '2' }), '1 2');
    assert.equal(compileTemplate('', { '{a}': 'a' }, 'text').fill({ a: 'x' }), '');
    assert.equal(compileTemplate('{a}', { '{a}': 'a' }, 'text').fill({ a: '' }), '');
    // A placeholder at the very end of the text, one character long included.
    assert.equal(compileTemplate('100%', { '%': 'p' }, 'text').fill({ p: ' per cent' }), '100 per cent');
  });

  it('gives what splitting the text at its placeholders and joining with the values gives, for any text and values', () => {
    const placeholders = { '{x}': 'x', '%s': 's' } as const;
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constantFrom('{x}', '{y}', '%s', '{', '%', '$&', "$'", '$`', 'x', '}'), fc.string({ maxLength: 4 })), { maxLength: 12 }), fc.string(), fc.string(), (pieces, x, s) => {
        const text = pieces.join('');
        const literals = text.split('{x}').map((part) => part.split('%s'));
        if (literals.flat().some((literal) => /\{[A-Za-z0-9_-]+\}/.test(literal))) {
          assert.throws(() => compileTemplate(text, placeholders, 'text'), { code: 'CONFIG_INVALID' });
          return;
        }
        assert.equal(compileTemplate(text, placeholders, 'text').fill({ x, s }), literals.map((parts) => parts.join(s)).join(x));
      }),
    );
  });

  it('refuses a {word} that is none of its placeholders, naming the option and what the text takes', () => {
    const placeholders = { '{sender}': 'address', '{recipient}': 'address', '{reason}': 'reason' } as const;
    assert.throws(() => compileTemplate('Sender address rejected: {reson}', placeholders, 'rejectText'), {
      name: 'ConfigError',
      message: 'rejectText: unknown placeholder {reson}; this text takes {sender}, {recipient}, {reason}',
    });
    // Every one of them, once; digits, `_` and `-` make a word too.
    assert.throws(() => compileTemplate('{foo} {Reason} {x_1-y} {foo}', placeholders, 'deferText'), {
      message: 'deferText: unknown placeholders {foo}, {Reason}, {x_1-y}; this text takes {sender}, {recipient}, {reason}',
    });
    // Another text's placeholder is no better: greylist's headerText has no {reason}.
    assert.throws(() => compileTemplate('X-Greylist: %t s, {reason}', { '{seconds}': 's', '%t': 's' }, 'headerText'), { message: 'headerText: unknown placeholder {reason}; this text takes {seconds}, %t' });
    assert.throws(() => compileTemplate('Bad sender {sender}', {}, 'text'), { message: 'text: unknown placeholder {sender}; this text takes no placeholders' });
    assert.throws(() => compileTemplate('Bad sender {sender}', { '{reason}': 'reason' }, 'text'), { message: 'text: unknown placeholder {sender}; this text takes {reason}' });
  });
});
