// What a reply at RCPT says about the mailbox: pure classification (verify/interpret).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseEnhancedStatus } from '../../src/smtp/reply.js';
import type { SmtpReply } from '../../src/smtp/types.js';
import { MAX_EVIDENCE_TEXT, classifyRcpt, classifyVrfy, evidence, refusesEveryRecipient, refusesNullSender } from '../../src/verify/interpret.js';
import { elapsedMs } from '../support/fuzz.js';

function reply(code: number, text: string): SmtpReply {
  const enhanced = parseEnhancedStatus(text, code);
  return enhanced ? { code, enhanced: enhanced.status, lines: [enhanced.rest] } : { code, lines: [text] };
}

describe('classifyRcpt', () => {
  it('takes a 5xx about the mailbox as a rejection', () => {
    assert.equal(classifyRcpt(reply(550, '5.1.1 User unknown')), 'rejected');
    // Outlook.com's unknown user, and Postfix's on a gateway with relay_recipient_maps.
    assert.equal(classifyRcpt(reply(550, '5.5.0 Requested action not taken: mailbox unavailable (S2017062302)')), 'rejected');
    assert.equal(classifyRcpt(reply(550, '5.1.1 <x@gw.test>: Recipient address rejected: User unknown in relay recipient table')), 'rejected');
    assert.equal(classifyRcpt(reply(550, '5.1.1 User unknown (mailbox full or does not exist)')), 'rejected');
    // Yandex gives an unknown user an X.7 code; Office 365's directory-based edge block is X.4.1.
    assert.equal(classifyRcpt(reply(550, '5.7.1 No such user!')), 'rejected');
    assert.equal(classifyRcpt(reply(550, '5.4.1 Recipient address rejected: Access denied. AS(201806281)')), 'rejected');
    assert.equal(classifyRcpt(reply(553, 'mailbox name not allowed')), 'rejected');
    // AOL's unknown user; a 552 with an X.1.1 code names the address.
    assert.equal(classifyRcpt(reply(552, '1 Requested mail action aborted, mailbox not found')), 'rejected');
    assert.equal(classifyRcpt(reply(552, '5.1.1 Unknown recipient')), 'rejected');
    assert.equal(classifyRcpt(reply(501, '5.1.3 Bad recipient address syntax')), 'rejected');
    // X.1.6, "destination mailbox has moved" (RFC 3463 §3.2), names the address even in a 552.
    assert.equal(classifyRcpt(reply(552, '5.1.6 Mailbox has moved')), 'rejected');
    // X.2.1, "mailbox disabled, not accepting messages" (RFC 3463 §3.3): only X.2.2 is a full mailbox.
    assert.equal(classifyRcpt(reply(550, '5.2.1 Mailbox disabled, not accepting messages')), 'rejected');
    // An X.1.1 code outweighs words about us that the quoted address happens to hold.
    assert.equal(classifyRcpt(reply(550, '5.1.1 <blocked@x.test>: Recipient address rejected: User unknown')), 'rejected');
  });

  it('never takes a 3xx at RCPT, which no RCPT may get (RFC 5321 §4.3.2), as an acceptance', () => {
    assert.equal(classifyRcpt(reply(354, 'Start mail input; end with <CRLF>.<CRLF>')), 'tempfail');
  });

  it('takes "too many recipients" as the temporary limit it is, as 452 and as 552 (RFC 5321 §4.5.3.1.10)', () => {
    assert.equal(classifyRcpt(reply(452, '4.5.3 Error: too many recipients')), 'too-many-recipients');
    assert.equal(classifyRcpt(reply(552, '5.5.3 Error: too many recipients')), 'too-many-recipients');
    assert.equal(classifyRcpt(reply(552, 'Too many recipients')), 'too-many-recipients');
  });

  it('never takes a full mailbox or a protocol error as proof that the mailbox does not exist', () => {
    assert.equal(classifyRcpt(reply(552, '5.2.2 Mailbox full')), 'mailbox-full');
    assert.equal(classifyRcpt(reply(550, 'Over quota')), 'mailbox-full');
    // RFC 5321 §4.2.2: 552 is "exceeded storage allocation", whatever words come with it.
    assert.equal(classifyRcpt(reply(552, 'Requested mail action aborted: exceeded storage allocation')), 'mailbox-full');
    assert.equal(classifyRcpt(reply(552, 'Mailbox limit reached')), 'mailbox-full');
    assert.equal(classifyRcpt(reply(550, '5.2.2 Requested action not taken')), 'mailbox-full', 'X.2.2 in a 550, whatever the words');
    assert.equal(classifyRcpt(reply(503, '5.5.1 Error: need MAIL command')), 'protocol-error');
    assert.equal(classifyRcpt(reply(500, 'Command unrecognized')), 'protocol-error');
    assert.equal(classifyRcpt(reply(504, '5.5.4 Command parameter not implemented')), 'protocol-error');
    assert.equal(classifyRcpt(reply(501, '5.5.4 Syntax: RCPT TO:<address>')), 'protocol-error');
    assert.equal(classifyRcpt(reply(550, '5.5.1 Protocol error')), 'protocol-error', "postscreen's enforce mode");
    assert.equal(classifyRcpt(reply(550, '5.5.5 Wrong protocol version')), 'protocol-error', 'X.5.5, the last of X.5.1-X.5.5');
  });

  it('takes a temporary "mailbox full" as a full mailbox, which exists, and not as any temporary failure', () => {
    assert.equal(classifyRcpt(reply(452, '4.2.2 Mailbox full')), 'mailbox-full');
    // RFC 5321's own words for 452 are about the server's storage, not the mailbox's.
    assert.equal(classifyRcpt(reply(452, 'Insufficient system storage')), 'tempfail');
    assert.equal(classifyRcpt(reply(450, '4.2.2 The email account that you tried to reach is over quota')), 'mailbox-full');
    assert.equal(classifyRcpt(reply(452, 'Over quota')), 'mailbox-full');
    // The server's own storage (Postfix's queue file system) says nothing of the mailbox.
    assert.equal(classifyRcpt(reply(452, '4.3.1 Insufficient system storage')), 'tempfail');
    assert.equal(classifyRcpt(reply(452, '4.3.1 Quota exceeded on the queue file system')), 'tempfail', 'an X.3.x is the mail system, whatever the words');
    assert.equal(classifyRcpt(reply(452, '4.5.3 Too many recipients')), 'too-many-recipients');
  });

  it('keeps a refusal of us apart from both', () => {
    assert.equal(classifyRcpt(reply(554, '5.7.1 Client host rejected: blocked')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'Relaying denied')), 'refused');
    assert.equal(classifyRcpt(reply(553, '5.1.0 <s@x>: Sender address rejected: User unknown in local recipient table')), 'refused');
    assert.equal(classifyRcpt(reply(550, '5.3.2 Service currently unavailable')), 'refused', 'postscreen blocking our address');
    assert.equal(classifyRcpt(reply(550, 'Too many invalid recipients')), 'refused', "Cisco's harvest limit");
    assert.equal(classifyRcpt(reply(550, 'Administrative prohibition')), 'refused', "Exim's ACL denial");
    // "not found" / "does not exist" said of our reverse DNS or our domain is a policy refusal of
    // us, never a mailbox that does not exist; nor is a DNSBL hit.
    assert.equal(classifyRcpt(reply(550, '5.7.1 Reverse DNS not found for 192.0.2.1')), 'refused');
    assert.equal(classifyRcpt(reply(550, '5.7.25 PTR record not found')), 'refused');
    assert.equal(classifyRcpt(reply(554, '5.7.1 Service unavailable; host [192.0.2.1] not found in trusted list')), 'refused');
    assert.equal(classifyRcpt(reply(550, '5.7.0 Access denied: sending domain does not exist')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'Rejected by DNSBL zen.example')), 'refused');
    // Words naming the user still outweigh an X.7 code.
    assert.equal(classifyRcpt(reply(550, '5.7.1 Recipient not found')), 'rejected');
    assert.equal(classifyRcpt(reply(550, '5.7.1 Unknown recipient')), 'rejected');
    // Exim verifying our (fallback) sender, with the inner 5.1.1 of its own callout in the text.
    const senderVerify: SmtpReply = { code: 550, lines: ['Verification failed for <probe@verifier.test>', 'Called:   192.0.2.7', 'Sent:     RCPT TO:<probe@verifier.test>', 'Response: 550 5.1.1 User unknown', 'Sender verify failed'] };
    assert.equal(classifyRcpt(senderVerify), 'refused');
    assert.equal(classifyRcpt(reply(553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")), 'refused', "qmail's relay refusal");
    assert.equal(classifyRcpt(reply(553, 'sorry, bounce messages should have a single envelope recipient (#5.7.1)')), 'too-many-recipients');
    assert.equal(classifyRcpt(reply(501, '5.5.1 Bounce messages should have a single envelope recipient')), 'too-many-recipients', 'any 5xx, not only 550-559');
    assert.equal(classifyRcpt(reply(450, '4.7.1 Greylisted, try later')), 'greylisted');
    assert.equal(classifyRcpt(reply(451, '4.7.1 Graylisted, please try again later')), 'greylisted', 'the American spelling');
    // X.1.8, "bad sender's system address" (RFC 3463 §3.2), is about our sender, words or none.
    assert.equal(classifyRcpt(reply(550, "5.1.8 Bad sender's system address")), 'refused');
    assert.equal(classifyRcpt(reply(451, '4.3.0 Temporary failure')), 'tempfail');
  });

  it('reads the short words about us (HELO, RBL, rDNS, DNSBL) only as words, not inside the address the reply quotes', () => {
    assert.equal(classifyRcpt(reply(550, '<thelonious@x.test>: Recipient address rejected: User unknown')), 'rejected');
    assert.equal(classifyRcpt(reply(550, '<marble@x.test>: User unknown')), 'rejected');
    assert.equal(classifyRcpt(reply(550, 'No such user: rblack@x.test')), 'rejected');
    // Ending the local part, a short word is still inside it.
    assert.equal(classifyRcpt(reply(550, '<othelo@x.test>: User unknown')), 'rejected');
    assert.equal(classifyRcpt(reply(550, '<superrbl@x.test>: User unknown')), 'rejected');
    assert.equal(classifyRcpt(reply(550, 'Helo command rejected: need fully-qualified hostname')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'Listed in RBLs, see rbl.example')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'No rDNS for your address')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'HELO/EHLO name invalid')), 'refused');
    // At MAIL FROM:<>, a refusal of our client is not one of the null sender.
    assert.equal(refusesNullSender(reply(550, 'Rejected: listed in RBLs')), false);
    assert.equal(refusesNullSender(reply(550, '<> refused, ask postmaster@thelonious.test')), true);
  });

  it('takes an underscore as the end of a word: helo_name, bad_helo and SPAMCOP_RBL still name us', () => {
    // Without an X.7 code only the words tell: read as about the mailbox, a refusal of our HELO
    // made the sender undeliverable, and at MAIL FROM:<> a domain that takes no bounces.
    assert.equal(classifyRcpt(reply(550, 'Invalid helo_name, not a FQDN')), 'refused');
    assert.equal(classifyRcpt(reply(554, 'Rejected: bad_helo')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'Listed in SPAMCOP_RBL')), 'refused');
    assert.equal(classifyRcpt(reply(550, 'RBL-listed, see rbl.example.net; DNSBL: yes; rDNS-check failed')), 'refused');
    assert.equal(refusesNullSender(reply(550, 'Invalid helo_name')), false);
    assert.equal(refusesNullSender(reply(550, 'rDNS-check failed')), false);
  });
});

describe('classifyVrfy', () => {
  it('takes a refusal of us at VRFY as no answer, not as "does not exist"', () => {
    assert.equal(classifyVrfy(reply(550, '5.1.1 <nobody@x>: Recipient address rejected: User unknown')), 'does-not-exist');
    assert.equal(classifyVrfy(reply(550, '5.7.1 Client host rejected: cannot find your hostname')), 'no-answer');
    assert.equal(classifyVrfy(reply(252, '2.0.0 Cannot VRFY user')), 'no-answer');
  });

  it('takes 250 and 251 as "exists", and 550, 551 and 553 naming the address as "does not exist" (RFC 5321 §3.5.3)', () => {
    assert.equal(classifyVrfy(reply(250, '2.1.5 Alice <alice@x.test>')), 'exists');
    assert.equal(classifyVrfy(reply(251, '2.1.5 User not local; will forward to <alice@y.test>')), 'exists');
    assert.equal(classifyVrfy(reply(551, '5.1.6 User not local; please try <alice@y.test>')), 'does-not-exist');
    assert.equal(classifyVrfy(reply(553, '5.1.3 Mailbox name not allowed')), 'does-not-exist');
  });

  it('takes a refusal of the VRFY command itself as no answer, never as "does not exist"', () => {
    assert.equal(classifyVrfy(reply(550, '5.5.1 Command not allowed')), 'no-answer');
    assert.equal(classifyVrfy(reply(550, 'VRFY command is disabled')), 'no-answer');
    assert.equal(classifyVrfy(reply(553, 'Cannot VRFY user')), 'no-answer');
    // A code naming the address still answers, whatever the words.
    assert.equal(classifyVrfy(reply(550, '5.1.1 VRFY: no such user')), 'does-not-exist');
    assert.equal(classifyVrfy(reply(550, 'No such user here')), 'does-not-exist');
  });
});

describe('refusesNullSender', () => {
  it('takes a 5xx at MAIL FROM:<> as a refusal of the null sender only when it is one', () => {
    assert.equal(refusesNullSender(reply(550, '5.7.1 <>: sender rejected')), true);
    assert.equal(refusesNullSender(reply(553, 'sorry, your envelope sender is in my badmailfrom list (#5.7.1)')), true);
    assert.equal(refusesNullSender(reply(501, '5.1.7 Bad sender address syntax')), true);
    assert.equal(refusesNullSender(reply(451, '4.3.0 Temporary failure')), false);
    assert.equal(refusesNullSender(reply(554, '5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org')), false);
    assert.equal(refusesNullSender(reply(550, '5.7.1 Reverse DNS not found for 192.0.2.1')), false, 'about our client, whatever the sender');
    assert.equal(refusesNullSender(reply(554, '5.7.1 Rejected by DNSBL zen.example')), false);
    assert.equal(refusesNullSender(reply(530, '5.7.0 Must issue a STARTTLS command first')), false, 'RFC 3207 §4');
    assert.equal(refusesNullSender(reply(530, '5.7.0 Authentication required')), false, 'RFC 4954 §6');
    assert.equal(refusesNullSender(reply(503, '5.5.1 Error: nested MAIL command')), false);
    assert.equal(refusesNullSender(reply(500, 'Command unrecognized')), false);
  });
});

describe('evidence', () => {
  it('keeps the reply text of an exchanger that answers at length to MAX_EVIDENCE_TEXT characters', () => {
    const long: SmtpReply = { code: 550, enhanced: { klass: 5, subject: 1, detail: 1 }, lines: Array.from({ length: 100 }, () => 'x'.repeat(2000)) };
    const kept = evidence('rcpt', long, false);
    assert.equal(kept.text, `${'x'.repeat(MAX_EVIDENCE_TEXT - 3)}...`);
    assert.deepEqual(evidence('rcpt', reply(550, '5.1.1 User unknown'), false), { stage: 'rcpt', code: 550, enhanced: '5.1.1', text: 'User unknown' });
    assert.equal(evidence('rcpt', long, true).text, undefined);
    const exact = 'y'.repeat(MAX_EVIDENCE_TEXT);
    assert.equal(evidence('rcpt', { code: 550, lines: [exact] }, false).text, exact, 'a text of exactly MAX_EVIDENCE_TEXT characters is kept whole');
  });
});

describe('refusesEveryRecipient', () => {
  it('takes a refusal of our sender or client as one of every recipient, and a bare policy code as one of this recipient', () => {
    assert.equal(refusesEveryRecipient({ stage: 'rcpt', code: 550, enhanced: '5.1.7', text: 'Bad sender mailbox syntax' }), true);
    assert.equal(refusesEveryRecipient({ stage: 'rcpt', code: 550, enhanced: '5.1.8', text: "Bad sender's system address" }), true);
    assert.equal(refusesEveryRecipient({ stage: 'rcpt', code: 554, enhanced: '5.7.1', text: 'Client host rejected: blocked' }), true);
    assert.equal(refusesEveryRecipient({ stage: 'rcpt', code: 554, enhanced: '5.7.1', text: '<noreply@x.test>: Recipient address rejected: Access denied' }), false);
    // No-details mode keeps no text: only the code is left, and the refusal is taken as one of us.
    assert.equal(refusesEveryRecipient({ stage: 'rcpt', code: 554, enhanced: '5.7.1' }), true);
  });
});

describe('classification fuzzed', () => {
  it('any reply gets one of the outcomes, by the rules the words and codes set, in linear time', () => {
    const word = fc.constantFrom('5.2.2', '4.2.2', '4.3.1', '5.5.1', '5.1.1', '5.1.7', '5.7.1', 'insufficient', 'system', 'storage', 'mailbox', 'full', 'over quota', 'VRFY', 'vrfy-ish', 'xvrfy', 'grey', 'helo', 'user', 'unknown', ' ', '', '#5.7.1');
    const text = fc.array(fc.oneof(word, fc.string({ maxLength: 8 })), { maxLength: 10 }).map((words) => words.join(' '));
    const rcpt: readonly string[] = ['accepted', 'rejected', 'refused', 'greylisted', 'tempfail', 'too-many-recipients', 'mailbox-full', 'protocol-error'];
    fc.assert(
      fc.property(fc.integer({ min: 200, max: 599 }), text, fc.boolean(), (code, words, noDetails) => {
        const r = reply(code, words);
        const outcome = classifyRcpt(r);
        assert.ok(rcpt.includes(outcome), outcome);
        // RFC 5321's own text for the server's storage is no full mailbox, unless an X.2.2 code says so.
        if (outcome === 'mailbox-full' && code < 500 && /insufficient (system )?storage/i.test(words)) assert.equal(r.enhanced?.subject === 2 && r.enhanced.detail === 2, true, words);
        const vrfy = classifyVrfy(r);
        assert.ok(['exists', 'does-not-exist', 'no-answer'].includes(vrfy), vrfy);
        if (vrfy === 'does-not-exist') assert.ok(!/\bvrfy\b/i.test(words) || (r.enhanced?.subject === 1 && r.enhanced.detail <= 6), words);
        assert.equal(typeof refusesEveryRecipient(evidence('rcpt', r, noDetails)), 'boolean');
      }),
      { numRuns: 2000 },
    );
    for (const words of ['insufficient '.repeat(40_000), 'vrfy'.repeat(100_000), `${'5.1.'.repeat(50_000)}7`, 'relay '.repeat(50_000)]) {
      const r = reply(452, words);
      const ms = elapsedMs(() => [classifyRcpt(r), classifyVrfy(r), refusesEveryRecipient(evidence('rcpt', r, false))]);
      assert.ok(ms < 200, `${words.slice(0, 10)}: ${ms.toFixed(0)} ms`);
    }
  });
});
