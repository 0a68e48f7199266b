// The callout dialogue (verify/probe) against loopback DNS and SMTP servers: internationalised addresses
// (RFC 6531), reconnect bounds, reused connections, the catch-all and postmaster probes, failure ranking.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pathOf, pipelining, rejectGreeting, rejectSecondRcpt, usersOnly, type SmtpScript } from '../support/smtp-server.js';
import { mxZone, worldMaker } from './fixture.js';

const make = worldMaker();

/** The test server reads lines as Latin-1: how the UTF-8 octets of text arrive there. */
const asReceived = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');

/** EHLO without SMTPUTF8: an exchanger that takes only ASCII addresses. */
function withoutSmtputf8(): Partial<SmtpScript> {
  return { ehlo: (arg) => [`250-mx.callout.test Hello ${arg}`, '250-8BITMIME', '250 ENHANCEDSTATUSCODES'].join('\r\n') };
}

describe('internationalised addresses (RFC 6531)', () => {
  it('an ASCII local part at a U-label domain: MX looked up and RCPT sent with the A-label, no SMTPUTF8, one cache entry for both forms', async () => {
    const w = await make(mxZone({ 'xn--bcher-kva.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly(['alice']), ...withoutSmtputf8() } });
    const engine = w.engine();
    const r = await engine.verify('alice@Bücher.test');
    assert.equal(r.verdict, 'deliverable', r.description);
    assert.deepEqual(r.mxHosts.map((h) => h.name), ['mx1.xn--bcher-kva.test']);
    const commands = w.commands('127.0.0.2');
    assert.ok(commands.includes('MAIL FROM:<>'), commands.join(' | '));
    assert.ok(commands.includes('RCPT TO:<alice@xn--bcher-kva.test>'), commands.join(' | '));
    assert.ok(!commands.some((c) => /SMTPUTF8|ü/i.test(c)), commands.join(' | '));
    const again = await engine.verify('alice@xn--BCHER-kva.test');
    assert.equal(again.source, 'address-cache', 'the A-label form is the same address');
    assert.equal(w.commands('127.0.0.2').filter((c) => c.startsWith('RCPT TO:<alice@')).length, 1);
  });

  it('a UTF-8 local part: MAIL FROM:<> SMTPUTF8 where the exchanger offers it, the domain still as an A-label', async () => {
    const known = asReceived('josé@xn--bcher-kva.test');
    const w = await make(mxZone({ 'xn--bcher-kva.test': '127.0.0.2' }), { '127.0.0.2': { rcpt: (arg) => (pathOf(arg) === known ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') } });
    const r = await w.engine().verify('josé@bücher.test');
    assert.equal(r.verdict, 'deliverable', r.description);
    const commands = w.commands('127.0.0.2');
    assert.ok(commands.includes('MAIL FROM:<> SMTPUTF8'), commands.join(' | '));
    assert.ok(commands.includes(`RCPT TO:<${known}>`), commands.join(' | '));
  });

  it('a UTF-8 local part at an exchanger without SMTPUTF8: unknown (smtputf8-unsupported), never undeliverable, and no RCPT of it', async () => {
    const w = await make(mxZone({ 'xn--bcher-kva.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly([]), ...withoutSmtputf8() } });
    const r = await w.engine().verify('josé@bücher.test');
    assert.equal(r.verdict, 'unknown', r.description);
    assert.equal(r.reason, 'smtputf8-unsupported');
    assert.match(r.description, /SMTPUTF8/);
    const commands = w.commands('127.0.0.2');
    assert.ok(!commands.some((c) => /SMTPUTF8|jos/.test(c)), commands.join(' | '));
  });

  it('a 5xx X.6.7 (non-ASCII address not permitted) to a UTF-8 local part is smtputf8-unsupported, not undeliverable', async () => {
    const refusal = '553 5.6.7 Non-ASCII addresses not permitted for that recipient';
    const w = await make(mxZone({ 'xn--bcher-kva.test': '127.0.0.2' }), { '127.0.0.2': { rcpt: (arg) => (/^<callout-/.test(arg.replace(/^TO:/i, '')) ? '550 5.1.1 User unknown' : refusal) } });
    const r = await w.engine().verify('josé@bücher.test');
    assert.equal(r.verdict, 'unknown', r.description);
    assert.equal(r.reason, 'smtputf8-unsupported');
    assert.equal(r.reply?.enhanced, '5.6.7');
  });

  it('a UTF-8 local part in a batch with an ASCII one at an exchanger without SMTPUTF8: only the ASCII one is asked', async () => {
    const w = await make(mxZone({ 'xn--bcher-kva.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly(['alice']), ...withoutSmtputf8() } });
    const [jose, alice] = await w.engine().verifyMany(['josé@bücher.test', 'alice@bücher.test']);
    assert.deepEqual([jose!.verdict, jose!.reason], ['unknown', 'smtputf8-unsupported'], jose!.description);
    assert.equal(alice!.verdict, 'deliverable', alice!.description);
    const commands = w.commands('127.0.0.2');
    assert.ok(!commands.some((c) => /SMTPUTF8|jos/.test(c)), commands.join(' | '));
  });

  it('a UTF-8 local part at an exchanger without SMTPUTF8 is asked at the next exchanger, which offers it: the first is sent no RCPT at all', async () => {
    const known = asReceived('josé@xn--bcher-kva.test');
    const primary = { ...usersOnly([]), ...withoutSmtputf8() };
    const backup: Partial<SmtpScript> = { rcpt: (arg) => (pathOf(arg) === known ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') };
    const w = await make(mxZone({ 'xn--bcher-kva.test': ['127.0.0.2', '127.0.0.3'] }), { '127.0.0.2': primary, '127.0.0.3': backup });
    const r = await w.engine().verify('josé@bücher.test');
    // The catch-all probe belongs at the exchanger that answers: asked at the first, a 250 from
    // the backup was only "a backup that refused no random local part here".
    assert.equal(r.verdict, 'deliverable', r.description);
    const first = w.commands('127.0.0.2');
    assert.ok(!first.some((c) => c.startsWith('RCPT')), first.join(' | '));
  });

  it("'ß' is kept (UTS #46 nontransitional): faß.test is asked for as xn--fa-hia.test, never as fass.test", async () => {
    const w = await make(mxZone({ 'xn--fa-hia.test': '127.0.0.2', 'fass.test': '127.0.0.3' }), { '127.0.0.2': usersOnly(['alice']), '127.0.0.3': usersOnly([]) });
    const engine = w.engine();
    const r = await engine.verify('alice@faß.test');
    assert.equal(r.verdict, 'deliverable', r.description);
    assert.deepEqual(r.mxHosts.map((h) => h.name), ['mx1.xn--fa-hia.test']);
    assert.equal(w.connections('127.0.0.3'), 0);
    const other = await engine.verify('alice@fass.test');
    assert.equal(other.verdict, 'undeliverable', 'fass.test is another domain with its own cache entry');
  });
});

describe('the dialogue: reconnects, reused connections, the catch-all probe', () => {
  it('an exchanger that drops the connection at every RCPT is asked on three connections at most, then left', async () => {
    const w = await make(mxZone({ 'dropper.test': '127.0.0.2' }), { '127.0.0.2': { rcpt: () => ({ drop: true }) } });
    const r = await w.engine().verify('alice@dropper.test');
    assert.equal(r.verdict, 'unknown', r.description);
    assert.equal(w.connections('127.0.0.2'), 3, r.attempts.map((a) => a.outcome).join('; '));
  });

  it('a policy refusal of the random local part says nothing of a catch-all: a 250 for the address is not deliverable, and catch-all is inconclusive', async () => {
    const w = await make(mxZone({ 'policy.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg) => (/^TO:<callout-/i.test(arg) ? '554 5.7.1 Client host rejected: blocked' : '250 2.1.5 Ok') },
    });
    const r = await w.engine().verify('alice@policy.test');
    assert.equal(r.catchAll, 'inconclusive');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'catch-all-unknown'], r.description);
  });

  it('a 452 "too many recipients" to the first RCPT of a transaction is a temporary failure, not a reason to open another transaction', async () => {
    const w = await make(mxZone({ 'full.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg) => (/^TO:<callout-/i.test(arg) ? '550 5.1.1 User unknown' : '452 4.5.3 Error: too many recipients') },
    });
    const r = await w.engine().verify('alice@full.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'tempfail-at-rcpt'], r.description);
    const commands = w.commands('127.0.0.2');
    assert.equal(commands.filter((c) => c.startsWith('MAIL FROM:')).length, 2, commands.join(' | '));
    assert.equal(commands.filter((c) => c.startsWith('RCPT TO:<alice@')).length, 1, commands.join(' | '));
  });

  it('an RSET after the random probe that is not answered 250 (RFC 5321 §4.1.1.5) ends the connection: the address is asked on a new one', async () => {
    const w = await make(mxZone({ 'norset.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly(['alice']), rset: () => '451 4.3.0 Try again later' } });
    const r = await w.engine().verify('alice@norset.test');
    assert.deepEqual([r.verdict, r.catchAll], ['deliverable', 'refused'], r.description);
    assert.match(r.attempts[0]!.outcome, /RSET after the random probe failed/);
    const sessions = w.smtp.get('127.0.0.2')!.sessions;
    assert.equal(sessions.length, 2);
    assert.ok(!sessions[0]!.commands.some((c) => c.startsWith('RCPT TO:<alice@')), sessions[0]!.commands.join(' | '));
  });

  it('pipelined, QUIT ends the group only when no reply can lead to another command: two addresses at a one-recipient server take one connection', async () => {
    const w = await make(mxZone({ 'onercpt.test': '127.0.0.2' }), {
      '127.0.0.2': { ...pipelining(), rcpt: (arg, session) => (/^TO:<callout-/i.test(arg) ? '550 5.1.1 User unknown' : rejectSecondRcpt().rcpt!(arg, session)) },
    });
    const results = await w.engine({ callout: { pipelining: true, connectionCache: { enabled: false } } }).verifyMany(['alice@onercpt.test', 'bob@onercpt.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'deliverable'], results.map((r) => r.description).join('; '));
    assert.equal(w.connections('127.0.0.2'), 1);
  });

  it('a reused connection that answers otherwise than usual (a 4xx at RCPT) gives no verdict: the callout runs again on a new connection', async () => {
    let bobAsked = 0;
    const w = await make(mxZone({ 'one.test': '127.0.0.2', 'two.test': '127.0.0.2' }), {
      '127.0.0.2': {
        rcpt: (arg) => {
          const path = pathOf(arg);
          if (path.startsWith('alice@')) return '250 2.1.5 Ok';
          if (path.startsWith('bob@') && bobAsked++ === 0) return '451 4.3.0 Temporary failure';
          return '550 5.1.1 User unknown';
        },
      },
    });
    const engine = w.engine();
    assert.equal((await engine.verify('alice@one.test')).verdict, 'deliverable');
    const r = await engine.verify('bob@two.test');
    assert.deepEqual([r.verdict, r.reason], ['undeliverable', 'rejected-at-rcpt'], r.description);
    assert.equal(bobAsked, 2);
    assert.equal(w.connections('127.0.0.2'), 2, 'the parked connection, then a new one');
  });
});

describe('the reason of an unanswered address', () => {
  it('a lasting 5xx refusal of us outranks a temporary one at any stage, and a 5xx at MAIL is a lasting one', async () => {
    const w = await make(mxZone({ 'a.test': ['127.0.0.2', '127.0.0.3'], 'b.test': ['127.0.0.4', '127.0.0.5'] }), {
      '127.0.0.2': rejectGreeting(554),
      '127.0.0.3': { mail: () => '451 4.3.0 Temporary failure' },
      '127.0.0.4': { mail: () => '554 5.7.1 Client host [127.0.0.1] blocked using zen.example' },
      '127.0.0.5': rejectGreeting(554),
    });
    const engine = w.engine();
    const a = await engine.verify('alice@a.test');
    assert.deepEqual([a.verdict, a.reason], ['unknown', 'refused-at-greeting'], a.description);
    const b = await engine.verify('alice@b.test');
    assert.deepEqual([b.verdict, b.reason], ['unknown', 'refused-at-mail'], b.description);
  });
});

describe('STARTTLS', () => {
  it('a 421 to STARTTLS is TLS unavailable, not a refusal of our HELO', async () => {
    const w = await make(mxZone({ 'tls421.test': '127.0.0.2' }), {
      '127.0.0.2': { ehlo: () => '250-mx.callout.test\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES', starttls: () => '421 4.3.2 Service shutting down' },
    });
    const r = await w.engine({ callout: { tls: 'required' } }).verify('alice@tls421.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'tls-unavailable'], r.description);
  });
});

describe('the postmaster probe', () => {
  it('fullpostmaster asks for the bare "Postmaster" when postmaster@domain is refused (RFC 5321 §4.5.1); postmaster asks only for postmaster@domain', async () => {
    const w = await make(mxZone({ 'pm.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg) => (['alice@pm.test', 'Postmaster'].includes(pathOf(arg)) ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') },
    });
    const full = await w.engine({ callout: { postmasterProbe: 'fullpostmaster' } }).verify('alice@pm.test');
    assert.deepEqual([full.verdict, full.postmaster], ['deliverable', 'accepted'], full.description);
    assert.ok(w.commands('127.0.0.2').includes('RCPT TO:<Postmaster>'), 'w.commands(\'127.0.0.2\').includes(\'RCPT TO:<Postmaster>\')');
    const plain = await w.engine({ callout: { postmasterProbe: 'postmaster' } }).verify('alice@pm.test');
    assert.deepEqual([plain.verdict, plain.reason, plain.postmaster], ['risky', 'postmaster-refused', 'refused'], plain.description);
    assert.equal(w.commands('127.0.0.2').filter((c) => c === 'RCPT TO:<Postmaster>').length, 1, 'no bare Postmaster in postmaster mode');
  });

  it('a policy refusal of postmaster@domain (about us) is inconclusive, never a domain refusing postmaster', async () => {
    const w = await make(mxZone({ 'pm.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg) => (pathOf(arg).startsWith('postmaster@') ? '554 5.7.1 Client host rejected: blocked' : pathOf(arg).startsWith('alice@') ? '250 2.1.5 Ok' : '550 5.1.1 User unknown') },
    });
    const r = await w.engine({ callout: { postmasterProbe: 'postmaster' } }).verify('alice@pm.test');
    assert.deepEqual([r.verdict, r.postmaster], ['deliverable', 'inconclusive'], r.description);
  });
});
