import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatAuthenticationResults } from '../../../src/checks/auth-results.js';
import { checkSenderId, purportedResponsibleAddress, selectSenderIdRecord, senderIdReport, splitHeaderFields } from '../../../src/checks/senderid/index.js';
import { buildZone, loadSpfSuite, SuiteResolver } from '../../support/spf-suite.js';

const fields = (text: string) => splitHeaderFields(text.replace(/\n/g, '\r\n'));
const praOf = (text: string) => {
  const outcome = purportedResponsibleAddress(fields(text));
  return outcome.kind === 'pra' ? `${outcome.field} ${outcome.mailbox.address}` : `none: ${outcome.reason}`;
};

describe('RFC 4407 PRA', () => {
  test('From alone, Sender over From, Resent-From over both', () => {
    assert.equal(praOf('From: A <a@example.com>\nSubject: x\n\nbody'), 'from a@example.com');
    assert.equal(praOf('From: a@example.com\nSender: s@example.org\n'), 'sender s@example.org');
    assert.equal(praOf('Resent-From: r@example.net\nFrom: a@example.com\nSender: s@example.org\n'), 'resent-from r@example.net');
  });

  test('Resent-Sender, unless a Received separates it from an earlier Resent-From', () => {
    assert.equal(praOf('Resent-Sender: rs@example.net\nResent-From: r@example.net\nFrom: a@example.com\n'), 'resent-sender rs@example.net');
    assert.equal(praOf('Resent-From: r@example.net\nResent-Sender: rs@example.net\nFrom: a@example.com\n'), 'resent-sender rs@example.net');
    assert.equal(praOf('Resent-From: new@example.net\nReceived: by x\nResent-Sender: old@example.net\nFrom: a@example.com\n'), 'resent-from new@example.net');
    // The first Resent-Sender belongs to an older resent block than the first Resent-From (§2: steps 1
    // and 2 take the first resent block), even when that older block has its own Resent-From.
    assert.equal(
      praOf('Resent-From: new@example.net\nReceived: by x\nResent-From: old@example.net\nResent-Sender: old-sender@example.net\nFrom: a@example.com\n'),
      'resent-from new@example.net',
    );
  });

  test('ill-formed messages have no PRA', () => {
    assert.match(praOf('Sender: a@example.com\nSender: b@example.com\nFrom: c@example.com\n'), /^none: 2 Sender fields/);
    assert.match(praOf('From: a@example.com\nFrom: b@example.com\n'), /^none: 2 From fields/);
    assert.match(praOf('From: a@example.com, b@example.com\n'), /^none: from holds 2 mailboxes/);
    assert.match(praOf('From: not an address\n'), /^none: from:/);
    assert.match(praOf('Subject: nothing\n'), /^none: no Resent-Sender/);
  });

  test('empty fields are skipped and folded fields unfolded', () => {
    assert.equal(praOf('Sender:   \nFrom: Someone\n <a@example.com>\n'), 'from a@example.com');
  });

  test('fuzz: never throws on any header block', () => {
    const line = fc.oneof(fc.constantFrom('From: a@b.example', 'Sender: s@x.example', 'Resent-From: r@y.example', 'Resent-Sender:', 'Received: x', 'From: a@b, c@d', ' folded'), fc.string({ maxLength: 40 }));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 20 }), (lines) => {
        const outcome = purportedResponsibleAddress(splitHeaderFields(lines.join('\r\n')));
        assert.ok(outcome.kind === 'pra' || outcome.kind === 'none');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('RFC 4406 evaluation', () => {
  test('the rfc4406 suite (mfrom scope)', async () => {
    const failures: string[] = [];
    let count = 0;
    for (const scenario of loadSpfSuite('rfc4406-tests.yml')) {
      const resolver = new SuiteResolver(scenario.zone);
      for (const c of scenario.cases) {
        count += 1;
        const verdict = await checkSenderId({ scope: 'mfrom', ip: c.host, helo: c.helo, mailFrom: c.mailfrom }, { resolver });
        if (!(c.results as string[]).includes(verdict.result)) failures.push(`${c.id}: ${verdict.result}`);
      }
    }
    assert.equal(count, 2);
    assert.deepEqual(failures, []);
  });

  test('record selection by scope, with v=spf1 as spf2.0/mfrom,pra', () => {
    const pra = selectSenderIdRecord('pra');
    assert.deepEqual(pra(['v=spf1 -all']), { kind: 'record', record: 'v=spf1 -all', terms: ' -all' });
    assert.deepEqual(pra(['spf2.0/mfrom -all', 'v=spf1 +all']), { kind: 'none' });
    assert.deepEqual(pra(['spf2.0/mfrom,pra ?all']), { kind: 'record', record: 'spf2.0/mfrom,pra ?all', terms: ' ?all' });
    assert.equal(pra(['spf2.0/pra -all', 'SPF2.0/PRA +all']).kind, 'permerror');
    assert.deepEqual(pra(['spf2.0/prax -all']), { kind: 'none' });
  });

  test('pra scope evaluates the PRA domain and reports header.<field>', async () => {
    const resolver = new SuiteResolver(
      buildZone({
        'example.com': [{ TXT: 'spf2.0/pra ip4:192.0.2.0/24 -all' }, { TXT: 'v=spf1 -all' }],
        'example.org': [{ TXT: 'v=spf1 ip4:198.51.100.1 -all' }],
      }),
    );
    const headers = fields('From: A <a@example.com>\nSubject: hi\n');
    const pass = await checkSenderId({ scope: 'pra', ip: '192.0.2.5', helo: 'h.example', headers }, { resolver });
    assert.equal(pass.result, 'pass');
    assert.equal(pass.identity, 'pra');
    assert.equal(pass.praField, 'from');
    assert.equal(
      formatAuthenticationResults({ authservId: 'mx.example.net', senderId: senderIdReport(pass) }),
      'Authentication-Results: mx.example.net; sender-id=pass header.from=a@example.com',
    );
    const mfrom = await checkSenderId({ scope: 'mfrom', ip: '192.0.2.5', helo: 'h.example', mailFrom: 'x@example.com' }, { resolver });
    assert.equal(mfrom.result, 'none');
    const legacy = await checkSenderId({ scope: 'pra', ip: '192.0.2.5', helo: 'h', headers: fields('Sender: s@example.org\nFrom: a@example.com\n') }, { resolver });
    assert.equal(legacy.result, 'fail');
    const none = await checkSenderId({ scope: 'pra', ip: '192.0.2.5', helo: 'h', headers: [] }, { resolver });
    assert.equal(none.result, 'permerror');
    assert.match(formatAuthenticationResults({ authservId: 'mx.example.net', senderId: senderIdReport(none) }), /sender-id=permerror \(no Purported Responsible Address/);
  });
});
