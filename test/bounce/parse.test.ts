import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseBounce, type BounceRecipient, type BounceReport } from '../../src/bounce/index.js';
import { MIME_LIMITS, parseMime } from '../../src/bounce/mime.js';
import { PROSE_LIMITS } from '../../src/bounce/prose.js';
import { elapsedMs } from '../support/fuzz.js';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/bounce/${name}`, import.meta.url), 'utf8');

type Expected = Pick<BounceRecipient, 'address' | 'action' | 'status' | 'hard'> & { smtpCode?: number };

const CORPUS: Array<{ file: string; format: string; reportingMta?: string; recipients: Expected[]; originalMessageId?: string }> = [
  { file: 'postfix-dsn.eml', format: 'dsn', reportingMta: 'mx.example.net', originalMessageId: '<lunch-42@example.com>', recipients: [{ address: 'bob@example.org', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 }] },
  { file: 'delayed-dsn.eml', format: 'dsn', reportingMta: 'relay.example.net', recipients: [{ address: 'carol@example.org', action: 'delayed', status: '4.4.1', hard: false }] },
  {
    file: 'multi-recipient-dsn.eml',
    format: 'dsn',
    reportingMta: 'gw.example.net',
    originalMessageId: '<news-2026-06@lists.example.com>',
    recipients: [
      { address: 'dave@example.org', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 },
      { address: 'erin@example.org', action: 'failed', status: '5.2.2', hard: false, smtpCode: 552 },
    ],
  },
  { file: 'global-dsn.eml', format: 'dsn', reportingMta: 'mx.example.jp', recipients: [{ address: '田中@example.jp', action: 'failed', status: '5.1.1', hard: true }] },
  { file: 'exim-dsn.eml', format: 'dsn', reportingMta: 'smtp.example.net', originalMessageId: '<hello-1@example.com>', recipients: [{ address: 'frank@example.org', action: 'failed', status: '5.1.1', hard: true }] },
  {
    file: 'exim-prose.eml',
    format: 'exim',
    recipients: [
      { address: 'grace@example.org', action: 'failed', status: '5.1.1', hard: true },
      { address: 'heidi@example.org', action: 'failed', status: '5.7.1', hard: false },
    ],
  },
  { file: 'exim-delay.eml', format: 'exim', recipients: [{ address: 'ivan@example.org', action: 'delayed', status: '4.3.0', hard: false, smtpCode: 451 }] },
  {
    file: 'qmail.eml',
    format: 'qmail',
    reportingMta: 'mail.example.net',
    recipients: [
      { address: 'judy@example.org', action: 'failed', status: '5.1.1', hard: true },
      { address: 'mallory@example.org', action: 'failed', status: '5.1.2', hard: true },
    ],
  },
  {
    file: 'postfix-prose.eml',
    format: 'postfix',
    reportingMta: 'mx.example.net',
    recipients: [
      { address: 'niaj@example.org', action: 'failed', status: '5.1.1', hard: true },
      { address: 'olivia@example.org', action: 'failed', status: '5.2.2', hard: false },
    ],
  },
  { file: 'sendmail.eml', format: 'sendmail', recipients: [{ address: 'peggy@example.org', action: 'failed', status: '5.1.1', hard: true }] },
  { file: 'exchange.eml', format: 'exchange', recipients: [{ address: 'rupert@corp.example.net', action: 'failed', status: '5.1.1', hard: true }] },
  { file: 'office365.eml', format: 'exchange', recipients: [{ address: 'sybil@tenant.example.net', action: 'failed', status: '5.1.10', hard: true }] },
  { file: 'generic.eml', format: 'generic', recipients: [{ address: 'trent@isp.example.net', action: 'failed', status: '5.0.0', hard: true, smtpCode: 550 }] },
  { file: 'policy-block-dsn.eml', format: 'dsn', reportingMta: 'mx.example.net', recipients: [{ address: 'victor@example.org', action: 'failed', status: '5.7.1', hard: false }] },
  // Written from each provider's documented texts (see fixtures/bounce/README.md), not copied.
  { file: 'gmail-dsn.eml', format: 'dsn', reportingMta: 'googlemail.example', originalMessageId: '<abc@example.com>', recipients: [{ address: 'nobody@example.org', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 }] },
  { file: 'office365-dsn.eml', format: 'dsn', reportingMta: 'AM0PR01MB0001.eurprd01.prod.exchangelabs.example', recipients: [{ address: 'ghost@contoso.example', action: 'failed', status: '5.1.10', hard: true, smtpCode: 550 }] },
  // "554:" followed by a colon: the code was not found, and the dead address was not hard.
  { file: 'yahoo-prose.eml', format: 'generic', recipients: [{ address: 'nobody@yahoo.example', action: 'failed', status: '5.0.0', hard: true, smtpCode: 554 }] },
  // The list after a blank line and the server's name before '#550': Exchange's reader found nothing.
  { file: 'exchange2010.eml', format: 'exchange', recipients: [{ address: 'nobody@remote.example.org', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 }] },
  { file: 'exchange2013.eml', format: 'exchange', recipients: [{ address: 'nobody@remote.example.org', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 }] },
  { file: 'mdaemon.eml', format: 'generic', recipients: [{ address: 'nobody@example.org', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 }] },
  // No SMTP reply and an undefined 5.0.0: the words alone do not suppress.
  { file: 'domino-dsn.eml', format: 'dsn', reportingMta: 'domino.example.org', recipients: [{ address: 'nobody@example.org', action: 'failed', status: '5.0.0', hard: false }] },
  // Action: failed with a 4.x.x status: given up, but the address was never refused.
  { file: 'expired-dsn.eml', format: 'dsn', reportingMta: 'mx.example.net', recipients: [{ address: 'slow@example.org', action: 'failed', status: '4.2.0', hard: false, smtpCode: 450 }] },
  { file: 'forward-dsn.eml', format: 'dsn', reportingMta: 'mx.example.net', recipients: [{ address: 'real@elsewhere.example', action: 'failed', status: '5.1.1', hard: true, smtpCode: 550 }] },
];

describe('parseBounce over the corpus', () => {
  for (const c of CORPUS) {
    it(`${c.file}: ${c.format}, ${c.recipients.map((r) => `${r.address} ${r.status}`).join(', ')}`, () => {
      for (const text of [fixture(c.file), fixture(c.file).replace(/\n/g, '\r\n')]) {
        const result = parseBounce(text);
        assert.ok(result.ok, JSON.stringify(result));
        if (!result.ok) return;
        assert.equal(result.report.format, c.format);
        assert.equal(result.report.reportingMta, c.reportingMta);
        assert.equal(result.report.original?.messageId, c.originalMessageId);
        const got = result.report.recipients.map((r) => ({ address: r.address, action: r.action, status: r.status, hard: r.hard, ...(c.recipients.find((e) => e.address === r.address)?.smtpCode ? { smtpCode: r.smtpCode } : {}) }));
        assert.deepEqual(got, c.recipients);
        assert.equal(result.report.truncated, false);
      }
    });
  }

  it('keeps per-message and per-recipient detail of a DSN', () => {
    const result = parseBounce(fixture('postfix-dsn.eml'));
    assert.ok(result.ok, 'result.ok');
    if (!result.ok) return;
    assert.equal(result.report.subject, 'Undelivered Mail Returned to Sender');
    assert.equal(result.report.arrivalDate, 'Mon,  1 Jun 2026 09:59:59 +0000 (UTC)');
    const [bob] = result.report.recipients;
    assert.deepEqual(bob, {
      address: 'bob@example.org',
      addressType: 'rfc822',
      originalRecipient: 'bob@example.org',
      action: 'failed',
      status: '5.1.1',
      permanence: 'permanent',
      category: 'addressing',
      statusText: 'permanent failure: bad destination mailbox address (user unknown)',
      hard: true,
      smtpCode: 550,
      diagnosticType: 'smtp',
      diagnostic: '550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown in virtual mailbox table',
      remoteMta: 'mx.example.org',
    });
    const multi = parseBounce(fixture('multi-recipient-dsn.eml'));
    assert.ok(multi.ok && multi.report.originalEnvelopeId === 'news-2026-06-01-7', 'multi.ok && multi.report.originalEnvelopeId === \'news-2026-06-01-7\'');
    assert.equal(multi.ok && multi.report.original?.subject, 'Juni-Ausgabe für Abonnenten');
  });

  it('says what is not a bounce', () => {
    assert.equal((parseBounce(fixture('arf.eml')) as { reason: string }).reason, 'feedback-report');
    assert.equal((parseBounce(fixture('mdn.eml')) as { reason: string }).reason, 'disposition-notification');
    assert.equal((parseBounce(fixture('vacation.eml')) as { reason: string }).reason, 'auto-reply');
    assert.equal((parseBounce('Subject: hi\n\nhello') as { reason: string }).reason, 'no-recipients');
    assert.equal((parseBounce('') as { reason: string }).reason, 'empty');
    // Out-of-office and challenge-response replies: no report, no MTA's bounce text.
    const outOfOffice = 'From: Bob <bob@example.org>\nSubject: Automatic reply: hello\nAuto-Submitted: auto-replied\nX-Auto-Response-Suppress: All\n\nI am out of the office until 12/10.\nFor urgent matters write to alice@example.org.\n';
    const challenge = 'From: bob@example.org\nSubject: Re: hello [please confirm your message]\nAuto-Submitted: auto-replied\nPrecedence: bulk\n\nYour message to bob@example.org is held until you confirm you sent it.\nReply to this message to release it.\n';
    for (const text of [outOfOffice, challenge]) assert.equal((parseBounce(text) as { reason: string }).reason, 'auto-reply');
  });

  it('calls an MTA bounce whose recipient cannot be read "no recipients", not an automatic reply', () => {
    // Exim and Sendmail put Auto-Submitted on their bounces (RFC 3834 §5 asks it of DSNs too).
    const exim = 'From: Mail Delivery System <Mailer-Daemon@smtp.example.net>\nSubject: Mail delivery failed: returning message to sender\nAuto-Submitted: auto-replied\n\nThis message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n  pipe to |/usr/local/bin/handler\n    generated by list@smtp.example.net\n    Child process of address_pipe transport returned 1\n';
    const sendmail = 'From: Mail Delivery Subsystem <MAILER-DAEMON@host.example.net>\nSubject: Returned mail: see transcript for details\nAuto-Submitted: auto-generated (failure)\n\n   ----- The following addresses had permanent fatal errors -----\nnobody\n    (reason: 550 5.1.1 nobody... User unknown)\n';
    const report = 'Subject: x\nAuto-Submitted: auto-generated (failure)\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n--b--\n';
    for (const text of [exim, sendmail, report]) {
      const parsed = parseBounce(text);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.equal(parsed.reason, 'no-recipients', text.slice(0, 60));
    }
  });
});

describe('parseBounce limits', () => {
  it('reads only the first maxBytes and says so; the report near the start still counts', () => {
    // A second recipient group behind 5000 octets of padding in the report itself: past the cut.
    const padded = fixture('postfix-dsn.eml').replace('virtual mailbox table\n\n', `virtual mailbox table\n\nX-Padding: ${'x'.repeat(5000)}\n\nFinal-Recipient: rfc822; late@example.org\nAction: failed\nStatus: 5.1.1\n\n`);
    assert.deepEqual((parseBounce(padded) as { report: BounceReport }).report.recipients.map((r) => r.address), ['bob@example.org', 'late@example.org'], 'read whole, the report names both');
    for (const message of [padded, Buffer.from(padded)]) {
      const result = parseBounce(message, { maxBytes: 3000 });
      assert.ok(result.ok, 'result.ok');
      assert.equal(result.report.truncated, true);
      assert.deepEqual(result.report.recipients.map((r) => r.address), ['bob@example.org']);
    }
  });

  it('stops nesting at the depth limit and counting at the part limit, without failing', () => {
    // The report is read up to the limits, exactly: one level or one part more and it is not.
    const nestedIn = (levels: number) => {
      let nested = 'Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; deep@example.org\nAction: failed\nStatus: 5.1.1\n';
      for (let i = 0; i < levels; i++) nested = `Content-Type: multipart/mixed; boundary="b${i}"\n\n--b${i}\n${nested}\n--b${i}--\n`;
      return parseBounce(nested);
    };
    const deepest = nestedIn(MIME_LIMITS.depth - 1);
    assert.equal(deepest.ok && deepest.report.recipients[0]?.address, 'deep@example.org');
    assert.equal(nestedIn(MIME_LIMITS.depth).ok, false);
    assert.equal(nestedIn(MIME_LIMITS.depth + 5).ok, false);
    // The top part and the report are parts too.
    const afterParts = (count: number) =>
      parseBounce(`Content-Type: multipart/report; boundary="m"\n\n${Array.from({ length: count }, () => '--m\nContent-Type: text/plain\n\nx\n').join('')}--m\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; late@example.org\nAction: failed\nStatus: 5.1.1\n--m--\n`);
    const last = afterParts(MIME_LIMITS.parts - 2);
    assert.equal(last.ok && last.report.recipients[0]?.address, 'late@example.org');
    assert.equal(afterParts(MIME_LIMITS.parts - 1).ok, false);
    assert.equal(afterParts(MIME_LIMITS.parts + 50).ok, false);
  });

  it('never throws and stays fast on hostile text', () => {
    const line = fc.oneof(
      fc.constantFrom('Final-Recipient: rfc822; a@b.example', 'Action: failed', 'Status: 5.1.1', '--b', '--b--', 'Content-Type: multipart/report; boundary=b', 'Content-Type: message/delivery-status', '', '<x@y.example>: 550 5.1.1 no', '  a@b.example', 'Content-Transfer-Encoding: base64', 'Content-Transfer-Encoding: quoted-printable', '=?UTF-8?B?w6k=?=', 'This is the qmail-send program at x.', 'This is the mail system at host x.',
        // The openers and shapes of every other prose reader, so that each of them is fuzzed too.
        'This message was created automatically by mail delivery software.', '----- The following addresses had permanent fatal errors -----', '>>> RCPT To:<a@b.example>', '<<< 550 5.1.1 no',
        'Delivery has failed to these recipients or groups:', "Your message to a@b.example couldn't be delivered", '#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##', "Remote Server returned '550 5.1.1'", 'Subject: Undeliverable', 'From: MAILER-DAEMON@b.example', 'X-Failed-Recipients: a@b.example',
        // The shapes read since: name-addr recipients, "554:", character references, a server name before '#'.
        'Final-Recipient: rfc822; "A" <a@b.example>', '<a@b.example>:', "554: delivery error: dd This user doesn't have a b.example account", 'Content-Type: text/html', "couldn&#39;t be delivered &#x27; &apos;", 'mx.b.example #550 5.1.1 <a@b.example>: User unknown ##'),
      fc.string({ maxLength: 120 }),
    );
    fc.assert(
      fc.property(fc.array(line, { maxLength: 60 }), fc.constantFrom('\n', '\r\n'), (lines, eol) => {
        const result = parseBounce(lines.join(eol));
        assert.equal(typeof result.ok, 'boolean');
      }),
      { numRuns: 500 },
    );
    const hostile = ['a'.repeat(200_000), `${'x@'.repeat(50_000)}`, `Subject: undeliverable\n\n${'a.'.repeat(100_000)}@`, `Content-Type: text/html\n\n${'<script'.repeat(50_000)}`];
    for (const text of hostile) {
      const started = process.hrtime.bigint();
      parseBounce(text);
      // Generous bound: catches quadratic blow-ups (minutes), not machine load.
      assert.ok(Number(process.hrtime.bigint() - started) / 1e9 < 20, 'Number(process.hrtime.bigint() - started) / 1e9 < 20');
    }
  });
});

describe('Exim prose bounces', () => {
  it('reads "has not yet been delivered" only in Exim\'s own words, not in the returned copy', () => {
    const message = `${fixture('exim-prose.eml').trimEnd()}\n\nYour order #1234 has not yet been delivered.\n`;
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.action, r.hard]), [
      ['grace@example.org', 'failed', true],
      ['heidi@example.org', 'failed', false],
    ]);
  });
});

describe('prose bounces that gave up on a temporary error', () => {
  it('report the recipient as failed, with the 4.x.x reply it got last, not as delayed', () => {
    const qmail = fixture('qmail.eml').replace(
      'Remote host said: 550 5.1.1 <judy@example.org>: Recipient address rejected: User unknown',
      "Remote host said: 451 4.3.0 Try again later\nI'm not going to try again; this message has been in the queue too long.",
    );
    const postfix = fixture('postfix-prose.eml').replace(/said: 550 5\.1\.1\n {4}<niaj@example\.org>: Recipient address rejected: User unknown in relay\n {4}recipient table/, 'said: 450 4.2.0\n    Greylisted, try later');
    for (const [text, fixtureText] of [[qmail, fixture('qmail.eml')], [postfix, fixture('postfix-prose.eml')]] as const) {
      assert.notEqual(text, fixtureText, 'the fixture holds the replaced reply');
      const parsed = parseBounce(text);
      assert.ok(parsed.ok, 'parsed.ok');
      assert.deepEqual(parsed.report.recipients.map((r) => [r.action, r.status, r.permanence, r.hard])[0], ['failed', parsed.report.format === 'qmail' ? '4.3.0' : '4.2.0', 'temporary', false]);
    }
    // A generic bounce says neither: its code decides.
    const generic = parseBounce('From: MAILER-DAEMON@isp.example\nSubject: Undeliverable mail\n\n<trent@isp.example.net>: 451 4.3.0 try later\n');
    assert.ok(generic.ok, 'generic.ok');
    assert.equal(generic.report.recipients[0]?.action, 'delayed');
  });
});

describe('prose bounces with several recipients', () => {
  it('keeps two recipients that differ beyond A-Z case (the Kelvin sign lower-cases to k), each with its own reply', () => {
    const qmail = fixture('qmail.eml').replace('<mallory@example.org>:\nSorry', '<kate@example.org>:\n550 kate unknown\n\n<\u212Aate@example.org>:\n550 kelvin unknown\n\n<KATE@example.org>:\n550 same as kate\n\n<mallory@example.org>:\nSorry');
    const parsed = parseBounce(qmail);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.diagnostic]).slice(1, 3), [
      ['kate@example.org', '550 kate unknown'],
      ['\u212Aate@example.org', '550 kelvin unknown'],
    ]);
    assert.deepEqual(parsed.report.recipients.map((r) => r.address), ['judy@example.org', 'kate@example.org', '\u212Aate@example.org', 'mallory@example.org']);
  });

  it('gives each Sendmail recipient the reply its own RCPT got, never the first one', () => {
    const message = [
      'From: Mail Delivery Subsystem <MAILER-DAEMON@legacy.example.net>',
      'Subject: Returned mail: see transcript for details',
      '',
      '   ----- The following addresses had permanent fatal errors -----',
      '<alice@example.org>',
      '<bob@example.org>',
      '',
      '   ----- Transcript of session follows -----',
      '>>> RCPT To:<alice@example.org>',
      '<<< 550 5.1.1 <alice@example.org>... User unknown',
      '>>> RCPT To:<bob@example.org>',
      '<<< 552 5.2.2 <bob@example.org>... Mailbox full',
      '',
    ].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.status, r.hard]), [
      ['alice@example.org', '5.1.1', true],
      ['bob@example.org', '5.2.2', false],
    ]);
  });

  it("does not give a generic bounce's next recipient line to the one before it", () => {
    const message = [
      'From: MAILER-DAEMON@isp.example.net',
      'Subject: Undeliverable mail',
      '',
      'alice@isp.example.net: 554 message rejected',
      'bob@isp.example.net: 550 no such user here',
      'carol@isp.example.net',
      'dave@isp.example.net',
      '  550 no such user here',
      '',
    ].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.hard]), [
      ['alice@isp.example.net', false],
      ['bob@isp.example.net', true],
      ['dave@isp.example.net', true],
    ]);
  });

  it('does not give one "Remote Server returned" line of an Exchange report to every listed recipient', () => {
    const message = [
      'From: postmaster@contoso.example',
      'Subject: Undeliverable: hello',
      '',
      'Delivery has failed to these recipients or groups:',
      'a@contoso.example',
      'b@contoso.example',
      '',
      "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'",
      '',
    ].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.hard]), [
      ['a@contoso.example', false],
      ['b@contoso.example', false],
    ]);
  });
});

describe('recipients as real reports write them', () => {
  it('takes the address of a Final-Recipient written as a name-addr', () => {
    const dsn = (value: string) => `Subject: x\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\nFinal-Recipient: ${value}\nAction: failed\nStatus: 5.1.1\nX-Display-Name: Some One\n--b--\n`;
    const cases: Array<[string, string]> = [
      ['rfc822; "Some One" <someone@example.org>', 'someone@example.org'],
      ['rfc822;Some One <someone@example.org>', 'someone@example.org'],
      ['RFC822; <Someone@Example.org>', 'Someone@Example.org'],
      ['rfc822; someone@example.org', 'someone@example.org'],
      // No address between the brackets: left as written (and, without '@', never suppressed).
      ['x-local; Some One <someone>', 'Some One <someone'],
    ];
    for (const [value, address] of cases) {
      const parsed = parseBounce(dsn(value));
      assert.ok(parsed.ok, value);
      assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.hard]), [[address, true]], value);
    }
  });

  it('reads an HTML-only NDR whose apostrophe is a character reference', () => {
    for (const apostrophe of ['&#39;', '&#x27;', '&apos;']) {
      const html = `From: postmaster@tenant.example\nSubject: Undeliverable: hello\nContent-Type: text/html; charset=utf-8\n\n<html><body><div>Your message to <b>ghost@contoso.example</b> couldn${apostrophe}t be delivered.</div>\n<div>Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'</div></body></html>\n`;
      const parsed = parseBounce(html);
      assert.ok(parsed.ok, apostrophe);
      assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.status, r.hard]), [['ghost@contoso.example', '5.1.10', true]], apostrophe);
    }
    // A reference to nothing (0, a surrogate, past U+10FFFF) stays as written.
    const odd = parseBounce('Subject: x\nContent-Type: text/html\n\n&#0; &#xD800; &#1114112;\n');
    assert.equal(odd.ok, false);
  });

  it('fuzz: an HTML NDR reads the same whichever of its characters are written as references', () => {
    const plain = (diagnostic: string) => `Your message to ghost@contoso.example couldn't be delivered. Remote Server returned '${diagnostic}'`;
    const html = (text: string, forms: readonly number[]) =>
      [...text]
        .map((c, i) => {
          const form = forms[i % forms.length]!;
          const named: Record<string, string> = { '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' };
          if (form === 1) return `&#${c.codePointAt(0)};`;
          if (form === 2) return `&#x${c.codePointAt(0)!.toString(16)};`;
          return named[c] ?? c;
        })
        .join('');
    const bounce = (body: string) => parseBounce(`From: postmaster@tenant.example\nSubject: Undeliverable: hello\nContent-Type: text/html; charset=utf-8\n\n<html><body><div>${body}</div></body></html>\n`);
    const diagnostic = fc.string({ unit: fc.constantFrom('a', ' ', '<', '>', '&', ';', '#', 'x', '"', "'", '&lt;', '&amp;', '&nbsp;', '&#39;', '&#x41;'), maxLength: 12 }).map((rest) => `550 5.1.1 User unknown ${rest}`.trim());
    // Decoded twice, "&#38;amp;" (the text "&amp;") was "&".
    const twice = bounce(html(plain('550 5.1.1 User unknown &amp;'), [1]));
    assert.equal(twice.ok && twice.report.recipients[0]?.diagnostic, '550 5.1.1 User unknown &amp;');
    fc.assert(
      fc.property(diagnostic, fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 8 }), (text, forms) => {
        const expected = bounce(html(plain(text), [0]));
        const parsed = bounce(html(plain(text), forms));
        assert.ok(expected.ok && parsed.ok, 'expected.ok && parsed.ok');
        assert.deepEqual(parsed.report.recipients, expected.report.recipients);
      }),
      { numRuns: 500 },
    );
  });

  it("takes Exchange Online's 5.4.1 \"Access denied\" as a policy refusal, not a dead mailbox", () => {
    const denied = fixture('office365-dsn.eml')
      .replace(/Status: 5\.1\.10/, 'Status: 5.4.1')
      .replace(/550 5\.1\.10 RESOLVER\.ADR\.RecipientNotFound; Recipient not found by SMTP address lookup/g, '550 5.4.1 Recipient address rejected: Access denied. [AM0PR01MB0001.eurprd01.prod.exchangelabs.example]');
    assert.notEqual(denied, fixture('office365-dsn.eml'));
    const parsed = parseBounce(denied);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.action, r.status, r.permanence, r.hard]), [['ghost@contoso.example', 'failed', '5.4.1', 'permanent', false]]);
  });

  it('keeps the Original-Recipient of a forward beside its Final-Recipient', () => {
    const parsed = parseBounce(fixture('forward-dsn.eml'));
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.originalRecipient]), [['real@elsewhere.example', 'alias@example.org']]);
  });
});

describe('RFC 6533 utf-8 recipients', () => {
  it('decodes \\x{HEX} in a utf-8 Final-Recipient to the address as mailed', () => {
    const message = fixture('global-dsn.eml').replace(/Final-Recipient: utf-8; ?田中@example\.jp/, 'Final-Recipient: utf-8; \\x{7530}\\x{4E2D}@example.jp');
    assert.notEqual(message, fixture('global-dsn.eml'), 'the fixture names 田中@example.jp');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.equal(parsed.report.recipients[0]!.address, '田中@example.jp');
  });
});

describe('hostile report structure', () => {
  it('reads a delivery-status group of a million lines without throwing', { timeout: 30_000 }, async (t) => {
    // In a child process: without MIME_LIMITS.headerBytes the continuation lines are joined in
    // quadratic time (100,000 took 14 s, a million half an hour), and a timeout cannot stop a
    // call in the test's own thread. Here it takes one second, starting node included.
    const code = `import { parseBounce } from ${JSON.stringify(new URL('../../src/bounce/index.ts', import.meta.url).href)};
      const message = 'Content-Type: message/delivery-status\\n\\nFinal-Recipient: rfc822; a@example.org\\nAction: failed\\nStatus: 5.1.1\\n' + ' x\\n'.repeat(1_000_000);
      const parsed = parseBounce(message, { maxBytes: 4 * 1024 * 1024 });
      console.log(JSON.stringify(parsed.ok ? parsed.report.recipients.map((r) => r.address) : parsed.reason));`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', code], { cwd: new URL('../..', import.meta.url), signal: t.signal });
    assert.deepEqual(JSON.parse(stdout), ['a@example.org']);
  });

  it('stays linear on long runs of dashes, unclosed tags and unclosed comments', () => {
    const inputs = [
      `Subject: x\n\n${'-'.repeat(64 * 1024)}`,
      `Content-Type: text/html\n\n${'<'.repeat(64 * 1024)}`,
      `Content-Type: text/html\n\n${'<style'.repeat(10_000)}`,
      `Content-Type: text/plain ${'('.repeat(60_000)}\n\nx`,
      // Exchange's "#550 ... ##" line: a reply followed by a run of spaces took 4.6 s.
      `Subject: x\n\nDelivery has failed to these recipients or groups:\n${`550 ${' '.repeat(495)}x\n`.repeat(130)}`,
      // Each X-Failed-Recipients address compared with every one before it: 2.5 s.
      `X-Failed-Recipients: ${Array.from({ length: 9000 }, (_, i) => `${i}@b`).join(',')}\nSubject: x\n\nhello\n`,
      // An address followed by a run of white space and no '>': /\s*>$/ tried every space (3 s).
      `Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a <x@b.example>${' '.repeat(60_000)}!\nAction: failed\nStatus: 5.1.1\n`,
      `X-Failed-Recipients: a@b.example${' '.repeat(60_000)}x\nSubject: x\n\nThis message was created automatically by mail delivery software.\n`,
      `Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822; ${'a <@'.repeat(15_000)}\nAction: failed\n`,
      // Character references, and a server name then spaces before Exchange's '#'.
      `Content-Type: text/html\n\n${'&#x&#1234567'.repeat(5000)}`,
      `Subject: x\n\nDelivery has failed to these recipients or groups:\n\n${`a@b.example\nx ${' '.repeat(495)}#\n`.repeat(120)}`,
    ];
    for (const text of inputs) {
      // Linear work is a few milliseconds; the quadratic scans took one to three seconds. The
      // fastest of three calls, so that a collection or a busy machine stalling one does not count.
      const ms = elapsedMs(() => parseBounce(text));
      assert.ok(ms < 250, `${text.slice(0, 40)}: ${ms.toFixed(0)} ms`);
    }
  });
});

describe('MIME structure', () => {
  it('reads a quoted-printable soft line break that transport padded with spaces (RFC 2045 §6.7)', () => {
    const message = [
      'Content-Type: multipart/report; report-type=delivery-status; boundary=b',
      '',
      '--b',
      'Content-Type: message/delivery-status',
      'Content-Transfer-Encoding: quoted-printable',
      '',
      'Final-Recipient: rfc822; bob@exa=  ',
      'mple.org',
      'Action: failed   ',
      'Status: 5.1.1',
      '--b--',
      '',
    ].join('\r\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.equal(parsed.report.recipients[0]?.address, 'bob@example.org');
    assert.equal(parsed.report.recipients[0]?.action, 'failed');
  });

  it('reads a body part that starts with a blank line as a part without header fields (RFC 2046 §5.1.1)', () => {
    const message = [
      'From: MAILER-DAEMON@mx.example.net',
      'Subject: Undelivered Mail Returned to Sender',
      'Content-Type: multipart/mixed; boundary=m',
      '',
      '--m',
      '',
      'This is the mail system at host mx.example.net.',
      '',
      '<bob@example.org>: host mx.example.org[192.0.2.25] said: 550 5.1.1 User unknown (in reply to RCPT TO command)',
      '--m--',
      '',
    ].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.equal(parsed.report.format, 'postfix');
    assert.equal(parsed.report.reportingMta, 'mx.example.net');
  });

  it('takes no delivery-status part from inside the returned message (RFC 6522 §3)', () => {
    const returned = [
      'From: MAILER-DAEMON@elsewhere.example',
      'Subject: an old bounce, forwarded to a list',
      'Content-Type: multipart/report; report-type=delivery-status; boundary=in',
      '',
      '--in',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; elsewhere.example',
      '',
      'Final-Recipient: rfc822; someone-else@example.org',
      'Action: failed',
      'Status: 5.1.1',
      '--in--',
    ].join('\n');
    const message = [
      'From: postmaster@gw.example.net',
      'Subject: Message not delivered',
      'Content-Type: multipart/mixed; boundary=m',
      '',
      '--m',
      'Content-Type: text/plain',
      '',
      'Your message could not be delivered.',
      '--m',
      'Content-Type: message/rfc822',
      '',
      returned,
      '--m--',
      '',
    ].join('\n');
    const parsed = parseBounce(message);
    assert.ok(!parsed.ok || !parsed.report.recipients.some((r) => r.address === 'someone-else@example.org'), JSON.stringify(parsed));
  });
});

describe('limits and edge cases (mutation tests)', () => {
  const dsn = (groups: string, head = 'Content-Type: multipart/report; report-type=delivery-status; boundary=b') =>
    [head, 'Subject: Undelivered Mail', '', '--b', 'Content-Type: message/delivery-status', '', 'Reporting-MTA: dns; mx.example.net', '', groups, '--b--', 'epilogue <x@example.org> 550 5.1.1 no such user', ''].join('\n');
  it('reads nothing after the closing delimiter into the last part (RFC 2046 §5.1.1)', () => {
    const parsed = parseBounce(dsn('Final-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.1.1\n'));
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => r.address), ['bob@example.org']);
    assert.ok(!parseMime(dsn('X: y\n')).parts.at(-1)!.text.includes('epilogue'), '!parseMime(dsn(\'X: y\\n\')).parts.at(-1)!.text.includes(\'epilogue\')');
  });
  it('says truncated for one octet over maxBytes, and not for exactly maxBytes', () => {
    const message = dsn('Final-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.1.1\n');
    assert.equal((parseBounce(message, { maxBytes: Buffer.byteLength(message) - 1 }) as { report: BounceReport }).report.truncated, true);
    assert.equal((parseBounce(message, { maxBytes: Buffer.byteLength(message) }) as { report: BounceReport }).report.truncated, false);
  });
  it('reads the report-type case-insensitively (RFC 6522 §3)', () => {
    const arf = dsn('Feedback-Type: abuse\n', 'Content-Type: multipart/report; report-type=Feedback-Report; boundary=b');
    assert.equal((parseBounce(arf) as { reason: string }).reason, 'feedback-report');
  });
  it('keeps a \\x{HEX} escape of a surrogate as written (RFC 6533 §3)', () => {
    const parsed = parseBounce(dsn('Final-Recipient: utf-8; \\x{D800}@example.jp\nAction: failed\nStatus: 5.1.1\n'));
    assert.ok(parsed.ok, 'parsed.ok');
    assert.equal(parsed.report.recipients[0]!.address, '\\x{D800}@example.jp');
  });
  it('never calls a delay warning hard, whatever its status says', () => {
    const parsed = parseBounce(dsn('Final-Recipient: rfc822; bob@example.org\nAction: delayed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n'));
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.action, r.hard]), [['delayed', false]]);
  });
  const postfixProse = (lines: string[]) => ['From: MAILER-DAEMON@mx.example.net', 'Subject: Undelivered Mail Returned to Sender', '', 'This is the mail system at host mx.example.net.', '', ...lines, ''].join('\n');
  it(`returns at most ${PROSE_LIMITS.recipients} prose recipients`, () => {
    const lines = Array.from({ length: PROSE_LIMITS.recipients + 20 }, (_, i) => `<u${i}@example.org>: host mx said: 550 5.1.1 user unknown`);
    const parsed = parseBounce(postfixProse(lines));
    assert.ok(parsed.ok, 'parsed.ok');
    assert.equal(parsed.report.recipients.length, PROSE_LIMITS.recipients);
  });
  it(`reads only the first ${PROSE_LIMITS.textChars} characters of prose`, () => {
    const padding = Array.from({ length: Math.ceil(PROSE_LIMITS.textChars / 100) }, () => 'x'.repeat(99));
    const parsed = parseBounce(postfixProse(['<early@example.org>: 550 5.1.1 user unknown', '', ...padding, '', '<late@example.org>: 550 5.1.1 user unknown']));
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => r.address), ['early@example.org']);
  });
  it("does not give a generic bounce's address line the next line's code when that line names its own address", () => {
    const message = ['From: MAILER-DAEMON@mx.example.net', 'Subject: Undeliverable', '', 'Copy sent to a@example.org', 'b@example.org: 550 5.1.1 user unknown', ''].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => r.address), ['b@example.org']);
  });
  const recipientsOf = (message: string) => {
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, JSON.stringify(parsed));
    return parsed.report.recipients;
  };
  it('removes an indentation shared by every line of a recipient group (some MTAs indent the report)', () => {
    const group = ['Final-Recipient: rfc822; bob@example.org', 'Action: failed', 'Status: 5.1.1', ''].map((line) => (line ? `  ${line}` : line)).join('\n');
    assert.deepEqual(recipientsOf(dsn(group)).map((r) => [r.address, r.action, r.status, r.hard]), [['bob@example.org', 'failed', '5.1.1', true]]);
  });
  it('reads an Action with a comment, infers one the RFC does not name from the status, and folds the address type', () => {
    // Postfix gives up after its queue lifetime with the last (4.x.x) status and Action: failed.
    const gaveUp = recipientsOf(dsn('Final-Recipient: rfc822; bob@example.org\nAction: failed (gave up)\nStatus: 4.4.7\n'));
    assert.deepEqual(gaveUp.map((r) => [r.action, r.status]), [['failed', '4.4.7']]);
    const unnamed = recipientsOf(dsn('Final-Recipient: RFC822; bob@example.org\nAction: undeliverable\nStatus: 5.1.1\n'));
    assert.deepEqual(unnamed.map((r) => [r.addressType, r.action, r.hard]), [['rfc822', 'failed', true]]);
    const utf8 = recipientsOf(dsn('Final-Recipient: UTF-8; \\x{7530}@example.jp\nAction: failed\nStatus: 5.1.1\n'));
    assert.equal(utf8[0]!.address, '田@example.jp');
    // \x{HEX} is RFC 6533's escape of the utf-8 type only.
    assert.equal(recipientsOf(dsn('Final-Recipient: rfc822; a\\x{41}@example.org\nAction: failed\nStatus: 5.1.1\n'))[0]!.address, 'a\\x{41}@example.org');
  });
  it('takes a Reporting-MTA from a recipient group when the per-message group is left out, and an Original-Recipient alone as the address', () => {
    const message = ['Content-Type: multipart/report; report-type=delivery-status; boundary=b', '', '--b', 'Content-Type: message/delivery-status', '', 'Reporting-MTA: dns; gw.example.net', 'Original-Recipient: rfc822; bob@example.org', 'Action: failed', 'Status: 5.1.1', '', '--b--', ''].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.equal(parsed.report.reportingMta, 'gw.example.net');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.originalRecipient]), [['bob@example.org', undefined]]);
  });
  it('takes a multipart delimiter line with transport padding after it (RFC 2046 §5.1.1)', () => {
    const message = dsn('Final-Recipient: rfc822; bob@example.org\nAction: failed\nStatus: 5.1.1\n').replace('\n--b\n', '\n--b  \t\n');
    assert.match(message, /--b {2}\t\n/);
    assert.deepEqual(recipientsOf(message).map((r) => r.address), ['bob@example.org']);
  });
  it('calls an automatic reply from postmaster an automatic reply: a bounce-like sender alone recognises no bounce', () => {
    const reply = 'From: postmaster@example.org\nSubject: Automatic reply: hello\nAuto-Submitted: auto-replied\n\nThe postmaster is on leave until Monday.\n';
    assert.equal((parseBounce(reply) as { reason: string }).reason, 'auto-reply');
  });
  it("reads no recipient from the copy of the message below qmail's line", () => {
    const message = `${fixture('qmail.eml')}\n<carol@example.org>: see you there\n`;
    assert.deepEqual(recipientsOf(message).map((r) => r.address), ['judy@example.org', 'mallory@example.org']);
  });
  it('reads a Postfix delay warning (THIS IS A WARNING ONLY) as delayed', () => {
    const warning = postfixProse(['####################################################################', '# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #', '####################################################################', '', '<bob@example.org>: host mx.example.org[192.0.2.25] said: 450 4.2.0 try again later']);
    assert.deepEqual(recipientsOf(warning).map((r) => [r.action, r.hard]), [['delayed', false]]);
  });
  it('gives a lone transcript reply of a Sendmail bounce to no one when several recipients lack a reason', () => {
    const message = ['From: MAILER-DAEMON@mx.example.net', 'Subject: Returned mail', '', '   ----- The following addresses had permanent fatal errors -----', '<a@example.org>', '<b@example.org>', '', '   ----- Transcript of session follows -----', '<<< 550 5.1.1 user unknown', ''].join('\n');
    const parsed = parseBounce(message);
    assert.ok(parsed.ok, 'parsed.ok');
    assert.deepEqual(parsed.report.recipients.map((r) => [r.address, r.hard]), [['a@example.org', false], ['b@example.org', false]]);
  });
});
