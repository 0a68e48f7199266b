// Sender normalisation and the postgrey whitelist formats, with fuzzing of both parsers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { normaliseSender, parseClientWhitelist, parseRecipientWhitelist, srsOriginal } from '../../../src/checks/greylist/index.js';
import { elapsedMs } from '../../support/fuzz.js';

describe('normaliseSender', () => {
  const cases: Array<[string, string]> = [
    ['Bob@Sender.Example', 'bob@sender.example'],
    ['', ''],
    // BATV, both orders postgrey knows
    ['prvs=1234567890=bob@sender.example', 'bob@sender.example'],
    ['prvs=bob=1234567890@sender.example', 'bob@sender.example'],
    ['PRVS=0123abcdef=list-owner@lists.example', 'list-owner@lists.example'],
    ['msprvs1=19abcdEFGh=bounces-123@ms.example', 'bounces-#@ms.example'],
    ['btv1==0ab1234567==alice@b.example', 'alice@b.example'],
    // SRS0 and SRS1 give the original sender
    ['SRS0=HHH=TT=orig.example=alice@forwarder.example', 'alice@orig.example'],
    ['srs0+HHH=TT=orig.example=al=ice@forwarder.example', 'al=ice@orig.example'],
    ['SRS1=HHH=first.example==HHH=TT=orig.example=alice@second.example', 'alice@orig.example'],
    ['SRS1=HHH=first.example=+HHH=TT=orig.example=alice@second.example', 'alice@orig.example'],
    // +extension and Postfix VERP
    ['owner-list+bob=example.org@lists.example', 'owner-list@lists.example'],
    ['bob+tag@sender.example', 'bob@sender.example'],
    ['+bounce-7@sender.example', '@sender.example'],
    // qmail VERP
    ['list-return-42-bob=example.org@lists.example', 'list-return-#@lists.example'],
    // numbers as postgrey: standalone digit runs only
    ['bounce-123-456@mail.example', 'bounce-#-#@mail.example'],
    ['user2020@mail.example', 'user2020@mail.example'],
    ['12345@mail.example', '#@mail.example'],
    // RFC 6531: letters of every script are word characters, digits of every script are digits
    ['ö1@mail.example', 'ö1@mail.example'],
    ['news-٢٠٢٤@mail.example', 'news-#@mail.example'],
    ['Ａ１２@mail.example', 'Ａ１２@mail.example'],
    // only A-Z folded: the Kelvin sign is no 'k', 'Ä' no 'ä'; the domain as A-labels
    ['\u212Aelvin@Mail.Example', '\u212Aelvin@mail.example'],
    ['Äpfel@Bücher.Example', 'Äpfel@xn--bcher-kva.example'],
    ['SRS0=HHH=TT=bücher.example=alice@forwarder.example', 'alice@xn--bcher-kva.example'],
    ['alice@faß.example', 'alice@xn--fa-hia.example'],
  ];
  for (const [input, expected] of cases) {
    it(`${input || '<>'} -> ${expected || '<>'}`, () => assert.equal(normaliseSender(input), expected));
  }

  it('leaves qmail VERP alone when verp is off, as postgrey does', () => {
    assert.equal(normaliseSender('list-return-42-bob=example.org@lists.example', { verp: false }), 'list-return-#-bob=example.org@lists.example');
  });

  it('keys a U-label domain and its A-label alike', () => {
    assert.equal(normaliseSender('news-1@bücher.example'), normaliseSender('news-2@XN--BCHER-KVA.example'));
  });

  it('is not fooled by SRS look-alikes', () => {
    assert.equal(srsOriginal('SRS0=only'), undefined);
    assert.equal(srsOriginal('SRS2=a=b=c=d'), undefined);
    assert.equal(normaliseSender('srs0@x.example'), 'srs0@x.example');
  });

  it('never throws and stays within its length bound, whatever the local part', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), fc.domain(), (local, domain) => {
        const once = normaliseSender(`${local}@${domain}`);
        assert.equal(typeof once, 'string');
        assert.ok(once.length <= 1100, 'once.length <= 1100');
      }),
      { numRuns: 500 },
    );
    fc.assert(fc.property(fc.string({ maxLength: 5000 }), (text) => void normaliseSender(text)), { numRuns: 300 });
  });

  it('reads a sender past its first kilobyte: two that differ only there stay two, and the domain is kept', () => {
    const local = 'a'.repeat(1500);
    assert.notEqual(normaliseSender(`${local}x@sender.example`), normaliseSender(`${local}y@sender.example`));
    assert.equal(normaliseSender(`${local}@Sender.Example`), `${local}@sender.example`);
  });

  it('normalises a policy line\'s worth of any shape in linear time', () => {
    const shapes = ['1a', 'a-', '-a=', '=', 'prvs=', 'SRS0=', '+', '١', 'ü'].map((unit) => `${unit.repeat(Math.floor(4000 / unit.length))}@x.example`);
    const ms = elapsedMs(() => {
      for (const sender of shapes) normaliseSender(sender);
    });
    assert.ok(ms < 200, `${ms.toFixed(0)} ms`);
  });
});

// Envelope senders as large senders, list managers and forwarders write them (their
// documentation and published headers; hashes and ids made up). Each row: the attempts of one
// stream (a retry, the next message, the next day's signature) and the one key they must share;
// a per-message id the sender never repeats (Amazon SES, Mandrill) stays, as in postgrey: its
// retries carry the same envelope.
describe('normaliseSender on real-world senders', () => {
  const streams: Array<[string, string[], string]> = [
    ['Amazon SES (one message)', ['0100018c2b3f4a5e-7f1e2d3c-4b5a-4c6d-9e8f-0a1b2c3d4e5f-000000@amazonses.com'], '0100018c2b3f4a5e-7f1e2d3c-4b5a-4c6d-9e8f-0a1b2c3d4e5f-#@amazonses.com'],
    ['Amazon SES, regional (one message)', ['0101018c2b3f4a5e-12345678-1234-4321-8765-123456789012-000000@us-west-2.amazonses.com'], '0101018c2b3f4a5e-#-#-#-#-#-#@us-west-2.amazonses.com'],
    ['SendGrid', ['bounces+12345678-ab12-bob=example.org@sendgrid.net', 'bounces+12345678-cd34-bob=example.org@sendgrid.net'], 'bounces@sendgrid.net'],
    ['SendGrid, branded', ['bounces+12345678-ab12-bob=example.org@em1234.sender.example', 'bounces+12345678-9f00-bob=example.org@em1234.sender.example'], 'bounces@em1234.sender.example'],
    ['Mailchimp', ['bounce-mc.us5_12345678.9876543-0123abcdef@mail123.atl11.rsgsv.net', 'bounce-mc.us5_12345678.9876544-0123abcdef@mail123.atl11.rsgsv.net'], 'bounce-mc.us5_12345678.#-0123abcdef@mail123.atl11.rsgsv.net'],
    ['Mandrill (one message)', ['bounce-md_30504962.5f8a6b2c.v1-0123456789abcdef0123456789abcdef@mandrillapp.com'], 'bounce-md_30504962.5f8a6b2c.v1-0123456789abcdef0123456789abcdef@mandrillapp.com'],
    ['Salesforce Marketing Cloud', ['bounce-12_HTML-123456789-1234567-7654321-0@bounce.s7.exacttarget.com', 'bounce-12_HTML-123456790-1234567-7654322-1@bounce.s7.exacttarget.com'], 'bounce-12_html-#-#-#-#@bounce.s7.exacttarget.com'],
    ['Gmail forwarding', ['alice+caf_=bob=example.org@gmail.com'], 'alice@gmail.com'],
    ['Google Groups', ['devlist+bncBDW5HHDAVYNBBXGZ6OKQMGQEHVUQ7KQ@googlegroups.com', 'devlist+bncBCX3HHDAVYNBBXAAAAAAMGQEHV2Y@googlegroups.com'], 'devlist@googlegroups.com'],
    ['Microsoft 365 tenant', ['Bob@Contoso.onmicrosoft.com'], 'bob@contoso.onmicrosoft.com'],
    // Microsoft 365's SRS is bounces+SRS=: one key per forwarding domain, as in postgrey.
    ['Microsoft 365 SRS', ['bounces+SRS=irox7=V3=fabrikam.com=alice@contoso.com', 'bounces+SRS=q2k9a=V4=fabrikam.com=alice@contoso.com'], 'bounces@contoso.com'],
    ['Mailgun', ['bounce+abcdef.123456-bob=example.org@mg.sender.example', 'bounce+0a1b2c.123457-bob=example.org@mg.sender.example'], 'bounce@mg.sender.example'],
    ['Postmark', ['pm_bounces@pm-bounces.sender.example'], 'pm_bounces@pm-bounces.sender.example'],
    ['Zendesk', ['support+id12345-abcd@sender.zendesk.com', 'support+id12346-ef01@sender.zendesk.com'], 'support@sender.zendesk.com'],
    ['GitHub', ['noreply@github.com'], 'noreply@github.com'],
    ['GitHub through SendGrid', ['bounces+848413-9b5e-bob=example.org@sgmail.github.com'], 'bounces@sgmail.github.com'],
    ['Mailman VERP', ['list-bounces+bob=example.org@lists.example.net'], 'list-bounces@lists.example.net'],
    ['ezmlm VERP', ['list-return-123-bob=example.org@lists.example.net', 'list-return-124-bob=example.org@lists.example.net'], 'list-return-#@lists.example.net'],
    ['postsrsd SRS0, either separator', ['SRS0=a1B2=TT=orig.example=alice@forwarder.example', 'SRS0+Zx9/=TU=orig.example=alice@forwarder.example', 'srs0-c+3d=TV=orig.example=alice@forwarder.example'], 'alice@orig.example'],
    ['Exim SRS1', ['SRS1=x1Y2=orig-fwd.example==a1B2=TT=orig.example=alice@forwarder.example', 'SRS1=z9Q8=orig-fwd.example==b3C4=TU=orig.example=alice@forwarder.example'], 'alice@orig.example'],
    ['SRS of a BATV sender', ['SRS0=HHH=TT=orig.example=prvs=0123abcdef=alice@forwarder.example', 'SRS0=III=TU=orig.example=prvs=0124fedcba=alice@forwarder.example'], 'alice@orig.example'],
    ['BATV (Exim prvs)', ['prvs=1269e93bf9=user@example.com', 'prvs=1270a0b1c2=user@example.com'], 'user@example.com'],
    ['SparkPost msprvs1', ['msprvs1=17595Bc6iB5CR=bounces-143811-2@spmailtechn.com', 'msprvs1=17596xZ0qP1aB=bounces-143811-2@spmailtechn.com'], 'bounces-#-#@spmailtechn.com'],
    ['Barracuda btv1', ['btv1==0f7abcde2ab==alice@barracuda.example', 'btv1==1a2b3c4d5e6==alice@barracuda.example'], 'alice@barracuda.example'],
  ];
  for (const [source, attempts, expected] of streams) {
    it(`${source}: ${expected}`, () => {
      for (const sender of attempts) assert.equal(normaliseSender(sender), expected, sender);
    });
  }

  // postgrey keys all of these by the tag, which changes every day (and between a first attempt
  // before midnight and its retry after): each day the stream is greylisted again.
  const signed: Array<[string, string[], string]> = [
    ['an upper-case tag', ['prvs=0123ABCDEF=newsletter1@sender.example', 'prvs=0124FEDCBA=newsletter1@sender.example'], 'newsletter1@sender.example'],
    ['the swapped form with a long local part', ['prvs=newsletters=0123abcdef@sender.example', 'prvs=newsletters=0124fedcba@sender.example'], 'newsletters@sender.example'],
    ['a Mailman VERP sender signed by its gateway', ['prvs=0123abcdef=list-bounces+bob=example.org@lists.example.net', 'prvs=0124fedcba=list-bounces+bob=example.org@lists.example.net'], 'list-bounces@lists.example.net'],
    ['an SRS address signed by its forwarder', ['prvs=0123abcdef=SRS0=HHH=TT=orig.example=alice@forwarder.example', 'prvs=0124fedcba=SRS0=III=TU=orig.example=alice@forwarder.example'], 'alice@orig.example'],
  ];
  for (const [shape, attempts, expected] of signed) {
    it(`strips a BATV tag postgrey keeps: ${shape}`, () => {
      for (const sender of attempts) assert.equal(normaliseSender(sender), expected, sender);
    });
  }

  it('still decides as postgrey where its rule finds the tag, and keeps a prvs= that has none', () => {
    assert.equal(normaliseSender('prvs=bob=0123abcdef@sender.example'), 'bob@sender.example');
    assert.equal(normaliseSender('prvs=0123456789=1234567890@sender.example'), '#@sender.example', 'both tag-shaped: the standard order');
    assert.equal(normaliseSender('prvs=abcdefghijk=bob@sender.example'), 'bob@sender.example');
    assert.equal(normaliseSender('prvs=a=b=c@sender.example'), 'prvs=a=b=c@sender.example');
    assert.equal(normaliseSender('prvs=alice=bob@sender.example'), 'bob@sender.example', 'neither tag-shaped: the standard order, prvs=TAG=LOCAL');
    assert.equal(normaliseSender('prvs=0123abcdef=bob=@sender.example'), 'bob@sender.example', "Perl's split drops the trailing empty field");
  });
});

describe('postgrey whitelist_clients', () => {
  const text = [
    '# comment',
    'debian.org',
    '/^mail\\d+\\.telekom\\.de$/   # trailing comment',
    '66.216.126.174',
    '192.0.2.0/28',
    '10.20.30',
    '172.16',
    '2001:db8:1::/48',
    '',
    'not a hostname',
    '/bad(regex/',
  ].join('\n');
  const { whitelist, problems } = parseClientWhitelist([{ source: 'whitelist_clients', text }]);

  it('reads names, regular expressions, addresses and networks', () => {
    assert.equal(whitelist.match('lists.debian.org', '203.0.113.1'), 'debian.org');
    assert.equal(whitelist.match('DEBIAN.ORG.', '203.0.113.1'), 'debian.org');
    assert.equal(whitelist.match('notdebian.org', '203.0.113.1'), undefined);
    assert.equal(whitelist.match('mail12.telekom.de', '203.0.113.1'), '/^mail\\d+\\.telekom\\.de$/');
    assert.equal(whitelist.match('mx.telekom.de', '203.0.113.1'), undefined);
    assert.ok(whitelist.match('unknown', '66.216.126.174'), 'whitelist.match(\'unknown\', \'66.216.126.174\')');
    assert.ok(whitelist.match('unknown', '192.0.2.15'), 'whitelist.match(\'unknown\', \'192.0.2.15\')');
    assert.equal(whitelist.match('unknown', '192.0.2.16'), undefined);
    assert.ok(whitelist.match('unknown', '10.20.30.99'), 'a.b.c is the /24');
    assert.ok(whitelist.match('unknown', '172.16.200.1'), 'a.b is the /16');
    assert.ok(whitelist.match('unknown', '2001:db8:1:ffff::1'), 'whitelist.match(\'unknown\', \'2001:db8:1:ffff::1\')');
    assert.ok(whitelist.match('unknown', '::ffff:66.216.126.174'), 'IPv4-mapped client address');
    assert.equal(whitelist.match('unknown', '2001:db8:2::1'), undefined);
  });

  it('reports the lines postgrey warns about and a regular expression that does not compile, each entry quoted once with what was expected', () => {
    assert.deepEqual(problems.map((p) => p.line), [10, 11]);
    assert.deepEqual(
      problems.map((p) => p.message),
      ['got "not a hostname", expected a host name or domain, an address or network, or a /regular expression/', 'got "/bad(regex/", expected a regular expression (Unterminated group)'],
    );
  });

  it('says why an entry with a leading zero (postgrey: octal) is skipped, whole or partial', () => {
    const zeros = parseClientWhitelist([{ source: 'f', text: '010.1.1.1\n192.0.2.0/24\n10.020.30\n172.016\n' }]);
    assert.deepEqual(zeros.problems.map((p) => p.line), [1, 3, 4]);
    // Worded as config/networks words a configuration's lists: the entry once, what was expected.
    const expected = 'expected an IPv4 or IPv6 address or network';
    assert.deepEqual(zeros.problems.map((p) => p.message), [
      `got "010.1.1.1", ${expected} (an octet with a leading zero (010): write it in decimal without the zero); postgrey reads it as octal: 010 is 8`,
      `got "10.020.30", ${expected} (an octet with a leading zero (020): write it in decimal without the zero); postgrey reads it as octal: 010 is 8`,
      `got "172.016", ${expected} (an octet with a leading zero (016): write it in decimal without the zero); postgrey reads it as octal: 010 is 8`,
    ]);
    // IPv6 text is no IPv4 octet, whatever its digits (the regex here read 00::1 as one).
    assert.deepEqual(
      parseClientWhitelist([{ source: 'f', text: '00::1::2\n10.0.0.1/33\n' }]).problems.map((p) => p.message),
      [`got "00::1::2", ${expected} (192.0.2.0/24, 2001:db8::/32)`, `got "10.0.0.1/33", ${expected} (prefix length must be 0 to 32: "33")`],
    );
    assert.equal(zeros.whitelist.match('unknown', '8.1.1.1'), undefined);
  });

  it('reads the whitelist Debian ships with postgrey', async () => {
    const { readWhitelistFiles } = await import('../../../src/checks/greylist/index.js');
    const files = readWhitelistFiles(['/etc/postgrey/whitelist_clients', '/etc/postgrey/whitelist_clients.local']);
    if (files.problems.length > 0) return; // postgrey is not installed here
    const shipped = parseClientWhitelist(files.sources);
    assert.deepEqual(shipped.problems, []);
    assert.ok(shipped.whitelist.size > 150, 'shipped.whitelist.size > 150');
    assert.ok(shipped.whitelist.match('mail5.telekom.de', '203.0.113.1'), 'shipped.whitelist.match(\'mail5.telekom.de\', \'203.0.113.1\')');
  });

  it('reads every entry of postgrey 1.37\'s shipped list (test/fixtures/postgrey): names, regular expressions, networks', async () => {
    const { readWhitelistFiles } = await import('../../../src/checks/greylist/index.js');
    const files = readWhitelistFiles([new URL('../../fixtures/postgrey/whitelist_clients', import.meta.url).pathname]);
    assert.deepEqual(files.problems, []);
    const shipped = parseClientWhitelist(files.sources);
    assert.deepEqual(shipped.problems, []);
    const entries = files.sources[0]!.text.split('\n').map((line) => line.replace(/#.*$/, '').trim()).filter((entry) => entry !== '');
    const regexes = entries.filter((entry) => entry.startsWith('/'));
    const networks = entries.filter((entry) => !regexes.includes(entry) && /^[\d./]+$|:/.test(entry));
    const names = entries.filter((entry) => !regexes.includes(entry) && !networks.includes(entry));
    assert.deepEqual([names.length, regexes.length, networks.length], [104, 34, 26]);
    assert.equal(shipped.whitelist.size, entries.length, 'no entry is lost or merged');
    for (const name of names) assert.equal(shipped.whitelist.match(`mx.${name.toUpperCase()}`, '192.0.2.1'), name, name);
    for (const network of networks) assert.ok(shipped.whitelist.match('unknown', network.replace(/\/\d+$/, '').replace(/^(\d+\.\d+\.\d+)$/, '$1.9')), network);
    assert.equal(shipped.whitelist.match('unknown', '195.235.40.1'), undefined, '195.235.39 is that /24 only');
    assert.ok(shipped.whitelist.match('2a01:4180:4050:400:ffff::1', '192.0.2.1') === undefined, 'a regular expression is matched against the name, not the address');
    assert.equal(shipped.whitelist.match('odk-fdv.uni-lj.si', '192.0.2.1'), '/^odk.fdv.uni-lj.si$/', 'an unescaped dot is any character, as in Perl');
    assert.equal(shipped.whitelist.match('smtp7-g21.free.fr', '192.0.2.1'), '/^(?:smtp\\w*|postfix)[0-9]+-g[0-9]+\\.free\\.fr$/');
    assert.equal(shipped.whitelist.match('mail.dgfip.finances.gouv.fr', '192.0.2.1'), 'dgfip.finances.gouv.fr', 'trailing blanks are not part of the entry');
  });
});

describe('postgrey whitelist_recipients', () => {
  const { whitelist, problems } = parseRecipientWhitelist([
    { source: 'whitelist_recipients', text: 'postmaster@\nabuse@\nspam-lover@example.test\nwhole.example\n@at.example\n/^list-.*@lists\\.example$/\n' },
  ]);

  it('matches local parts, addresses, domains and regular expressions', () => {
    assert.deepEqual(problems, []);
    assert.equal(whitelist.match('Postmaster@anything.example'), 'postmaster@');
    assert.equal(whitelist.match('abuse+x@anything.example'), 'abuse@');
    assert.equal(whitelist.match('spam-lover+tag@example.test'), 'spam-lover@example.test');
    assert.equal(whitelist.match('spam-lover@other.test'), undefined);
    assert.equal(whitelist.match('bob@whole.example'), 'whole.example');
    assert.equal(whitelist.match('bob@sub.whole.example'), 'whole.example');
    assert.equal(whitelist.match('bob@notwhole.example'), undefined);
    assert.equal(whitelist.match('bob@at.example'), '@at.example');
    assert.equal(whitelist.match('bob@sub.at.example'), undefined, '@domain is that domain only, as in access(5)');
    assert.ok(whitelist.match('list-dev@lists.example'), 'whitelist.match(\'list-dev@lists.example\')');
    assert.equal(whitelist.match('dev@lists.example'), undefined);
  });

  it('never throws on arbitrary files and bounds what it keeps', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom('/a+/', '/(/', '1.2.3', '::1', 'x@', '@y', '#c')), { maxLength: 50 }), (lines) => {
        const text = lines.join('\n');
        const clients = parseClientWhitelist([{ source: 'f', text }]);
        const recipients = parseRecipientWhitelist([{ source: 'f', text }]);
        clients.whitelist.match('host.example', '192.0.2.1');
        recipients.whitelist.match('a@b.example');
      }),
      { numRuns: 300 },
    );
    const huge = parseClientWhitelist([{ source: 'f', text: `${'x'.repeat(5000)}\nok.example` }]);
    assert.equal(huge.problems.length, 1);
    assert.equal(huge.whitelist.size, 1);
  });
});

describe('postgrey whitelists: the .domain form', () => {
  // postgrey makes (?:^|\.)\Q.example.com\E$ and (?:\@|\.)\Q.example.com\E$ of it: a name or
  // recipient that would need `..example.com`, so the entry silently matches nothing there.
  it('reports a .domain entry, which matches nothing in postgrey, naming the form that does', () => {
    const clients = parseClientWhitelist([{ source: 'whitelist_clients', text: 'ok.example\n.sub.example\n' }]);
    assert.deepEqual(clients.problems, [{ source: 'whitelist_clients', line: 2, message: '".sub.example" matches nothing (as in postgrey): write "sub.example", which matches that domain and its subdomains' }]);
    assert.equal(clients.whitelist.match('mx.sub.example', '192.0.2.1'), undefined);
    assert.equal(clients.whitelist.size, 1);
    const recipients = parseRecipientWhitelist([{ source: 'whitelist_recipients', text: 'postmaster@\n.sub.example\n' }]);
    assert.deepEqual(recipients.problems.map((p) => [p.line, p.message]), [[2, '".sub.example" matches nothing (as in postgrey): write "sub.example", which matches that domain and its subdomains']]);
    assert.equal(recipients.whitelist.match('bob@a.sub.example'), undefined);
  });

  it('reports a client entry with a character no verified client name holds (*.domain, a U-label, an address), which matches nothing in postgrey', () => {
    const clients = parseClientWhitelist([{ source: 'whitelist_clients', text: 'ok.example\n*.pool.example\nbücher.example\npostmaster@mx.example\nmx_1.Under-Score.example.\n' }]);
    assert.deepEqual(clients.problems.map((p) => [p.line, p.message]), [
      [2, '"*.pool.example" matches nothing (as in postgrey): a verified client name holds only letters, digits, "-", "_" and dots; write "pool.example", which matches that domain and its subdomains'],
      [3, '"bücher.example" matches nothing (as in postgrey): a verified client name holds only letters, digits, "-", "_" and dots'],
      [4, '"postmaster@mx.example" matches nothing (as in postgrey): a verified client name holds only letters, digits, "-", "_" and dots'],
    ]);
    assert.equal(clients.whitelist.size, 2);
    assert.equal(clients.whitelist.match('mx.pool.example', '192.0.2.1'), undefined);
    assert.equal(clients.whitelist.match('a.mx_1.under-score.example', '192.0.2.1'), 'mx_1.under-score.example');
  });

  it('reads the recipient whitelist Debian ships with postgrey: postmaster@ and abuse@ in any domain', async () => {
    const { readWhitelistFiles } = await import('../../../src/checks/greylist/index.js');
    const files = readWhitelistFiles(['/etc/postgrey/whitelist_recipients', '/etc/postgrey/whitelist_recipients.local']);
    if (files.problems.length > 0) return; // postgrey is not installed here
    const shipped = parseRecipientWhitelist(files.sources);
    assert.deepEqual(shipped.problems, []);
    assert.equal(shipped.whitelist.match('PostMaster+x@example.org'), 'postmaster@');
    assert.equal(shipped.whitelist.match('abuse@sub.example.org'), 'abuse@');
    assert.equal(shipped.whitelist.match('abusers@example.org'), undefined);
  });
});

describe('postgrey whitelists as Perl reads them', () => {
  it('reads a CRLF file, trailing comments included', () => {
    const clients = parseClientWhitelist([{ source: 'crlf', text: '# pools\r\nhash.com # note\r\n' }]);
    assert.deepEqual(clients.problems, []);
    assert.equal(clients.whitelist.match('mx.hash.com', '192.0.2.1'), 'hash.com');
    const recipients = parseRecipientWhitelist([{ source: 'crlf', text: 'postmaster@ # note\r\n' }]);
    assert.deepEqual(recipients.problems, []);
    assert.equal(recipients.whitelist.match('postmaster@example.org'), 'postmaster@');
  });

  it('translates \\A, \\z, \\Z and POSIX classes, and reports the Perl syntax it cannot read', () => {
    const { whitelist, problems } = parseClientWhitelist([{ source: 'perl', text: '/\\Aanchor\\.com\\z/\n/^sh\\.com\\Z/\n/^[[:alpha:]]+\\.posix\\.com$/\n/\\p{L}+\\.uni\\.com$/\n' }]);
    assert.equal(whitelist.match('anchor.com', '192.0.2.1') !== undefined, true);
    assert.equal(whitelist.match('notanchor.com', '192.0.2.1'), undefined, '\\A anchors at the start');
    assert.equal(whitelist.match('sh.com', '192.0.2.1') !== undefined, true);
    assert.equal(whitelist.match('mail.posix.com', '192.0.2.1') !== undefined, true);
    assert.equal(whitelist.match('mail1.posix.com', '192.0.2.1'), undefined);
    assert.deepEqual(problems.map((p) => p.line), [4]);
    assert.match(problems[0]!.message, /Perl-only regular expression syntax \\p/);
  });

  it('reads a ] that opens a class and \\x{HH} as Perl does, and reports \\N, \\R and code points past FFFF', () => {
    const { whitelist, problems } = parseClientWhitelist([
      { source: 'perl', text: '/^mx[]12]\\.bar\\.org$/\n/^[^]x]+\\.neg\\.org$/\n/^a\\x{2d}b\\.org$/\n/^[\\[]q\\.org\\z/\n/^a\\Nb$/\n/\\R/\n/\\x{1F600}/\n/^a\\vb$/\n' },
    ]);
    const matches = (name: string) => whitelist.match(name, '192.0.2.1') !== undefined;
    assert.equal(matches('mx1.bar.org'), true, '[]12] is the class of ], 1 and 2');
    assert.equal(matches('mx].bar.org'), true);
    assert.equal(matches('mx3.bar.org'), false);
    assert.equal(matches('mail.neg.org'), true);
    assert.equal(matches('a-b.org'), true);
    assert.equal(matches('[q.org'), true, 'an escaped [ in a class does not hide the class end: \\z still anchors');
    assert.deepEqual(problems.map((p) => p.line), [5, 6, 7, 8], '\\v is a vertical tab in JavaScript, vertical space in Perl');
  });

  it('reads {,n} as Perl 5.34 and later do (at most n), not as the text {,n}', () => {
    const { whitelist, problems } = parseClientWhitelist([{ source: 'perl', text: '/^mail\\d{,2}\\.upto\\.org$/\n/^a\\{,2}\\.lit\\.org$/\n/^[{,2}]x\\.cls\\.org$/\n' }]);
    assert.deepEqual(problems, []);
    const matches = (name: string) => whitelist.match(name, '192.0.2.1') !== undefined;
    assert.equal(matches('mail.upto.org'), true);
    assert.equal(matches('mail12.upto.org'), true);
    assert.equal(matches('mail123.upto.org'), false);
    assert.equal(matches('a{,2}.lit.org'), true, 'an escaped { stays a literal');
    assert.equal(matches(',x.cls.org'), true, 'inside a class {,2} are characters');
  });

  it('translates any regular expression body without throwing: a result that is ok compiles, or the entry is reported', () => {
    const perlish = fc.stringMatching(/^[a-z\\[\]^:{}x0-9().*+?|$-]{0,40}$/);
    fc.assert(
      fc.property(perlish, (body) => {
        const { whitelist, problems } = parseClientWhitelist([{ source: 'fuzz', text: `/${body.replace(/\s/g, '')}/` }]);
        whitelist.match('mx1.example.org', '192.0.2.1');
        assert.ok(problems.length <= 1, 'problems.length <= 1');
      }),
      { numRuns: 2000 },
    );
  });

  it('matches a recipient entry with an extension as postgrey does: itself and longer extensions', () => {
    const { whitelist } = parseRecipientWhitelist([{ source: 'ext', text: 'user+ext@example.com\nplain@example.com\n' }]);
    assert.equal(whitelist.match('user+ext@example.com'), 'user+ext@example.com');
    assert.equal(whitelist.match('User+Ext+2@Example.com'), 'user+ext@example.com');
    assert.equal(whitelist.match('user@example.com'), undefined);
    assert.equal(whitelist.match('plain+any+thing@example.com'), 'plain@example.com');
  });

  it('takes no empty extension as postgrey does: user+@ is not user@\'s, user++@ is', () => {
    const { whitelist } = parseRecipientWhitelist([{ source: 'ext', text: 'postmaster@\nuser+ext@example.com\n' }]);
    assert.equal(whitelist.match('postmaster+@example.org'), undefined);
    assert.equal(whitelist.match('user+ext+@example.com'), undefined);
    assert.equal(whitelist.match('postmaster++@example.org'), 'postmaster@', 'the extension is "+"');
    assert.equal(whitelist.match('postmaster+x@example.org'), 'postmaster@');
    assert.equal(whitelist.match('+@example.org'), undefined);
  });

  it('folds only A-Z, as postgrey\'s lc on octets does: a Kelvin-sign K is no k', () => {
    const { whitelist } = parseRecipientWhitelist([{ source: 'kelvin', text: 'kevin@\nkate@example.com\n' }]);
    assert.equal(whitelist.match('KEVIN@example.org'), 'kevin@');
    assert.equal(whitelist.match('\u212Aevin@example.org'), undefined);
    assert.equal(whitelist.match('\u212Aate@example.com'), undefined);
  });
});
