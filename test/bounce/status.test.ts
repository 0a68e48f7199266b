import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { describeStatus, findEnhancedStatus, findSmtpCode, isHardAddressFailure, parseEnhancedStatus, refineStatus, statusCategory } from '../../src/bounce/status.js';
import { decodeWords, MIME_LIMITS, parseContentType, parseHeaderBlock } from '../../src/bounce/mime.js';
import { elapsedMs } from '../support/fuzz.js';

describe('RFC 3463 status codes', () => {
  it('parses Status values and finds codes in text, not in IP addresses', () => {
    assert.deepEqual(parseEnhancedStatus('5.1.1 (user unknown)'), { statusClass: 5, subject: 1, detail: 1, code: '5.1.1' });
    assert.equal(parseEnhancedStatus('550'), undefined);
    assert.equal(parseEnhancedStatus('3.1.1'), undefined);
    assert.equal(findEnhancedStatus('550 5.1.10 RESOLVER')?.code, '5.1.10');
    assert.equal(findEnhancedStatus('host 192.5.1.1 said no'), undefined);
    assert.equal(findEnhancedStatus('ends with 4.2.2.')?.code, '4.2.2');
  });
  it('finds the SMTP reply code, followed by a colon too (Yahoo), but not in addresses, ports or times', () => {
    assert.equal(findSmtpCode("554: delivery error: dd This user doesn't have a yahoo.example account"), 554);
    assert.equal(findSmtpCode('host mx[192.0.2.1] said: 550-5.1.1 no'), 550);
    assert.equal(findSmtpCode('smtp;550 5.1.10 RESOLVER'), 550);
    for (const text of ['connect to mx[192.0.2.1]:587: refused', 'at 10:50:00 queued as 4AB', 'host 192.0.2.250: timeout', 'ratio 550:1', 'message 1550: lost']) assert.equal(findSmtpCode(text), undefined, text);
  });
  it('names classes and subjects', () => {
    const s = parseEnhancedStatus('5.2.2')!;
    assert.equal(statusCategory(s), 'mailbox');
    assert.equal(describeStatus(s), 'permanent failure: mailbox full');
    assert.equal(describeStatus(parseEnhancedStatus('4.9.99')!), 'temporary failure: unregistered status');
  });
  it('only address failures are hard', () => {
    const hard = (code: string, smtp?: number, text?: string) => isHardAddressFailure(parseEnhancedStatus(code), smtp, text);
    for (const code of ['5.1.1', '5.1.2', '5.1.3', '5.1.6', '5.1.10', '5.2.1']) assert.equal(hard(code), true, code);
    for (const code of ['5.2.2', '5.7.1', '4.1.1', '5.3.4', '5.0.0', '2.0.0']) assert.equal(hard(code), false, code);
    assert.equal(hard('5.0.0', 550, 'No such user here'), true);
    assert.equal(hard('5.0.0', 550, 'blocked by policy'), false);
    // 5.7.0 has an undefined detail, but its subject is security: RFC 5321's stock text proves nothing.
    assert.equal(hard('5.7.0', 550, '550 5.7.0 Requested action not taken: mailbox unavailable'), false);
    assert.equal(hard('5.7.0', 554, '554 5.7.0 Recipient address rejected: user unknown'), false);
    // The declared code says gone, the remote's reply said try later.
    assert.equal(hard('5.1.1', 450, '450 4.1.1 <bob@example.org>: Recipient address rejected: unverified address'), false);
    assert.equal(isHardAddressFailure(undefined, 550, 'user unknown'), true);
    assert.equal(isHardAddressFailure(undefined, 450, 'user unknown'), false);
  });
  it('never throws on any text', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (t) => void (findEnhancedStatus(t), parseEnhancedStatus(t))));
  });
  it('findSmtpCode gives a 2yz-5yz code written in the first 4000 characters, or nothing, in linear time', () => {
    const noise = fc.string({ unit: fc.oneof(fc.constantFrom('5', '4', '2', '0', '9', '.', ':', ' ', '-', '\n'), fc.string({ minLength: 1, maxLength: 1 })), maxLength: 100 });
    // Half of them around a code (which may not count as one where it stands): of characters
    // alone, 6 texts in 1,000 held a code, and the property checked next to nothing.
    const codes = fc.constantFrom('550', '421', '250', '599', '600', '199');
    const text = fc.oneof(noise, fc.tuple(noise, codes, fc.constantFrom(' ', '-', ': ', ':', ''), noise).map((parts) => parts.join('')));
    let found = 0;
    fc.assert(
      fc.property(text, fc.nat({ max: 4100 }), (t, pad) => {
        const padded = `${'x'.repeat(pad)}${t}`;
        const code = findSmtpCode(padded);
        if (code === undefined) return;
        found += 1;
        assert.match(String(code), /^[245][0-5]\d$/);
        const at = padded.indexOf(String(code));
        assert.ok(at >= 0 && at + 3 <= 4000, `${code} at ${at}`);
      }),
      { numRuns: 1000 },
    );
    assert.ok(found >= 30, `a code found in only ${found} of 1,000 texts`);
    for (const t of ['5'.repeat(1_000_000), '550:'.repeat(250_000), `${' '.repeat(999_999)}550`]) {
      const ms = elapsedMs(() => findSmtpCode(t));
      assert.ok(ms < 50, `${t.slice(0, 8)}: ${ms.toFixed(0)} ms`);
    }
  });
});

describe('MIME pieces', () => {
  it('unfolds headers, reads Content-Type parameters, decodes encoded words', () => {
    assert.deepEqual(parseHeaderBlock('Subject: a\n b\nX: 1\nnot a header'), [
      { name: 'subject', value: 'a b' },
      { name: 'x', value: '1' },
    ]);
    assert.deepEqual(parseContentType('Multipart/Report; report-type=delivery-status;\tboundary="a \\"b\\""'), {
      mediaType: 'multipart/report',
      params: { 'report-type': 'delivery-status', boundary: 'a "b"' },
    });
    assert.equal(parseContentType('garbage').mediaType, 'text/plain');
    assert.equal(decodeWords('=?UTF-8?B?w6k=?= =?ISO-8859-1?Q?caf=E9_au_lait?='), 'écafé au lait');
    assert.equal(decodeWords('=?x-unknown?Q?plain?='), 'plain');
    // RFC 2047 §4.2: '_' is a space wherever it stands, the end of an encoded word too.
    assert.equal(decodeWords('=?UTF-8?Q?Undelivered_?= =?UTF-8?Q?Mail_Returned_to_Sender?='), 'Undelivered Mail Returned to Sender');
  });
});

describe('status limits and refinements (mutation tests)', () => {
  it('prefers the diagnostic code only over an x.0.0 of the same class', () => {
    // A permanent failure quoting the 4.x.x it met on the way stays permanent.
    assert.equal(refineStatus(parseEnhancedStatus('5.0.0'), '452 4.2.2 mailbox full')?.code, '5.0.0');
    assert.equal(refineStatus(parseEnhancedStatus('5.0.0'), '550 5.1.1 user unknown')?.code, '5.1.1');
  });
  it('does not take user-unknown text for a hard failure when the enhanced code is a defined other one', () => {
    assert.equal(isHardAddressFailure(parseEnhancedStatus('5.4.1'), 550, '550 5.4.1 Recipient address rejected: invalid recipient (access denied)'), false);
  });
  it('reads a Status in its first 200 characters and free text in its first 4,000', () => {
    assert.equal(parseEnhancedStatus(`${' '.repeat(200)}5.1.1`), undefined);
    assert.equal(parseEnhancedStatus(`${' '.repeat(195)}5.1.1`)?.code, '5.1.1', 'a code ending at the 200th character');
    assert.equal(findEnhancedStatus(`${'x'.repeat(4000)} 5.1.1`), undefined);
    assert.equal(findEnhancedStatus(`${'x'.repeat(3990)} 5.1.1`)?.code, '5.1.1');
  });
  it('holds any 5yz reply permanent (500 included) and every 4.x.x status temporary, whatever the reply and text', () => {
    assert.equal(isHardAddressFailure(parseEnhancedStatus('5.1.1'), 500, '500 5.1.1 user unknown'), true);
    assert.equal(isHardAddressFailure(parseEnhancedStatus('4.0.0'), 550, '550 user unknown'), false);
  });
  it('prefers the diagnostic code over a declared x.0.0 only, not over an x.0.y (Exchange Online writes 5.0.350)', () => {
    assert.equal(refineStatus(parseEnhancedStatus('5.0.350'), '550 5.1.1 user unknown')?.code, '5.0.350');
  });
  it('finds no code at the start of an IP address (5.1.1.25 is a host, not 5.1.1)', () => {
    assert.equal(findEnhancedStatus('host 5.1.1.25 said: 550 mailbox unavailable'), undefined);
  });
  it('names the category by the subject, not the detail', () => {
    assert.equal(statusCategory(parseEnhancedStatus('5.7.1')!), 'security');
    assert.equal(statusCategory(parseEnhancedStatus('4.4.7')!), 'network');
  });
  it('ignores a header line that starts with a colon, which would take the next folded line', () => {
    assert.deepEqual(parseHeaderBlock(':junk\nSubject: a\n continued'), [{ name: 'subject', value: 'a continued' }]);
  });
  it("reads an encoded word's charset without its RFC 2231 language", () => {
    assert.equal(decodeWords('=?ISO-8859-1*de?Q?B=FCcher?='), 'Bücher');
  });
  it('keeps at most MIME_LIMITS.headerFields header fields', () => {
    const block = Array.from({ length: MIME_LIMITS.headerFields + 10 }, (_, i) => `X-F${i}: ${i}`).join('\n');
    assert.equal(parseHeaderBlock(block).length, MIME_LIMITS.headerFields);
  });
});

describe('hard failures that are about us', () => {
  it('never takes a refusal of our sender, account or message as proof the address is gone', () => {
    const s = (code: string) => parseEnhancedStatus(code);
    const eximSenderVerify = '550-Verification failed for <prvs=0123abcdef=news@ours.example> 550-Called: 192.0.2.7 550-Response: 550 5.1.1 <prvs=0123abcdef=news@ours.example>: Recipient address rejected: User unknown 550 Sender verify failed';
    assert.equal(isHardAddressFailure(s('5.1.1'), 550, eximSenderVerify), false);
    assert.equal(isHardAddressFailure(s('5.1.0'), 550, '550 5.1.0 <news@ours.example>: Sender address rejected: User unknown in local recipient table'), false);
    assert.equal(isHardAddressFailure(undefined, 550, '550 Your account has been disabled for sending mail'), false);
    assert.equal(isHardAddressFailure(s('5.0.0'), 550, '550 Requested action not taken: mailbox unavailable (message rejected for policy reasons: spam score too high)'), false);
    assert.equal(isHardAddressFailure(s('5.1.1'), 550, '550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table'), true);
    assert.equal(isHardAddressFailure(undefined, 554, "554 delivery error: dd This user doesn't have a yahoo.com account (bob@yahoo.com) [0]"), true);
    assert.equal(isHardAddressFailure(undefined, 552, '552 1 Requested mail action aborted, mailbox not found'), true);
    assert.equal(isHardAddressFailure(undefined, 552, '552 5.2.2 Mailbox full'), false);
    assert.equal(isHardAddressFailure(undefined, 552, '552 Mailbox unavailable - over quota'), false);
  });
});
