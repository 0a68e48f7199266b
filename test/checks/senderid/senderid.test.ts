import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatAuthenticationResults } from '../../../src/checks/auth-results.js';
import { checkSenderId, PRA_LIMITS, purportedResponsibleAddress, selectSenderIdRecord, senderIdReport, splitHeaderFields } from '../../../src/checks/senderid/index.js';
import { elapsedMs } from '../../support/fuzz.js';
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

  test('a group is no mailbox, even of one member or beside one (§2 step 5: RFC 2822 mailbox, mailbox-list)', () => {
    assert.match(praOf('From: g: a@example.com;\n'), /^none: from: a group is not allowed here at 1$/);
    assert.match(praOf('From: undisclosed:;, a@example.com\n'), /^none: from: a group is not allowed here/);
    assert.match(praOf('Sender: g: s@example.org;\nFrom: a@example.com\n'), /^none: sender: a group is not allowed here/);
    assert.match(praOf('Resent-From: g: r@example.net;\nFrom: a@example.com\n'), /^none: resent-from: a group/);
  });

  test('a field with bytes that were not UTF-8 (U+FFFD once decoded) has no PRA: the mailbox it named is lost', () => {
    assert.equal(praOf('From: A <a\ufffd@example.com>\n'), 'none: from: local part holds U+FFFD, the mark of bytes that were not UTF-8 at 3');
    assert.equal(praOf('Sender: "s \ufffd"@example.org\nFrom: a@example.com\n'), 'none: sender: local part holds U+FFFD, the mark of bytes that were not UTF-8 at 0');
    assert.equal(praOf('From: a@ex\ufffdample.com\n'), 'none: from: domain holds U+FFFD, the mark of bytes that were not UTF-8 at 4');
  });

  test('a mailbox without a domain name has no PRA (§2 step 5)', () => {
    assert.equal(praOf('From: a@[192.0.2.1]\n'), 'none: from: an address literal, not a domain name');
    assert.equal(praOf('Sender: s@[IPv6:2001:db8::1]\nFrom: a@example.com\n'), 'none: sender: an address literal, not a domain name');
  });

  test("a local part over RFC 5321's 64 octets is a PRA: headers are not bound by it (VERP Sender)", () => {
    const verp = `list-bounces+${'firstname.lastname'.repeat(3)}=example.com@lists.example.org`;
    assert.equal(praOf(`Sender: List <${verp}>\nFrom: a@example.com\n`), `sender ${verp}`);
  });

  test('white space before the colon of a field name (RFC 5322 §4.5 obs-sender, obs-from)', () => {
    assert.equal(praOf('Sender : s@example.org\nFrom: a@example.com\n'), 'sender s@example.org');
    assert.equal(praOf('From\t: a@example.com\n'), 'from a@example.com');
    assert.deepEqual(fields('Sender \t: s@example.org\n'), [{ name: 'Sender', value: 's@example.org' }]);
  });

  test('fields given directly: a value of white space is empty, and a name is read without the white space around it', () => {
    const blank = purportedResponsibleAddress([{ name: 'Sender', value: ' \t ' }, { name: 'From', value: 'a@example.com' }]);
    assert.equal(blank.kind === 'pra' && blank.field, 'from');
    const outcome = purportedResponsibleAddress([{ name: 'Sender ', value: 's@example.org' }, { name: 'From', value: 'a@example.com' }]);
    assert.equal(outcome.kind === 'pra' && outcome.field, 'sender');
  });

  test('empty fields are skipped and folded fields unfolded', () => {
    assert.equal(praOf('Sender:   \nFrom: Someone\n <a@example.com>\n'), 'from a@example.com');
    // RFC 5322 §2.2.3: only the line break goes; the white space around it is the value's.
    assert.deepEqual(fields('From: "john \n  doe"@example.com \n'), [{ name: 'From', value: '"john   doe"@example.com' }]);
    assert.equal(praOf('From: "john \n  doe"@example.com\n'), 'from "john   doe"@example.com');
    // A continuation belongs to the line it continues, not to the last field before a skipped line.
    assert.deepEqual(fields('From: a@example.com\nnot a field\n , b@example.com\n'), [{ name: 'From', value: 'a@example.com' }]);
  });

  test('empty Resent-Sender and Resent-From are skipped; a Return-Path also separates resent blocks (§2 steps 1, 2)', () => {
    assert.equal(praOf('Resent-Sender:  \nResent-From: r@example.net\nFrom: a@example.com\n'), 'resent-from r@example.net');
    assert.equal(praOf('Resent-From:\nFrom: a@example.com\n'), 'from a@example.com');
    assert.equal(praOf('Resent-From: new@example.net\nReturn-Path: <x@example.net>\nResent-Sender: old@example.net\nFrom: a@example.com\n'), 'resent-from new@example.net');
  });

  test('the header block ends at the first empty line (CRLF, or LF as a message file on disk has it), and a tab folds like a space', () => {
    assert.equal(praOf('From: a@example.com\n\nFrom: b@example.com\n'), 'from a@example.com', 'a From line in the body is no field');
    assert.deepEqual(splitHeaderFields('From: a@example.com\nSubject: x\n\nFrom: b@example.com\n'), [{ name: 'From', value: 'a@example.com' }, { name: 'Subject', value: 'x' }]);
    assert.equal(praOf('From: Someone\n\t<a@example.com>\n'), 'from a@example.com');
  });

  test('exactly PRA_LIMITS.fields header fields still have a PRA; one more has none', () => {
    const filler = Array.from({ length: PRA_LIMITS.fields - 1 }, () => ({ name: 'X', value: 'y' }));
    const outcome = purportedResponsibleAddress([{ name: 'From', value: 'a@example.com' }, ...filler]);
    assert.equal(outcome.kind === 'pra' && outcome.mailbox.address, 'a@example.com');
    assert.equal(purportedResponsibleAddress([{ name: 'From', value: 'a@example.com' }, ...filler, { name: 'X', value: 'y' }]).kind, 'none');
  });

  test('fuzz: never throws on any header block', () => {
    const line = fc.oneof(fc.constantFrom('From: a@b.example', 'Sender: s@x.example', 'Resent-From: r@y.example', 'Resent-Sender:', 'Received: x', 'From: a@b, c@d', ' folded', 'From: g: a@b.example;', 'Sender \t: s@[192.0.2.1]'), fc.string({ maxLength: 40 }));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 20 }), (lines) => {
        const outcome = purportedResponsibleAddress(splitHeaderFields(lines.join('\r\n')));
        assert.ok(outcome.kind === 'pra' || outcome.kind === 'none', 'outcome.kind === \'pra\' || outcome.kind === \'none\'');
      }),
      { numRuns: 2000 },
    );
  });

  test('fuzz: splitHeaderFields gives field names and trimmed one-line values, in linear time at its limit', () => {
    const line = fc.oneof(fc.constantFrom('From: a@b.example', 'Sender \t: s', ' ', '\t', ' \t folded ', ':', 'a:', ' :', 'From', '\r', ''), fc.string({ unit: 'binary', maxLength: 20 }));
    fc.assert(
      fc.property(fc.array(line, { maxLength: 20 }), fc.constantFrom('\r\n', '\n'), (lines, eol) => {
        const block = lines.join(eol);
        const split = splitHeaderFields(block);
        assert.ok(split.length <= lines.length, 'split.length <= lines.length');
        for (const field of split) {
          assert.match(field.name, /^[\x21-\x39\x3b-\x7e]+$/);
          assert.equal(field.value, field.value.trim());
          assert.doesNotMatch(field.value, /\n/);
        }
      }),
      { numRuns: 2000 },
    );
    const mib = PRA_LIMITS.headerBytes;
    for (const block of [`From: a@b.example\r\n${' x\r\n'.repeat(mib / 4)}`, 'a:\r\n'.repeat(mib / 4), ' \r\n'.repeat(mib / 3), `From: "${' \r\n'.repeat(mib / 3)}"@x.example`, `From${' '.repeat(mib - 10)}:x`, `From: ${'\r'.repeat(mib)}`]) {
      const ms = elapsedMs(() => purportedResponsibleAddress(splitHeaderFields(block)));
      assert.ok(ms < 500, `${JSON.stringify(block.slice(0, 10))}: ${ms.toFixed(0)} ms`);
    }
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
    assert.deepEqual(pra(['spf2.0/mfrom -all', 'v=spf1 +all']), { kind: 'none', problem: 'no spf2.0 record covers scope pra; its v=spf1 record does not count while it has spf2.0 records (RFC 4406 §3.4)' });
    assert.deepEqual(pra(['spf2.0/mfrom -all']), { kind: 'none', problem: 'no spf2.0 record covers scope pra' });
    assert.deepEqual(pra(['some text']), { kind: 'none' });
    assert.deepEqual(pra(['spf2.0/mfrom,pra ?all']), { kind: 'record', record: 'spf2.0/mfrom,pra ?all', terms: ' ?all' });
    assert.equal(pra(['spf2.0/pra -all', 'SPF2.0/PRA +all']).kind, 'permerror');
    assert.deepEqual(pra(['spf2.0/prax -all']), { kind: 'none', problem: 'no spf2.0 record covers scope pra' });
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
    // Not "example.com has no SPF record": it has one, which the spf2.0/pra record sets aside.
    assert.equal(mfrom.problem, 'example.com: no spf2.0 record covers scope mfrom; its v=spf1 record does not count while it has spf2.0 records (RFC 4406 §3.4)');
    const legacy = await checkSenderId({ scope: 'pra', ip: '192.0.2.5', helo: 'h', headers: fields('Sender: s@example.org\nFrom: a@example.com\n') }, { resolver });
    assert.equal(legacy.result, 'fail');
    // mfrom is the MAIL FROM identity even though the record was chosen by Sender ID's rules.
    assert.equal(mfrom.identity, 'mailfrom');
    assert.deepEqual([mfrom.scope, pass.scope], ['mfrom', 'pra']);
    const none = await checkSenderId({ scope: 'pra', ip: '192.0.2.5', helo: 'h', headers: [] }, { resolver });
    assert.equal(none.result, 'permerror');
    assert.equal(none.problem, 'no Purported Responsible Address: no Resent-Sender, Resent-From, Sender or From field');
    assert.match(formatAuthenticationResults({ authservId: 'mx.example.net', senderId: senderIdReport(none) }), /sender-id=permerror \(no Purported Responsible Address/);
  });

  test('mfrom scope: the null sender is checked as postmaster@HELO (RFC 4406 §4.1); pra scope looks up the A-label domain', async () => {
    const resolver = new SuiteResolver(
      buildZone({
        'h.example': [{ TXT: 'spf2.0/mfrom ip4:192.0.2.5 -all' }],
        'xn--bcher-kva.example': [{ TXT: 'spf2.0/pra ip4:192.0.2.5 -all' }],
      }),
    );
    const bounce = await checkSenderId({ scope: 'mfrom', ip: '192.0.2.5', helo: 'h.example', mailFrom: '' }, { resolver });
    assert.deepEqual([bounce.result, bounce.sender, bounce.domain], ['pass', 'postmaster@h.example', 'h.example']);
    // No MAIL FROM given is the null sender too.
    const unstated = await checkSenderId({ scope: 'mfrom', ip: '192.0.2.5', helo: 'h.example' }, { resolver });
    assert.deepEqual([unstated.result, unstated.sender], ['pass', 'postmaster@h.example']);
    const idn = await checkSenderId({ scope: 'pra', ip: '192.0.2.5', helo: 'h.example', headers: [{ name: 'From', value: 'a@bücher.example' }] }, { resolver });
    assert.deepEqual([idn.result, idn.sender], ['pass', 'a@xn--bcher-kva.example']);
  });
});
