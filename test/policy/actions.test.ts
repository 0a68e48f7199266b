// Decisions as access(5) action texts: what Postfix hands the SMTP client must be consistent.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { actionFor, replyTextLimit, safeHeader } from '../../src/policy/actions.js';
import { MAX_HEADER_LINE } from '../../src/core/text.js';

describe('actionFor: enhanced status codes have the class of their reply (RFC 3463 §2)', () => {
  it('answers an accept with the configured acceptAction, DUNNO by default', () => {
    assert.equal(actionFor({ kind: 'accept' }), 'DUNNO');
    assert.equal(actionFor({ kind: 'accept' }, 'OK'), 'OK');
  });

  it('sends only printable ASCII in a reply text: CR, LF, NUL, DEL and non-ASCII never pass (RFC 5321 §4.2 textstring)', () => {
    assert.equal(actionFor({ kind: 'reject', code: 550, enhanced: '5.1.1', text: 'no\r\naction=OK\x7f m\u00fcller\x00' }), '550 5.1.1 no action=OK? m?ller');
  });

  it('keeps a code of the right class as it is', () => {
    assert.equal(actionFor({ kind: 'reject', code: 550, enhanced: '5.7.1', text: 'no' }), '550 5.7.1 no');
    assert.equal(actionFor({ kind: 'defer', code: 421, enhanced: '4.7.0', text: 'later' }), '421 4.7.0 later');
  });

  it('gives a configured code of the other class the reply\'s class (tarpit hardCode 421 with hardEnhanced 5.7.0)', () => {
    // Postfix makes the same correction (smtpd_check_reject); here it shows in the logged action too.
    assert.equal(actionFor({ kind: 'defer', code: 421, enhanced: '5.7.0', text: 'Too many errors' }), '421 4.7.0 Too many errors');
    assert.equal(actionFor({ kind: 'reject', code: 554, enhanced: '4.7.1', text: 'no' }), '554 5.7.1 no');
  });

  it('sends one enhanced code when a text begins with its own: the text\'s, in the reply\'s class, as Postfix\'s dsn_split takes it', () => {
    // Real Postfix answered "451 4.2.0 4.7.1 Later 300" with "451 4.2.0 <rcpt>: Recipient address rejected: 4.7.1 Later 300".
    assert.equal(actionFor({ kind: 'defer', code: 451, enhanced: '4.2.0', text: '4.7.1 Later 300' }), '451 4.7.1 Later 300');
    assert.equal(actionFor({ kind: 'reject', code: 550, enhanced: '5.7.1', text: '5.1.1 No such user' }), '550 5.1.1 No such user');
    assert.equal(actionFor({ kind: 'defer', code: 451, enhanced: '4.2.0', text: '5.7.1 Later' }), '451 4.7.1 Later');
    assert.equal(actionFor({ kind: 'reject', code: 550, enhanced: '5.7.1', text: '5.1.1' }), '550 5.1.1', 'a code alone leaves no text behind it');
    assert.equal(actionFor({ kind: 'defer', code: 451, enhanced: '4.2.0', text: '300 seconds to go' }), '451 4.2.0 300 seconds to go', 'a text that starts with a number has no code of its own');
  });

  it('gives a DEFER_IF_PERMIT text that begins with a 5.x.x or 2.x.x code class 4 (Postfix answers it 450)', () => {
    assert.equal(actionFor({ kind: 'defer-if-permit', text: '5.7.1 Greylisted' }), 'DEFER_IF_PERMIT 4.7.1 Greylisted');
    assert.equal(actionFor({ kind: 'defer-if-permit', text: '2.0.0' }), 'DEFER_IF_PERMIT 4.0.0');
    assert.equal(actionFor({ kind: 'defer-if-permit', text: '4.2.0 Greylisted' }), 'DEFER_IF_PERMIT 4.2.0 Greylisted');
    assert.equal(actionFor({ kind: 'defer-if-permit', text: '300 seconds to go' }), 'DEFER_IF_PERMIT 300 seconds to go', 'no enhanced code: Postfix adds 4.7.1');
    // A stage's own code goes before a text without one, in the reply's class; a text's own code wins.
    assert.equal(actionFor({ kind: 'defer-if-permit', enhanced: '4.7.24', text: 'SPF temperror for example.org' }), 'DEFER_IF_PERMIT 4.7.24 SPF temperror for example.org');
    assert.equal(actionFor({ kind: 'defer-if-permit', enhanced: '4.2.0', text: '300 seconds to go' }), 'DEFER_IF_PERMIT 4.2.0 300 seconds to go');
    assert.equal(actionFor({ kind: 'defer-if-permit', enhanced: '5.7.25', text: 'no PTR' }), 'DEFER_IF_PERMIT 4.7.25 no PTR');
    assert.equal(actionFor({ kind: 'defer-if-permit', enhanced: '4.7.1', text: '4.2.0 Greylisted' }), 'DEFER_IF_PERMIT 4.2.0 Greylisted');
  });
});

describe('safeHeader: a PREPEND header field is one line with a field name (RFC 5322 §3.6.8)', () => {
  it('unfolds a header and refuses one without a field name or a value', () => {
    assert.equal(safeHeader('X-Callout-Result: pass\r\n\tsmtp.mailfrom=a@b.example'), 'X-Callout-Result: pass smtp.mailfrom=a@b.example');
    for (const header of [':X: y', 'X-Empty: ', 'No colon', 'Bad Name: y']) assert.equal(safeHeader(header), undefined, header);
    // A PREPEND line is ASCII: a value with non-ASCII, a bare CR or a NUL in it is sent with "?" there (a tab stays).
    assert.equal(safeHeader('X-Name: m\u00fcller\r\0\tok'), 'X-Name: m?ller ?\tok');
  });

  it('cuts a header field to MAX_HEADER_LINE characters', () => {
    const header = `X-Long: ${'v'.repeat(2 * MAX_HEADER_LINE)}`;
    assert.equal(safeHeader(header), header.slice(0, MAX_HEADER_LINE));
  });
});

describe('replyTextLimit: Postfix\'s reply line stays within 512 octets (RFC 5321 §4.5.3.1.5)', () => {
  it('leaves room for the name Postfix quotes before the text, keeping at least 80 characters of text', () => {
    for (const recipient of ['b@example.net', `${'x'.repeat(64)}@${'d'.repeat(60)}.example`, `${'y'.repeat(64)}@${'e'.repeat(180)}.example`]) {
      const action = actionFor({ kind: 'reject', code: 550, enhanced: '5.123.123', text: 'z'.repeat(1000) }, 'DUNNO', replyTextLimit(recipient));
      const [code, enhanced, text] = [action.slice(0, 3), action.split(' ')[1], action.slice(action.indexOf(' ', 4) + 1)];
      const line = `${code} ${enhanced} <${recipient}>: Recipient address rejected: ${text}\r\n`;
      assert.ok(line.length <= 512 || text.length === 80, `${line.length} octets with a ${recipient.length}-character recipient`);
      assert.ok(text.length >= 80 && text.endsWith('...'), 'text.length >= 80 && text.endsWith(\'...\')');
    }
    // A DEFER_IF_PERMIT is answered by Postfix with the same prefix (450 4.7.1 <recipient>: ...).
    const deferIfPermit = actionFor({ kind: 'defer-if-permit', enhanced: '4.7.1', text: 'z'.repeat(1000) }, 'DUNNO', 100);
    assert.equal(deferIfPermit, `DEFER_IF_PERMIT 4.7.1 ${'z'.repeat(97)}...`);
    assert.equal(replyTextLimit('b@example.net'), 400);
    assert.equal(replyTextLimit('x'.repeat(1000)), 80);
    // Octets, not characters: a UTF-8 recipient (RFC 6531) takes two for each "ü".
    assert.equal(replyTextLimit(`${'\u00fc'.repeat(100)}@example.org`), 512 - 48 - 212);
  });
});
