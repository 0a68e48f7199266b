// The callout dialogue with internationalised addresses (RFC 6531) against loopback DNS and SMTP servers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pathOf, usersOnly, type SmtpScript } from '../support/smtp-server.js';
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
