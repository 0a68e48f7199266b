// The callout engine against real loopback DNS and SMTP servers: every verdict, every option.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { MemoryStore } from '../../src/store/memory.js';
import { ManualTimers } from '../support/manual-time.js';
import { StoreError } from '../../src/core/errors.js';
import type { Clock } from '../../src/core/clock.js';
import { createLogger } from '../../src/core/log.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite.js';
import { RedisStore } from '../../src/store/redis.js';
import { Redis } from 'ioredis';
import { startRedis } from '../support/redis.js';
import { CachingResolver } from '../../src/dns/cache.js';
import { createNodeResolver } from '../../src/dns/node-resolver.js';
import type { Dialer } from '../../src/smtp/types.js';
import { CalloutEngine } from '../../src/verify/engine.js';
import { VerificationCache } from '../../src/verify/cache.js';
import { parseMailbox, type Mailbox } from '../../src/address/index.js';
import { ASK_LATER, type Store } from '../../src/store/types.js';
import {
  acceptAll,
  dropAfterRset,
  greylistOnce,
  pathOf,
  pipelining,
  refuseNullSender,
  rejectGreeting,
  rejectSecondRcpt,
  silentGreeting,
  usersOnly,
  type SmtpScript,
} from '../support/smtp-server.js';
import { mxZone, worldMaker, type World } from './fixture.js';
import type { Zone } from '../support/dns-server.js';
import { turnsUntil, until, watch } from '../support/wait.js';
import { onStoreWrite } from '../support/store-writes.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const make = worldMaker();

/** An engine of the world that dials through a dialer keeping every socket, so a test can see each was closed. */
function engineKeepingSockets(t: TestContext, w: World, overrides: Record<string, unknown>): { engine: CalloutEngine; sockets: net.Socket[] } {
  const sockets: net.Socket[] = [];
  const dialer: Dialer = ({ host, port }) => {
    const socket = net.connect({ host, port });
    sockets.push(socket);
    return socket;
  };
  // As the world's own engines (fixture.ts): 2 s for the DNS server in this process to answer.
  const resolver = new CachingResolver(createNodeResolver({ servers: [w.dns.address], timeoutMs: 2000, tries: 1 }), { clock: w.clock });
  const store = new MemoryStore({ clock: w.clock });
  const engine = new CalloutEngine(w.config(overrides), { resolver, store, clock: w.clock, dialer, random: () => 0 });
  t.after(async () => {
    await engine.idle();
    await store.close();
  });
  return { engine, sockets };
}

function mailboxOf(text: string): Mailbox {
  const parsed = parseMailbox(text);
  assert.ok(parsed.ok, 'parsed.ok');
  return parsed.value;
}

/** The RCPT commands the server at host got for the random local part (the catch-all probe). */
function randomProbes(w: World, host: string): string[] {
  return w.commands(host).filter((c) => /^RCPT TO:<callout-[a-z0-9]{12}@/i.test(c));
}


/** Warn lines of the engine's log, collected as they are written. */
function warnLog(): { lines: Array<Record<string, unknown>>; log: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = [];
  return { lines, log: createLogger('warn', { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) }) };
}

/** A memory store whose deleteIf fails, as on a lost connection, wherever `fails` holds. */
function storeFailingDeletes(clock: Clock, fails: (key: string, expected: string) => boolean): MemoryStore {
  return new (class extends MemoryStore {
    override deleteIf(key: string, expected: string): Promise<boolean> {
      return fails(key, expected) ? Promise.reject(new StoreError('deleteIf failed: connection lost')) : super.deleteIf(key, expected);
    }
  })({ clock });
}

describe('verdicts from one exchanger', () => {
  it('deliverable: 250 at RCPT, random probe refused, dialogue in the transcript', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const engine = w.engine();
    const r = await engine.verify('alice@real.test');
    assert.equal(r.verdict, 'deliverable');
    assert.equal(r.reason, 'accepted');
    assert.equal(r.catchAll, 'refused');
    assert.equal(r.source, 'probe');
    assert.equal(r.reply?.stage, 'rcpt');
    assert.equal(r.reply?.code, 250);
    assert.deepEqual(r.mxHosts.map((h) => h.name), ['mx1.real.test']);
    const sent = r.attempts[0]!.transcript.filter((e) => e.dir === 'sent').map((e) => e.line);
    assert.match(sent[0]!, /^EHLO verifier\.callout\.test$/);
    assert.ok(sent.includes('MAIL FROM:<>'), 'sent.includes(\'MAIL FROM:<>\')');
    assert.ok(sent.some((l) => /^RCPT TO:<callout-[a-z0-9]{12}@real\.test>$/.test(l)), 'random probe sent');
    assert.ok(sent.includes('RSET'), 'sent.includes(\'RSET\')');
    assert.ok(sent.includes('RCPT TO:<alice@real.test>'), 'sent.includes(\'RCPT TO:<alice@real.test>\')');
    assert.equal(sent.at(-1), 'RSET', 'the connection is kept for the next callout, idle after RSET');
    await engine.idle();
    assert.equal(w.commands('127.0.0.2').at(-1), 'QUIT', 'and closed with QUIT when the engine goes idle');
    assert.ok(!w.commands('127.0.0.2').some((c) => /^VRFY/i.test(c)), 'VRFY is never used by default');
  });

  it('undeliverable: a 5xx at RCPT carries the code and enhanced code', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine().verify('nobody@real.test');
    assert.equal(r.verdict, 'undeliverable');
    assert.equal(r.reason, 'rejected-at-rcpt');
    assert.equal(r.reply?.code, 550);
    assert.equal(r.reply?.enhanced, '5.1.1');
    assert.ok(r.reply?.text, 'r.reply?.text');
  });

  it('no-details mode hides the remote text but keeps the codes', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine({ callout: { noDetails: true } }).verify('nobody@real.test');
    assert.equal(r.verdict, 'undeliverable');
    assert.equal(r.reply?.text, undefined);
    assert.doesNotMatch(r.description, /unknown|mailbox/i);
    assert.match(r.description, /550 5\.1\.1/);
  });

  it('risky catch-all: the random address is accepted; the domain record answers later without connecting', async () => {
    const w = await make(mxZone({ 'any.test': '127.0.0.2' }), { '127.0.0.2': acceptAll() });
    const engine = w.engine();
    const r = await engine.verify('whoever@any.test');
    assert.equal(r.verdict, 'risky');
    assert.equal(r.reason, 'catch-all');
    assert.equal(r.catchAll, 'accepted');
    assert.ok(!w.commands('127.0.0.2').includes('RCPT TO:<whoever@any.test>'), 'no real RCPT after a catch-all answer');
    const before = w.connections('127.0.0.2');
    const again = await engine.verify('someone-else@any.test');
    assert.equal(again.verdict, 'risky');
    assert.equal(again.source, 'domain-cache');
    assert.equal(w.connections('127.0.0.2'), before);
  });

  it('concurrent callouts to one domain share its catch-all probe: the random local part is asked once', async () => {
    const w = await make(mxZone({ 'many.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob', 'carol']) });
    const engine = w.engine();
    const results = await Promise.all(['alice', 'bob', 'carol', 'nobody'].map((user) => engine.verify(`${user}@many.test`)));
    assert.deepEqual(results.map((r) => [r.verdict, r.catchAll]), [['deliverable', 'refused'], ['deliverable', 'refused'], ['deliverable', 'refused'], ['undeliverable', 'refused']]);
    assert.equal(randomProbes(w, '127.0.0.2').length, 1);
  });

  it('concurrent callouts to a catch-all domain: one probe finds it, the others are answered by its record without connecting', async () => {
    const w = await make(mxZone({ 'any.test': '127.0.0.2' }), { '127.0.0.2': acceptAll() });
    const engine = w.engine();
    const results = await Promise.all(['a', 'b', 'c'].map((user) => engine.verify(`${user}@any.test`)));
    assert.deepEqual(results.map((r) => [r.verdict, r.reason]), [['risky', 'catch-all'], ['risky', 'catch-all'], ['risky', 'catch-all']]);
    assert.deepEqual(results.map((r) => r.source).sort(), ['domain-cache', 'domain-cache', 'probe']);
    assert.equal(randomProbes(w, '127.0.0.2').length, 1);
    assert.equal(w.connections('127.0.0.2'), 1);
  });

  it('two engines on one store (two daemons, two workers) ask one domain\'s catch-all question once', async () => {
    const w = await make(mxZone({ 'many.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob']) });
    const store = new MemoryStore({ clock: w.clock });
    const [one, two] = [w.engine({}, store), w.engine({}, store)];
    const [alice, bob] = await Promise.all([one.verify('alice@many.test'), two.verify('bob@many.test')]);
    assert.deepEqual([alice.verdict, bob.verdict], ['deliverable', 'deliverable']);
    assert.deepEqual([alice.catchAll, bob.catchAll], ['refused', 'refused']);
    assert.equal(randomProbes(w, '127.0.0.2').length, 1);
  });

  it('verifies a local part over 64 octets (SRS, BATV senders); one whose RCPT line would pass 512 octets is not sent', async () => {
    const long = `SRS0=Ab3d=QX=customer-service.example.com=${'x'.repeat(40)}`;
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly([long]) });
    const engine = w.engine({ callout: { randomProbe: false } });
    assert.equal((await engine.verify(`${long}@real.test`)).verdict, 'deliverable');
    assert.equal((await engine.verify(`other${long}@real.test`)).verdict, 'undeliverable');
    const huge = await engine.verify(`${'y'.repeat(600)}@real.test`);
    assert.equal(huge.verdict, 'unknown', huge.description);
    assert.ok(!w.commands('127.0.0.2').some((line) => line.includes('y'.repeat(600))), 'the over-long RCPT was not sent');
  });

  it('an address whose RCPT line would pass 512 octets costs no connection and spoils no other address of its batch', async () => {
    const w = await make(mxZone({ 'long.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob']) });
    const engine = w.engine();
    const huge = await engine.verify(`${'y'.repeat(600)}@long.test`);
    assert.deepEqual([huge.verdict, huge.reason], ['unknown', 'protocol-error'], huge.description);
    assert.equal(w.connections('127.0.0.2'), 0, 'nothing to ask an exchanger that could not be asked it');
    const batch = await engine.verifyMany(['alice@long.test', `${'z'.repeat(600)}@long.test`, 'bob@long.test']);
    assert.deepEqual(batch.map((r) => r.verdict), ['deliverable', 'unknown', 'deliverable'], batch.map((r) => r.description).join('\n'));
    assert.equal(w.connections('127.0.0.2'), 1);
  });

  it('without the random probe a catch-all domain looks deliverable, and the probe state says not-run', async () => {
    const w = await make(mxZone({ 'any.test': '127.0.0.2' }), { '127.0.0.2': acceptAll() });
    const r = await w.engine({ callout: { randomProbe: false } }).verify('whoever@any.test');
    assert.equal(r.verdict, 'deliverable');
    assert.equal(r.catchAll, 'not-run');
  });

  it('a blocklist refusal at MAIL FROM:<> is about us, not a domain that cannot take bounces', async () => {
    const blocked = { mail: () => ({ reply: '554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org' }) };
    const w = await make(mxZone({ 'listed.test': '127.0.0.114' }), { '127.0.0.114': { ...usersOnly(['alice']), ...blocked } });
    const r = await w.engine().verify('alice@listed.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'refused-at-mail']);
  });

  it('a 5xx at MAIL FROM:<> asking for STARTTLS or AUTH first, or a protocol error, is about the session, not the null sender', async () => {
    const replies: Record<string, string> = {
      '127.0.0.117': '530 5.7.0 Must issue a STARTTLS command first',
      '127.0.0.118': '530 5.7.57 Client not authenticated to send mail',
      '127.0.0.119': '503 5.5.1 Error: send HELO/EHLO first',
    };
    const domains = Object.fromEntries(Object.keys(replies).map((ip) => [`session${ip.split('.')[3]}.test`, ip]));
    const w = await make(mxZone(domains), Object.fromEntries(Object.entries(replies).map(([ip, text]) => [ip, { ...usersOnly(['alice']), mail: () => text }])));
    const engine = w.engine({ callout: { tls: 'off' } });
    for (const domain of Object.keys(domains)) {
      const r = await engine.verify(`alice@${domain}`);
      assert.deepEqual([r.verdict, r.reason], ['unknown', 'refused-at-mail'], `${domain}: ${r.description}`);
    }
    const syntax = await make(mxZone({ 'nullsyntax.test': '127.0.0.120' }), { '127.0.0.120': { ...usersOnly(['alice']), mail: () => '501 5.1.7 Bad sender address syntax' } });
    const r = await syntax.engine().verify('alice@nullsyntax.test');
    assert.deepEqual([r.verdict, r.reason], ['risky', 'null-sender-refused'], 'an X.1.7 code names the sender: <> itself is refused');
  });

  it('risky null-sender-refused: MAIL FROM:<> refused, and the domain is remembered', async () => {
    const w = await make(mxZone({ 'nobounce.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly(['alice']), ...refuseNullSender() } });
    const engine = w.engine();
    const r = await engine.verify('alice@nobounce.test');
    assert.equal(r.verdict, 'risky');
    assert.equal(r.reason, 'null-sender-refused');
    assert.equal(r.reply?.stage, 'mail');
    const again = await engine.verify('bob@nobounce.test');
    assert.equal(again.reason, 'null-sender-refused');
    assert.equal(again.source, 'domain-cache');
  });

  it('a remembered refusal of MAIL FROM:<> does not taint callouts made with a non-null callout.sender', async () => {
    const w = await make(mxZone({ 'nobounce.test': '127.0.0.72' }), { '127.0.0.72': { ...usersOnly(['alice']), ...refuseNullSender() } });
    const store = new MemoryStore({ clock: w.clock });
    assert.equal((await w.engine({}, store).verify('alice@nobounce.test')).reason, 'null-sender-refused');
    // The site then sets a sender of its own, on the same (persistent) store.
    const engine = w.engine({ callout: { sender: 'verify@callout.test' } }, store);
    const r = await engine.verify('alice@nobounce.test');
    assert.equal(r.source, 'probe');
    assert.equal(r.verdict, 'deliverable', `${r.reason}: ${r.description}`);
    assert.ok(!w.commands('127.0.0.72').slice(-3).includes('MAIL FROM:<>'), '!w.commands(\'127.0.0.72\').slice(-3).includes(\'MAIL FROM:<>\')');
  });

  it('says QUIT after a refusal at MAIL, as RFC 5321 §4.1.1.10 asks, instead of dropping the connection', async () => {
    const blocked = { mail: () => ({ reply: '554 5.7.1 Client host [127.0.0.1] blocked using zen.spamhaus.org' }) };
    const w = await make(mxZone({ 'nobounce.test': '127.0.0.2', 'listed.test': '127.0.0.114' }), {
      '127.0.0.2': { ...usersOnly(['alice']), ...refuseNullSender() },
      '127.0.0.114': { ...usersOnly(['alice']), ...blocked },
    });
    // Without connection reuse, so that every callout ends its connection.
    const engine = w.engine({ callout: { connectionCache: { enabled: false } } });
    await engine.verify('alice@nobounce.test');
    await engine.verify('alice@listed.test');
    for (const host of ['127.0.0.2', '127.0.0.114']) {
      // The verdict does not wait for the server's 221, so the QUIT may still be on its way.
      await until(() => w.commands(host).at(-1) === 'QUIT');
      const commands = w.commands(host);
      assert.match(commands.at(-2) ?? '', /^MAIL FROM:<>/, `${host}: ${commands.join(' | ')}`);
      assert.equal(commands.at(-1), 'QUIT', `${host}: ${commands.join(' | ')}`);
    }
  });

  it('falls back to the configured sender only when MAIL FROM:<> is refused; that sender is never verified', async () => {
    const w = await make(mxZone({ 'nobounce.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly(['alice']), ...refuseNullSender() } });
    const engine = w.engine({ callout: { fallbackSender: 'verify@callout.test' } });
    const nobody = await engine.verify('nobody@nobounce.test');
    assert.equal(nobody.verdict, 'undeliverable', 'a 5xx at RCPT is still definite');
    const alice = await engine.verify('alice@nobounce.test');
    assert.equal(alice.verdict, 'risky', 'it exists but cannot take bounces');
    assert.equal(alice.reason, 'null-sender-refused');
    // The domain's null-sender record does not answer for its addresses: each is asked with the fallback sender.
    const bob = await engine.verify('bob@nobounce.test');
    assert.equal(bob.verdict, 'undeliverable', `${bob.reason}: ${bob.description}`);
    const commands = w.commands('127.0.0.2');
    assert.ok(commands.includes('MAIL FROM:<>'), 'commands.includes(\'MAIL FROM:<>\')');
    assert.ok(commands.includes('MAIL FROM:<verify@callout.test>'), 'commands.includes(\'MAIL FROM:<verify@callout.test>\')');
    const own = await engine.verify('verify@callout.test');
    assert.equal(own.reason, 'own-probe-sender');
  });

  it('takes only its own probe sender, A-Z folded, for its own: a UTF-8 local part the Unicode lower case makes it is verified', async () => {
    const w = await make(mxZone({ 'callout.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['kate']) });
    const engine = w.engine({ callout: { sender: 'kate@callout.test' } });
    assert.equal((await engine.verify('KATE@callout.test')).reason, 'own-probe-sender');
    // The Kelvin sign lower-cases to an ASCII k: \u212Aate@ is another mailbox, which the exchanger refuses.
    const kelvin = await engine.verify('\u212Aate@callout.test');
    assert.notEqual(kelvin.reason, 'own-probe-sender');
    assert.equal(kelvin.verdict, 'undeliverable');
  });

  it('unknown greylisted: a 450 at RCPT is never undeliverable; the domain is left alone, then retried', async () => {
    const w = await make(mxZone({ 'grey.test': '127.0.0.2' }), { '127.0.0.2': greylistOnce() });
    const engine = w.engine({ callout: { randomProbe: false } });
    const first = await engine.verify('alice@grey.test');
    assert.equal(first.verdict, 'unknown');
    assert.equal(first.reason, 'greylisted');
    assert.equal(first.reply?.code, 450);
    const connections = w.connections('127.0.0.2');
    const held = await engine.verify('alice@grey.test');
    assert.equal(held.verdict, 'unknown');
    assert.equal(w.connections('127.0.0.2'), connections, 'no callout while the greylist record lasts');
    w.clock.advance(6 * 60_000);
    const retried = await engine.verify('alice@grey.test');
    assert.equal(retried.verdict, 'deliverable');
  });

  it('a domain record that answers another address of the domain does not name the address the probe asked', async () => {
    const w = await make(mxZone({ 'grey.test': '127.0.0.2' }), { '127.0.0.2': greylistOnce() });
    // No address record for alice@ (cache.tempfail 0s): the domain's record answers her again too.
    const engine = w.engine({ callout: { randomProbe: false }, cache: { tempfail: '0s' } });
    const first = await engine.verify('alice@grey.test');
    assert.match(first.description, /RCPT TO:<alice@grey\.test>/);
    const other = await engine.verify('bob@grey.test');
    assert.deepEqual([other.source, other.reason], ['domain-cache', 'greylisted'], other.description);
    // It goes into the reply to whoever sends as bob@: alice@ was someone else's address.
    assert.ok(!other.description.includes('alice'), other.description);
    assert.match(other.description, /RCPT TO:<…@grey\.test>.*\(remembered for the domain\)$/);
    const again = await engine.verify('alice@grey.test');
    assert.equal(again.source, 'domain-cache', again.description);
    assert.match(again.description, /RCPT TO:<alice@grey\.test>/, 'the address asked keeps its own name');
  });

  it('postmaster probe: a domain refusing postmaster makes a deliverable answer risky', async () => {
    const w = await make(mxZone({ 'nopm.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg) => (/postmaster|alice|bob/i.test(arg) ? (/alice|bob/.test(arg) ? '250 2.1.5 Ok' : '550 5.1.1 No postmaster') : '550 5.1.1 Unknown') },
    });
    const engine = w.engine({ callout: { postmasterProbe: 'postmaster' } });
    const r = await engine.verify('alice@nopm.test');
    assert.equal(r.verdict, 'risky');
    assert.equal(r.reason, 'postmaster-refused');
    assert.equal(r.postmaster, 'refused');
    // The remembered refusal of postmaster makes the domain's next deliverable answer risky too.
    const bob = await engine.verify('bob@nopm.test');
    assert.deepEqual([bob.source, bob.verdict, bob.reason], ['probe', 'risky', 'postmaster-refused']);
  });

  it('postmaster probe: an accepted postmaster is remembered for the domain and not asked again at the next callout', async () => {
    const w = await make(mxZone({ 'pm.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob', 'postmaster']) });
    const engine = w.engine({ callout: { postmasterProbe: 'postmaster' } });
    for (const address of ['alice@pm.test', 'bob@pm.test']) assert.equal((await engine.verify(address)).verdict, 'deliverable');
    assert.equal(w.commands('127.0.0.2').filter((c) => /^RCPT TO:<postmaster@/i.test(c)).length, 1);
  });

  it('VRFY is used only when configured', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), {
      '127.0.0.2': { ...usersOnly(['alice']), vrfy: (arg) => (/alice/.test(arg) ? '250 Alice <alice@real.test>' : '550 5.1.1 No such user') },
    });
    const r = await w.engine({ callout: { vrfy: true, randomProbe: false } }).verify('alice@real.test');
    assert.equal(r.verdict, 'deliverable');
    assert.ok(w.commands('127.0.0.2').some((c) => /^VRFY alice@real\.test$/i.test(c)), 'w.commands(\'127.0.0.2\').some((c) => /^VRFY alice@real\\.test$/i.test(c))');
  });

  it('VRFY asked of a server that offers PIPELINING goes alone: no RCPT of the address is sent ahead of it in a group', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), {
      '127.0.0.2': { ...usersOnly(['alice']), ...pipelining(), vrfy: (arg) => (/alice/.test(arg) ? '250 Alice <alice@real.test>' : '550 5.1.1 No such user') },
    });
    const r = await w.engine({ callout: { vrfy: true } }).verify('alice@real.test');
    assert.deepEqual([r.verdict, r.reply?.code], ['deliverable', 250], r.description);
    const commands = w.commands('127.0.0.2');
    assert.ok(!commands.some((c) => /^RCPT TO:<alice@/i.test(c)), commands.join(' | '));
  });

  it('a 421 to VRFY closes the exchanger for this callout: no new connection to it, the next exchanger is asked', async () => {
    const w = await make(mxZone({ 'vrfy421.test': ['127.0.0.74', '127.0.0.75'] }), {
      '127.0.0.74': { ...usersOnly(['alice']), vrfy: () => ({ reply: '421 4.7.0 mx.callout.test closing connection', drop: true }) },
      '127.0.0.75': usersOnly(['alice']),
    });
    const r = await w.engine({ callout: { vrfy: true, randomProbe: false } }).verify('alice@vrfy421.test');
    assert.deepEqual([r.verdict, r.reason], ['deliverable', 'accepted'], r.description);
    assert.equal(w.connections('127.0.0.74'), 1, r.attempts.map((a) => a.outcome).join('; '));
  });

  it('a VRFY that times out is a tarpit, asked once as an RCPT that times out is: no new connection to ask it again', async () => {
    const w = await make(mxZone({ 'vrfypit.test': '127.0.0.72' }), { '127.0.0.72': { ...usersOnly(['alice']), vrfy: () => ({ silent: true }) } });
    const r = await w.engine({ callout: { vrfy: true, randomProbe: false, timeouts: { command: '500ms', overall: '10s' } } }).verify('alice@vrfypit.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'timeout'], r.description);
    assert.match(r.description, /timed out at vrfy after 500 ms/);
    assert.equal(w.connections('127.0.0.72'), 1, r.attempts.map((a) => a.outcome).join('; '));
  });

  it('a server that hangs up on VRFY is asked with RCPT on the next connection, not with VRFY again', async () => {
    const w = await make(mxZone({ 'vrfydrop.test': '127.0.0.73' }), { '127.0.0.73': { ...usersOnly(['alice']), vrfy: () => ({ drop: true }) } });
    const r = await w.engine({ callout: { vrfy: true, randomProbe: false } }).verify('alice@vrfydrop.test');
    assert.deepEqual([r.verdict, r.reason], ['deliverable', 'accepted'], r.description);
    assert.equal(w.connections('127.0.0.73'), 2);
    assert.equal(w.commands('127.0.0.73').filter((c) => /^VRFY /i.test(c)).length, 1);
  });
});

describe('where a rejection happened', () => {
  it('a 5xx greeting is about us: unknown refused-at-greeting, never undeliverable', async () => {
    const w = await make(mxZone({ 'blocked.test': '127.0.0.2' }), { '127.0.0.2': rejectGreeting(554) });
    const r = await w.engine().verify('alice@blocked.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'refused-at-greeting');
    assert.equal(r.reply?.code, 554);
  });

  it('a 5xx at MAIL FROM with a non-null sender is refused-at-mail', async () => {
    const w = await make(mxZone({ 'picky.test': '127.0.0.2' }), { '127.0.0.2': { mail: () => '550 5.7.1 Go away' } });
    const r = await w.engine({ callout: { sender: 'probe@callout.test' } }).verify('alice@picky.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'refused-at-mail');
  });

  it('a 5xx to HELO and EHLO is refused-at-helo', async () => {
    const w = await make(mxZone({ 'nohelo.test': '127.0.0.2' }), { '127.0.0.2': { ehlo: () => '550 no', helo: () => '550 no' } });
    const r = await w.engine().verify('alice@nohelo.test');
    assert.equal(r.reason, 'refused-at-helo');
    assert.equal(r.verdict, 'unknown');
  });
});

describe('replies at RCPT that are about us', () => {
  it('a policy 5xx at RCPT (X.7.x, "Client host rejected") is unknown, never undeliverable, and remembered for the domain', async () => {
    const w = await make(mxZone({ 'rbl.test': '127.0.0.2' }), { '127.0.0.2': { rcpt: () => '554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org' } });
    const engine = w.engine({ callout: { randomProbe: false } });
    const r = await engine.verify('alice@rbl.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'refused-at-rcpt');
    const connections = w.connections('127.0.0.2');
    const other = await engine.verify('bob@rbl.test');
    assert.equal(other.reason, 'refused-at-rcpt');
    assert.equal(other.source, 'domain-cache');
    assert.equal(w.connections('127.0.0.2'), connections);
  });

  it('a policy refusal of one recipient (a restricted noreply@) does not silence the domain\'s other addresses', async () => {
    const users = usersOnly(['alice']).rcpt!;
    const restricted: Partial<SmtpScript> = {
      rcpt: (arg, session) => (pathOf(arg).startsWith('noreply@') ? `554 5.7.1 <${pathOf(arg)}>: Recipient address rejected: Access denied` : users(arg, session)),
    };
    // Without the random probe its words tell; in no-details mode, without them, the refused random local part does.
    for (const randomProbe of [false, true]) {
      const w = await make(mxZone({ 'bank.test': '127.0.0.2' }), { '127.0.0.2': restricted });
      const engine = w.engine({ callout: { randomProbe, noDetails: randomProbe } });
      const r = await engine.verify('noreply@bank.test');
      assert.equal(r.verdict, 'unknown');
      assert.equal(r.reason, 'refused-at-rcpt');
      const other = await engine.verify('alice@bank.test');
      assert.equal(other.source, 'probe', `random probe ${randomProbe ? 'on' : 'off'}`);
      assert.equal(other.verdict, 'deliverable');
      // Asked with another address on one probe: the mailbox answer shows the server does not refuse us.
      const both = await w.engine({ callout: { randomProbe } }).verifyMany(['noreply@bank.test', 'bob@bank.test']);
      assert.deepEqual(both.map((b) => b.reason), ['refused-at-rcpt', 'rejected-at-rcpt']);
      assert.equal((await engine.verify('carol@bank.test')).verdict, 'undeliverable');
    }
  });

  it('a full mailbox at RCPT (552 5.2.2) is unknown, never undeliverable: the mailbox exists', async () => {
    const w = await make(mxZone({ 'full.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg) => (/^TO:<callout-/i.test(arg) ? '550 5.1.1 User unknown' : '552 5.2.2 <alice@full.test>: Mailbox full') },
    });
    const r = await w.engine().verify('alice@full.test');
    assert.deepEqual([r.verdict, r.reason, r.reply?.enhanced], ['unknown', 'tempfail-at-rcpt', '5.2.2'], r.description);
  });

  it('a sender refusal reported at RCPT without an enhanced code is about us too', async () => {
    const w = await make(mxZone({ 'delay.test': '127.0.0.2' }), { '127.0.0.2': { rcpt: () => '550 <>: Sender address rejected: Access denied' } });
    const r = await w.engine({ callout: { randomProbe: false } }).verify('alice@delay.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'refused-at-rcpt');
  });

  it('a 4xx that is not greylisting (no reverse DNS, lookup failure) is a plain temporary failure', async () => {
    const w = await make(mxZone({ 'temp.test': '127.0.0.2' }), { '127.0.0.2': { rcpt: () => '450 4.7.1 Client host rejected: cannot find your reverse hostname, try again later' } });
    const r = await w.engine({ callout: { randomProbe: false } }).verify('alice@temp.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'tempfail-at-rcpt');
  });

  it('a temporary refusal of us is kept on the domain for cache.tempfail, but not over greylisting another exchanger met', async () => {
    const w = await make(mxZone({ 'refusing.test': '127.0.0.2', 'mixed.test': ['127.0.0.3', '127.0.0.4'] }), {
      '127.0.0.2': { ...usersOnly(['alice']), mail: () => '451 4.3.0 Try again later' },
      '127.0.0.3': { ...usersOnly(['alice']), mail: () => '451 4.7.1 Greylisted, try again later' },
      '127.0.0.4': rejectGreeting(421),
    });
    const engine = w.engine({ callout: { randomProbe: false } });
    const refused = await engine.verify('alice@refusing.test');
    assert.deepEqual([refused.verdict, refused.reason], ['unknown', 'refused-at-mail']);
    const again = await engine.verify('bob@refusing.test');
    assert.deepEqual([again.source, again.reason], ['domain-cache', 'refused-at-mail'], 'another sender of the domain opens no connection');
    w.clock.advance(61_000);
    assert.equal((await engine.verify('carol@refusing.test')).source, 'probe', 'asked again after cache.tempfail');
    // The 421 of the second exchanger ranks above the first one's greylisting; the greylist
    // record says when a retry is worth it and answers as greylisting (deferred by default).
    const first = await engine.verify('alice@mixed.test');
    assert.equal(first.reason, 'refused-at-greeting');
    const later = await engine.verify('bob@mixed.test');
    assert.deepEqual([later.source, later.reason], ['domain-cache', 'greylisted'], later.description);
  });
});

describe('several exchangers', () => {
  it('moves on from a 421 greeting to the next MX in preference order', async () => {
    const w = await make(mxZone({ 'two.test': ['127.0.0.2', '127.0.0.3'] }), {
      '127.0.0.2': rejectGreeting(421),
      '127.0.0.3': usersOnly(['alice']),
    });
    const r = await w.engine().verify('alice@two.test');
    assert.equal(r.verdict, 'deliverable');
    assert.deepEqual(r.attempts.map((a) => a.address), ['127.0.0.2', '127.0.0.3']);
  });

  it('a server that several exchanger names (or an A and a mapped AAAA) lead to is tried once per callout, as Exim removes duplicate addresses', async () => {
    const zone: Zone = {
      'dup.test': { MX: [10, 20, 30].map((priority, i) => ({ priority, exchange: `mx${i + 1}.dup.test` })) },
      'mx1.dup.test': { A: ['127.0.0.2'], AAAA: ['::ffff:127.0.0.2'] },
      'mx2.dup.test': { A: ['127.0.0.2'] },
      'mx3.dup.test': { A: ['127.0.0.3'] },
    };
    const w = await make(zone, { '127.0.0.2': rejectGreeting(421), '127.0.0.3': usersOnly(['alice']) });
    const r = await w.engine().verify('alice@dup.test');
    assert.equal(r.verdict, 'deliverable');
    assert.equal(w.connections('127.0.0.2'), 1, 'the 421 server was asked again under each of its names and forms');
    assert.deepEqual(r.attempts.map((a) => [a.host, a.address, /tried already/.test(a.outcome)]), [
      ['mx1.dup.test', '127.0.0.2', false],
      ['mx1.dup.test', '127.0.0.2', true],
      ['mx2.dup.test', '127.0.0.2', true],
      ['mx3.dup.test', '127.0.0.3', false],
    ]);
  });

  it('a tarpit greeting times out and the next MX answers', async () => {
    const w = await make(mxZone({ 'tarpit.test': ['127.0.0.2', '127.0.0.3'] }), {
      '127.0.0.2': silentGreeting(),
      '127.0.0.3': usersOnly(['alice']),
    });
    // The greeting timeout bounds the next MX's greeting too: a second, not less, for a loaded machine.
    const r = await w.engine({ callout: { timeouts: { greeting: '1s', overall: '5s' } } }).verify('alice@tarpit.test');
    assert.equal(r.verdict, 'deliverable');
    assert.match(r.attempts[0]!.outcome, /timed out at greeting/);
  });

  it('the overall deadline ends a verification across hosts', async () => {
    const w = await make(mxZone({ 'slow.test': ['127.0.0.2', '127.0.0.3'] }), {
      '127.0.0.2': silentGreeting(),
      '127.0.0.3': silentGreeting(),
    });
    const started = Date.now();
    // Time for the lookups on a loaded machine (else dns-tempfail), far below the greeting timeout.
    const r = await w.engine({ callout: { timeouts: { greeting: '30s', overall: '1500ms' } } }).verify('alice@slow.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'timeout');
    // The greeting timeout would end it after 30 s; ten leave room for a loaded machine.
    assert.ok(Date.now() - started < 10_000, 'the deadline, not the greeting timeout, ended it');
    // Past the deadline the next exchanger is neither tried nor counted against its per-host limits.
    assert.deepEqual(r.attempts.map((a) => a.address), ['127.0.0.2']);
  });

  it('a wall clock stepped an hour ahead during a callout (NTP, a resumed VM) neither times it out nor marks the domain useless', async (t) => {
    const realNow = Date.now.bind(Date);
    const w = await make(mxZone({ 'step.test': '127.0.0.2' }), {
      '127.0.0.2': {
        ...usersOnly(['alice', 'bob']),
        // The step comes while the server greets: every wait after it is measured across it.
        greeting: () => {
          t.mock.method(Date, 'now', () => realNow() + HOUR);
          return '220 mx.callout.test ESMTP';
        },
      },
    });
    const engine = w.engine({ callout: { timeouts: { overall: '20s' } } });
    const r = await engine.verify('alice@step.test');
    const other = await engine.verify('bob@step.test');
    assert.deepEqual(
      [[r.verdict, r.reason], [other.verdict, other.source]],
      [['deliverable', 'accepted'], ['deliverable', 'probe']],
      `${r.description} / ${other.description}`,
    );
    assert.ok(r.durationMs < 20_000, `durationMs ${r.durationMs} measures the callout, not the step`);
  });

  it('a refused connection is unknown unreachable', async () => {
    const w = await make({ ...mxZone({ 'down.test': '127.0.0.9' }) }, { '127.0.0.2': acceptAll() });
    const r = await w.engine().verify('alice@down.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'unreachable');
  });

  it('opens at most five new connections for one callout, however many exchangers drop it (as Postfix\'s smtp_mx_address_limit)', async () => {
    const zone: Zone = { 'amp.test': { MX: [1, 2, 3, 4, 5].map((n) => ({ priority: n, exchange: `mx${n}.amp.test` })) } };
    const addresses: string[] = [];
    for (let n = 1; n <= 5; n++) {
      const four = [0, 1, 2, 3].map((i) => `127.0.0.${150 + (n - 1) * 4 + i}`);
      zone[`mx${n}.amp.test`] = { A: four };
      addresses.push(...four);
    }
    const dropAtRcpt = { ...usersOnly(['alice']), rcpt: () => ({ drop: true }) };
    const w = await make(zone, Object.fromEntries(addresses.map((address) => [address, dropAtRcpt])));
    const r = await w.engine({ callout: { connectionCache: { enabled: false } } }).verify('alice@amp.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(addresses.reduce((sum, address) => sum + w.connections(address), 0), 5, 'three connections per address over 20 addresses were 60');
    assert.match(r.attempts.at(-1)!.outcome, /not contacted: 5 new connections opened for this callout already/);
  });

  it('an exchanger published as an IPv4-mapped IPv6 address is the IPv4 server it names, for limits and reuse', async () => {
    const w = await make(mxZone({ 'mapped.test': '::ffff:127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine().verify('alice@mapped.test');
    assert.equal(r.verdict, 'deliverable');
    // Keyed as written, the mapped form got per-host limits of its own beside 127.0.0.2.
    assert.equal(r.attempts[0]!.address, '127.0.0.2');
  });

  it('IPv6 exchangers are tried', async () => {
    const w = await make(mxZone({ 'six.test': '::1' }), { '::1': usersOnly(['alice']) });
    const r = await w.engine().verify('alice@six.test');
    assert.equal(r.verdict, 'deliverable');
    assert.equal(r.attempts[0]!.address, '::1');
  });
});

describe('server quirks', () => {
  it('reconnects when the server drops the connection after RSET', async () => {
    const w = await make(mxZone({ 'ovh.test': '127.0.0.2' }), { '127.0.0.2': { ...usersOnly(['alice']), ...dropAfterRset() } });
    const r = await w.engine().verify('alice@ovh.test');
    assert.equal(r.verdict, 'deliverable');
    assert.equal(r.catchAll, 'refused');
    assert.equal(w.connections('127.0.0.2'), 2);
  });

  for (const randomProbe of [true, false]) {
    it(`a 421 at RCPT closes the exchanger for this callout: no new connection to it at once (random probe ${randomProbe ? 'on' : 'off'})`, async () => {
      const w = await make(mxZone({ 'busy.test': '127.0.0.70' }), { '127.0.0.70': { rcpt: () => '421 4.3.2 System shutting down' } });
      const results = await w.engine({ callout: { randomProbe } }).verifyMany(['alice@busy.test', 'bob@busy.test']);
      assert.equal(w.connections('127.0.0.70'), 1, 'RFC 5321 §3.8: the server is closing the channel; asking again at once only hears the 421 again');
      for (const r of results) {
        assert.equal(r.verdict, 'unknown');
        assert.equal(r.reason, 'tempfail-at-rcpt');
        assert.equal(r.reply?.code, 421);
        assert.match(r.description, /421 4\.3\.2 System shutting down/);
      }
    });
  }

  it('opens a new transaction when a server takes one recipient per transaction (452)', async () => {
    const oneRecipient = rejectSecondRcpt().rcpt!;
    const users = usersOnly(['alice']).rcpt!;
    const w = await make(mxZone({ 'outlook.test': '127.0.0.2' }), {
      '127.0.0.2': { rcpt: (arg, session) => (session.rcptInTransaction >= 2 ? oneRecipient(arg, session) : users(arg, session)) },
    });
    const [alice, bob] = await w.engine().verifyMany(['alice@outlook.test', 'bob@outlook.test']);
    assert.equal(alice!.verdict, 'deliverable');
    assert.equal(bob!.verdict, 'undeliverable');
    assert.equal(w.connections('127.0.0.2'), 1);
  });
});

describe('DNS outcomes', () => {
  it('nxdomain, null MX and no mail host are no-mail-domain', async () => {
    const w = await make({ 'nullmx.test': { MX: [{ priority: 0, exchange: '.' }] }, 'bare.test': { TXT: ['v=spf1 -all'] } }, {});
    const engine = w.engine();
    const nx = await engine.verify('a@missing.test');
    assert.equal(nx.verdict, 'no-mail-domain');
    assert.equal(nx.reason, 'nxdomain');
    const nullMx = await engine.verify('a@nullmx.test');
    assert.equal(nullMx.reason, 'null-mx');
    const bare = await engine.verify('a@bare.test');
    assert.equal(bare.reason, 'no-mail-host');
    // Each said once, as the client of a refused sender reads it.
    assert.deepEqual([nx.description, nullMx.description, bare.description], [
      'missing.test does not exist (NXDOMAIN)',
      'nullmx.test publishes a null MX: it accepts no mail (RFC 7505)',
      'bare.test has no MX record and no A or AAAA record: it accepts no mail',
    ]);
  });

  it('a domain without MX is tried at its own address (implicit MX)', async () => {
    const w = await make({ 'implicit.test': { A: ['127.0.0.2'] } }, { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine().verify('alice@implicit.test');
    assert.equal(r.verdict, 'deliverable');
  });

  it('with callout.ipv6 off, a domain whose exchanger has IPv6 addresses only is unknown, never no-mail-domain', async () => {
    const w = await make({ 'v6only.test': { MX: [{ priority: 10, exchange: 'mx.v6only.test' }] }, 'mx.v6only.test': { AAAA: ['::1'] } }, {});
    const r = await w.engine({ callout: { ipv6: false } }).verify('alice@v6only.test');
    assert.equal(r.verdict, 'unknown', r.description);
    assert.equal(r.reason, 'unreachable');
    assert.match(r.description, /mx\.v6only\.test has IPv6 addresses only, and IPv6 is off \(callout\.ipv6\)/);
  });

  it('SERVFAIL and timeouts are unknown dns-tempfail, never undeliverable', async () => {
    const w = await make({ 'broken.test': { servfail: true }, 'silent.test': { drop: true } }, {});
    const engine = w.engine();
    for (const address of ['a@broken.test', 'a@silent.test']) {
      const r = await engine.verify(address);
      assert.equal(r.verdict, 'unknown', address);
      assert.equal(r.reason, 'dns-tempfail', address);
    }
  });

  it('callout.timeouts.overall bounds the MX and address lookups too: a silent name server is unknown dns-tempfail at the deadline', async () => {
    const w = await make({
      'silent.test': { drop: true },
      'mxsilent.test': { MX: [{ priority: 10, exchange: 'mx.mxsilent.test' }] },
      'mx.mxsilent.test': { drop: true },
    }, {});
    // A resolver that would wait 4 s (c-ares alone bounds it): only the deadline can end it sooner.
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({ dns: { timeout: '4s' }, callout: { timeouts: { overall: '300ms' } } }, undefined, undefined, timers);
    // The MX lookup itself, then the address lookup of an exchanger whose MX answered.
    for (const [address, lastQuery] of [['a@silent.test', 'silent.test'], ['a@mxsilent.test', 'mx.mxsilent.test']] as const) {
      const started = timers.now();
      const answer = watch(engine.verify(address));
      // The query the name server never answers has arrived, and the deadline's timer is set.
      await turnsUntil(() => w.dns.queries.some((q) => q.name === lastQuery) && timers.waiting === 1, `${address}: the lookup of ${lastQuery}`);
      await timers.advance(299);
      assert.equal(answer(), undefined, `${address}: answered before the deadline`);
      await timers.advance(1);
      const r = answer();
      assert.ok(r, `${address}: no answer at the deadline`);
      assert.deepEqual([r.verdict, r.reason, r.durationMs], ['unknown', 'dns-tempfail', 300], `${address}: ${r.description}`);
      assert.match(r.description, /^DNS lookup for \S+ failed temporarily: no answer within the overall deadline of 300 ms \(callout\.timeouts\.overall\)/);
      assert.equal(timers.now() - started, 300);
    }
  });

  it('the time the lookups took is spent from the overall deadline, not added to it', async () => {
    const w = await make({
      'late.test': { MX: [{ priority: 10, exchange: 'mx.late.test' }], delayMs: 3000 },
      'mx.late.test': { A: ['127.0.0.71'] },
    }, { '127.0.0.71': silentGreeting() });
    const engine = w.engine({ dns: { timeout: '4s' }, callout: { timeouts: { greeting: '30s', overall: '3500ms' } } });
    const started = Date.now();
    const r = await engine.verify('alice@late.test');
    const elapsed = Date.now() - started;
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'timeout'], r.description);
    // 3.5 s in all; a fresh 3.5 s for the dialogue after the 3 s lookup ended it after 6.5 s.
    // The bound lies half-way, 1.5 s from each, for a loaded machine.
    assert.ok(elapsed < 5000, `ended after ${elapsed} ms`);
  });

  it('a deadline spent before any exchanger was asked (waiting on a dead process\'s lock) is unknown timeout, and nothing is remembered of the exchangers', async () => {
    const w = await make(mxZone({ 'held.test': '127.0.0.74' }), { '127.0.0.74': usersOnly(['alice']) });
    const memory = new MemoryStore({ clock: w.clock });
    // A daemon that died while probing: its lock is waited for until the wait gives up, at
    // overall + 5 s (the lifetime of a lock this engine takes).
    assert.ok(await memory.setIfAbsent('lock:alice@held.test', '0', 60_000), 'await memory.setIfAbsent(\'lock:alice@held.test\', \'0\', 60_000)');
    let refusals = 0;
    const store = onStoreWrite(memory, async (key, write) => {
      const written = await write();
      if (key === 'lock:alice@held.test' && written === false) refusals++;
      return written;
    });
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '2s' } } }, store, undefined, timers);
    const answer = watch(engine.verify('alice@held.test'));
    // The lookups are done (their deadline's timer cleared), the lock refused, the first poll's timer set.
    await turnsUntil(() => refusals === 1 && timers.waiting === 1, 'the wait for the lock');
    await timers.advance(6_999);
    assert.equal(answer(), undefined, 'gave up before overall + 5 s');
    await timers.advance(1);
    const r = answer();
    assert.ok(r, 'still waiting at overall + 5 s');
    assert.deepEqual([r.verdict, r.reason, r.durationMs], ['unknown', 'timeout', 7_000], r.description);
    assert.match(r.description, /overall deadline of 2000 ms \(callout\.timeouts\.overall\) was spent before any exchanger was asked/);
    assert.equal(w.connections('127.0.0.74'), 0);
    await store.delete('lock:alice@held.test');
    const again = await engine.verify('alice@held.test');
    assert.deepEqual([again.verdict, again.source], ['deliverable', 'probe'], 'the domain is not remembered as timing out');
  });

  it('a dead process\'s lock that cannot be deleted when the wait gives up is logged at warn; the answer stays unknown timeout', async () => {
    const w = await make(mxZone({ 'held.test': '127.0.0.74' }), { '127.0.0.74': usersOnly(['alice', 'bob']) });
    const memory = storeFailingDeletes(w.clock, (_key, expected) => expected === '0');
    for (const address of ['alice@held.test', 'bob@held.test']) assert.ok(await memory.setIfAbsent(`lock:${address}`, '0', 60_000), 'await memory.setIfAbsent(`lock:${address}`, \'0\', 60_000)');
    let refusals = 0;
    const store = onStoreWrite(memory, async (key, write) => {
      const written = await write();
      if (key.startsWith('lock:') && written === false) refusals++;
      return written;
    });
    const { lines, log } = warnLog();
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '2s' } } }, store, log, timers);
    const answers = watch(engine.verifyMany(['alice@held.test', 'bob@held.test']));
    await turnsUntil(() => refusals === 2 && timers.waiting === 1, 'the wait for the locks');
    await timers.advance(7_000);
    const rs = answers();
    assert.ok(rs, 'still waiting at overall + 5 s');
    assert.deepEqual(rs.map((r) => [r.address, r.verdict, r.reason]), [['alice@held.test', 'unknown', 'timeout'], ['bob@held.test', 'unknown', 'timeout']]);
    // One line a minute per message and error: the second address's failure counts as a repeat.
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.address, l.error]), [[40, 'probe lock not deleted', 'alice@held.test', 'STORE_UNAVAILABLE: deleteIf failed: connection lost']]);
    assert.equal(w.connections('127.0.0.74'), 0);
  });

  it('a deadline the lookups nearly spent cuts the greeting short: unknown timeout, and the domain is not remembered as useless (a greeting timing out in its own time still marks it)', async () => {
    // The MX answers come 2.2 s and 1.2 s late. The server accepts the connection and greets after 3 s.
    const zone = mxZone({ 'late.test': '127.0.0.77', 'later.test': '127.0.0.78' });
    zone['late.test']!.delayMs = 2200;
    zone['later.test']!.delayMs = 1200;
    const greetsLate = { ...usersOnly(['alice']), greeting: () => ({ delayMs: 3000, reply: '220 mx.callout.test ESMTP' }) };
    const w = await make(zone, { '127.0.0.77': greetsLate, '127.0.0.78': greetsLate });
    const cutStore = new MemoryStore({ clock: w.clock });
    const ownStore = new MemoryStore({ clock: w.clock });
    // The world's resolver gives up after 2 s, before the 2.2 s answer (dns-tempfail, not
    // timeout). 4 s: only the overall deadline can end these lookups.
    const cut = w.engine({ dns: { timeout: '4s' }, callout: { randomProbe: false, timeouts: { greeting: '2s', overall: '3s' } } }, cutStore);
    const own = w.engine({ dns: { timeout: '4s' }, callout: { randomProbe: false, timeouts: { greeting: '200ms', overall: '2500ms' } } }, ownStore);
    const uselessOf = async (store: Store, domain: string) => (await new VerificationCache(store, w.config().cache, w.clock).getDomain(domain)).useless;
    // About 800 ms of the 3 s are left for the greeting, whose own timeout is 2 s (less than
    // half; a loaded machine may take 800 ms more before it connects); 1.3 s of the 2.5 s for one
    // whose own timeout is 200 ms.
    const [r, timedOut] = await Promise.all([cut.verify('alice@late.test'), own.verify('alice@later.test')]);
    assert.deepEqual([r.verdict, r.reason, w.connections('127.0.0.77')], ['unknown', 'timeout', 1], r.description);
    assert.match(r.description, /timed out at greeting after \d+ ms, when the overall deadline of 3000 ms \(callout\.timeouts\.overall\) ran out/);
    assert.equal(await uselessOf(cutStore, 'late.test'), undefined, 'the exchanger had no chance to greet: nothing is remembered of the domain');
    assert.deepEqual([timedOut.verdict, timedOut.reason], ['unknown', 'timeout'], timedOut.description);
    assert.match(timedOut.description, /timed out at greeting after 200 ms$/);
    assert.equal((await uselessOf(ownStore, 'later.test'))?.reason, 'timeout', 'a greeting that timed out in its own time marks the domain as before');
  });

  it('a greeting the lookups cut short but left half its own timeout or more marks the domain useless: slow DNS every time does not shield a dead exchanger', async () => {
    // The MX answer comes 1.2 s late; about 1.8 s of the 3 s are left for a greeting whose own
    // timeout is 2 s (a loaded machine may take 800 ms more before it connects). The server
    // greets after 3 s.
    const zone = mxZone({ 'slowdns.test': '127.0.0.81' });
    zone['slowdns.test']!.delayMs = 1200;
    const w = await make(zone, { '127.0.0.81': { ...usersOnly(['alice']), greeting: () => ({ delayMs: 3000, reply: '220 mx.callout.test ESMTP' }) } });
    const store = new MemoryStore({ clock: w.clock });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { greeting: '2s', overall: '3s' } } }, store);
    const r = await engine.verify('alice@slowdns.test');
    assert.deepEqual([r.verdict, r.reason, w.connections('127.0.0.81')], ['unknown', 'timeout', 1], r.description);
    assert.match(r.description, /timed out at greeting after \d+ ms, when the overall deadline of 3000 ms \(callout\.timeouts\.overall\) ran out/);
    const facts = await new VerificationCache(store, w.config().cache, w.clock).getDomain('slowdns.test');
    assert.equal(facts.useless?.reason, 'timeout', 'the exchanger had most of its greeting timeout and did not greet');
  });

  it('a dialogue that runs into the overall deadline itself (a tarpit) still marks the domain useless', async () => {
    const w = await make(mxZone({ 'tarpit.test': '127.0.0.79' }), { '127.0.0.79': silentGreeting() });
    const store = new MemoryStore({ clock: w.clock });
    // The greeting's timeout is over twice the deadline: the exchanger gets less than half of it,
    // and only the lookups' small share of the deadline tells it from a greeting cut short by
    // slow DNS. 1.5 s: lookups that took the whole deadline on a loaded machine asked no exchanger.
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { greeting: '5s', overall: '1500ms' } } }, store);
    const r = await engine.verify('alice@tarpit.test');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'timeout'], r.description);
    assert.match(r.description, /when the overall deadline of 1500 ms \(callout\.timeouts\.overall\) ran out/);
    const facts = await new VerificationCache(store, w.config().cache, w.clock).getDomain('tarpit.test');
    assert.equal(facts.useless?.reason, 'timeout', 'the exchanger had the whole deadline, the lookups took next to none of it');
  });

  it('a store that grants no per-host slot before the overall deadline leaves no useless record: no exchanger was asked', async (t) => {
    const w = await make(mxZone({ 'stalled.test': '127.0.0.80' }), { '127.0.0.80': usersOnly(['alice']) });
    // A shared store (another worker holding SQLite's write lock) whose lease reads come late.
    const memory = new MemoryStore({ clock: w.clock });
    let stalled = 0;
    let answerLate!: () => void;
    const late = new Promise<void>((resolve) => (answerLate = resolve));
    // Else the engine's lease request, and the world's idle() with it, would wait for ever.
    t.after(() => answerLate());
    const store: Store = Object.assign(Object.create(memory) as MemoryStore, {
      kind: 'sqlite' as const,
      get: async (key: string) => {
        if (key.startsWith('slots:')) {
          stalled++;
          await late;
        }
        return memory.get(key);
      },
    });
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '1500ms' } } }, store, undefined, timers);
    const answer = watch(engine.verify('alice@stalled.test'));
    await turnsUntil(() => stalled === 1 && timers.waiting === 1, 'the read of the per-host leases');
    await timers.advance(1_499);
    assert.equal(answer(), undefined, 'gave up on the slot before the deadline');
    await timers.advance(1);
    const r = answer();
    assert.ok(r, 'still waiting for the slot at the deadline');
    assert.deepEqual([r.verdict, r.reason, w.connections('127.0.0.80')], ['unknown', 'timeout', 0], r.description);
    assert.equal((await new VerificationCache(memory, w.config().cache, w.clock).getDomain('stalled.test')).useless, undefined);
  });

  it('a wall clock stepped an hour back while waiting on another process\'s lock does not stretch the wait by the step', async () => {
    const w = await make(mxZone({ 'held.test': '127.0.0.74' }), { '127.0.0.74': usersOnly(['alice']) });
    const memory = new MemoryStore({ clock: w.clock });
    assert.ok(await memory.setIfAbsent('lock:alice@held.test', '0', 60_000), 'await memory.setIfAbsent(\'lock:alice@held.test\', \'0\', 60_000)');
    // The step comes at the second refusal of the lock, the wait's first poll: its end
    // (overall + 5 s) was set at the first, before the step.
    let refusals = 0;
    const store = onStoreWrite(memory, async (key, write) => {
      const written = await write();
      if (key === 'lock:alice@held.test' && written === false && ++refusals === 2) w.clock.advance(-HOUR);
      return written;
    });
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '2s' } } }, store, undefined, timers);
    const answer = watch(engine.verify('alice@held.test'));
    await turnsUntil(() => refusals === 1 && timers.waiting === 1, 'the wait for the lock');
    await timers.advance(7_000);
    const r = answer();
    assert.ok(r, 'the lock\'s lifetime, not an hour more');
    assert.deepEqual([r.verdict, r.reason, r.durationMs], ['unknown', 'timeout', 7_000], r.description);
    assert.ok(refusals >= 2, 'the clock was stepped while waiting');
  });

  it('address literals are probed directly', async () => {
    const w = await make({}, { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine().verify('alice@[127.0.0.2]');
    assert.equal(r.verdict, 'deliverable');
    const refused = await w.engine().verify('nobody@[127.0.0.2]');
    assert.equal(refused.verdict, 'undeliverable');
    assert.match(refused.description, /^\[127\.0\.0\.2\] answered RCPT/, 'the host given by its address is named once');
  });
});

describe('syntax', () => {
  it('invalid addresses name the rule broken', async () => {
    const w = await make({}, {});
    const r = await w.engine().verify('a..b@real.test');
    assert.equal(r.verdict, 'invalid');
    assert.match(r.description, /double dot in local part at 2/);
  });
});

describe('cache', () => {
  it('serves a second answer from the address cache, and expires it', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const engine = w.engine();
    await engine.verify('nobody@real.test');
    const connections = w.connections('127.0.0.2');
    const cached = await engine.verify('nobody@real.test');
    assert.equal(cached.source, 'address-cache');
    assert.equal(cached.verdict, 'undeliverable');
    assert.equal(w.connections('127.0.0.2'), connections);
    w.clock.advance(2 * HOUR + 1);
    const fresh = await engine.verify('nobody@real.test');
    assert.equal(fresh.source, 'probe', 'negative answers expire after 2 h');
  });

  it('past the refresh age it serves stale and refreshes once in the background; a failed refresh keeps the good answer', async () => {
    let down = false;
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), {
      '127.0.0.2': { ...usersOnly(['alice']), greeting: () => (down ? '421 4.3.2 Going down' : '220 mx ESMTP') },
    });
    const engine = w.engine();
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    w.clock.advance(13 * HOUR);
    const connections = w.connections('127.0.0.2');
    down = true;
    const [a, b] = await Promise.all([engine.verify('alice@real.test'), engine.verify('alice@real.test')]);
    assert.equal(a!.stale, true);
    assert.equal(a!.verdict, 'deliverable');
    assert.equal(b!.verdict, 'deliverable');
    await engine.idle();
    assert.equal(w.connections('127.0.0.2'), connections + 1, 'one refresh probe');
    const after = await engine.verify('alice@real.test');
    assert.equal(after.verdict, 'deliverable', 'the failed refresh did not overwrite it');
  });

  it('a refresh that fails temporarily is not tried again at every verification, only after cache.tempfail', async () => {
    let down = false;
    const w = await make(mxZone({ 'real.test': '127.0.0.71' }), {
      '127.0.0.71': { rcpt: (arg) => (/alice/.test(arg) ? (down ? '451 4.3.0 Temporary failure' : '250 2.1.5 Ok') : '550 5.1.1 Unknown') },
    });
    const engine = w.engine();
    const asked = () => w.commands('127.0.0.71').filter((c) => c === 'RCPT TO:<alice@real.test>').length;
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    w.clock.advance(13 * HOUR);
    down = true;
    assert.equal((await engine.verify('alice@real.test')).stale, true);
    await engine.idle();
    assert.equal(asked(), 2, 'one refresh, answered 451');
    for (let i = 0; i < 5; i++) {
      w.clock.advance(10_000);
      assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
      await engine.idle();
    }
    assert.equal(asked(), 2, 'no refresh again within cache.tempfail of the failed one');
    w.clock.advance(10_000);
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    await engine.idle();
    assert.equal(asked(), 3, 'refreshed again once cache.tempfail has passed');
  });

  it('a background refresh that fails (a store outage) is logged at warn, once a minute however often it fails', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    let down = false;
    class Outage extends MemoryStore {
      override increment(key: string, by: number, ttlMs: number): Promise<number> {
        return down ? Promise.reject(new StoreError('increment failed: database or disk is full')) : super.increment(key, by, ttlMs);
      }
    }
    const { lines, log } = warnLog();
    const engine = w.engine({}, new Outage({ clock: w.clock }), log);
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    w.clock.advance(13 * HOUR);
    down = true;
    const refreshFails = async (): Promise<void> => {
      const r = await engine.verify('alice@real.test');
      assert.deepEqual([r.verdict, r.stale], ['deliverable', true]);
      await engine.idle();
    };
    await refreshFails();
    await refreshFails();
    w.clock.advance(61_000);
    await refreshFails();
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg, l.address, l.error, l.repeatsNotLogged]),
      [
        [40, 'background refresh of a stale answer failed', 'alice@real.test', 'STORE_UNAVAILABLE: increment failed: database or disk is full', undefined],
        [40, 'background refresh of a stale answer failed', 'alice@real.test', 'STORE_UNAVAILABLE: increment failed: database or disk is full', 1],
      ],
    );
  });

  it('a store that fails after one address of a batch was locked lets that lock go: a retry does not wait out its own lock', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob']) });
    let down = true;
    class LockFails extends MemoryStore {
      override setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
        return down && key === 'lock:bob@real.test' ? Promise.reject(new StoreError('setIfAbsent failed: connection lost')) : super.setIfAbsent(key, value, ttlMs);
      }
    }
    const store = new LockFails({ clock: w.clock });
    // Time for the lookups and the dialogue on a loaded machine; a lock left behind would still
    // be waited for until it lapses (overall + 5 s) and end the retry as unknown timeout.
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '2s' } } }, store);
    await assert.rejects(engine.verifyMany(['alice@real.test', 'bob@real.test']), StoreError);
    assert.equal(await store.get('lock:alice@real.test'), undefined, 'the lock taken before the failure is let go');
    down = false;
    const again = await engine.verify('alice@real.test');
    assert.deepEqual([again.verdict, again.source], ['deliverable', 'probe'], again.description);
  });

  it('a store read that fails just after a probe lock was taken lets that lock go: a retry does not wait out its own lock', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    /** Fails the read after the first take of alice's probe lock (the cache read again under the lock). */
    class ReadFailsAfterLock extends MemoryStore {
      armed = true;
      failNext = false;
      override async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
        const taken = await super.setIfAbsent(key, value, ttlMs);
        if (taken && key === 'lock:alice@real.test' && this.armed) [this.armed, this.failNext] = [false, true];
        return taken;
      }
      override get(key: string): ReturnType<MemoryStore['get']> {
        if (!this.failNext) return super.get(key);
        this.failNext = false;
        return Promise.reject(new StoreError('get failed: connection lost'));
      }
    }
    const store = new ReadFailsAfterLock({ clock: w.clock });
    // As above: a lock left behind would be waited for until it lapsed, the retry unknown timeout.
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '2s' } } }, store);
    await assert.rejects(engine.verify('alice@real.test'), StoreError);
    assert.equal(await store.get('lock:alice@real.test'), undefined, 'the lock is let go');
    const again = await engine.verify('alice@real.test');
    assert.deepEqual([again.verdict, again.source], ['deliverable', 'probe'], again.description);
  });

  it('a probe lock that cannot be let go after the probe is logged at warn; the verdict stands', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const { lines, log } = warnLog();
    const store = storeFailingDeletes(w.clock, (key) => key.startsWith('lock:'));
    const r = await w.engine({ callout: { randomProbe: false } }, store, log).verify('alice@real.test');
    assert.deepEqual([r.verdict, r.source], ['deliverable', 'probe'], r.description);
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.address, l.error]), [[40, 'probe lock not released', 'alice@real.test', 'STORE_UNAVAILABLE: deleteIf failed: connection lost']]);
    assert.notEqual(await store.get('addr:alice@real.test'), undefined, 'the verdict is saved');
  });

  it('a catch-all lock that cannot be let go is logged at warn; the verdict stands', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const { lines, log } = warnLog();
    const r = await w.engine({}, storeFailingDeletes(w.clock, (key) => key.startsWith('lock-catchall:')), log).verify('alice@real.test');
    assert.equal(r.verdict, 'deliverable');
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.domain, l.error]), [[40, 'catch-all lock not released', 'real.test', 'STORE_UNAVAILABLE: deleteIf failed: connection lost']]);
  });

  it('verifyNow answers what the address and domain records know at once, and leaves the rest to verify()', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2', 'all.test': '127.0.0.3' }), { '127.0.0.2': usersOnly(['alice']), '127.0.0.3': acceptAll() });
    const engine = w.engine();
    const alice = mailboxOf('alice@real.test');
    assert.equal(engine.verifyNow(alice), undefined, 'nothing known yet: only verify() can tell');
    await engine.verify(alice);
    const now = engine.verifyNow(alice);
    assert.equal(now?.source, 'address-cache');
    assert.equal(now?.verdict, 'deliverable');
    await engine.verify('someone@all.test');
    const domain = engine.verifyNow(mailboxOf('another@all.test'));
    assert.deepEqual([domain?.source, domain?.verdict, domain?.reason], ['domain-cache', 'risky', 'catch-all']);
    assert.equal(engine.stats.verifications, 4);
    // Past its refresh age the answer is served stale, and one probe refreshes it.
    w.clock.advance(13 * HOUR);
    const connections = w.connections('127.0.0.2');
    assert.equal(engine.verifyNow(alice)?.stale, true);
    await engine.idle();
    assert.equal(w.connections('127.0.0.2'), connections + 1);
  });

  it('verifyNow leaves everything to verify() when the store cannot tell at once', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const memory = new MemoryStore({ clock: w.clock });
    const remote: Store = Object.assign(Object.create(memory) as Store, { peek: () => ASK_LATER });
    const engine = w.engine({}, remote);
    await engine.verify('alice@real.test');
    assert.equal((await engine.verify('alice@real.test')).source, 'address-cache');
    assert.equal(engine.verifyNow(mailboxOf('alice@real.test')), undefined);
  });

  it('concurrent verifications of one address share one callout', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const engine = w.engine();
    const results = await Promise.all([1, 2, 3, 4].map(() => engine.verify('alice@real.test')));
    assert.ok(results.every((r) => r.verdict === 'deliverable'), 'results.every((r) => r.verdict === \'deliverable\')');
    assert.equal(w.connections('127.0.0.2'), 1);
  });

  it('a domain\'s addresses beyond limits.addressesPerConnection go in further batches, each address asked once', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob']) });
    const results = await w.engine({ limits: { addressesPerConnection: 2 } }).verifyMany(['alice@real.test', 'bob@real.test', 'carol@real.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'deliverable', 'undeliverable']);
    for (const local of ['alice', 'bob', 'carol']) assert.equal(w.commands('127.0.0.2').filter((c) => c === `RCPT TO:<${local}@real.test>`).length, 1, local);
  });

  it('an address given twice to verifyMany is asked once, and both get its answer', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const results = await w.engine().verifyMany(['alice@real.test', 'alice@real.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'deliverable']);
    assert.equal(w.commands('127.0.0.2').filter((c) => c === 'RCPT TO:<alice@real.test>').length, 1);
  });

  it('a probe lock taken just after another engine answered and let go reads that answer instead of probing again', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    /** A shared store where the other engine finishes its whole callout just before this engine's lock lands. */
    class Interleaving extends MemoryStore {
      beforeLock: (() => Promise<unknown>) | undefined;
      override async setIfAbsent(key: string, value: string, ttlMs: number): Promise<boolean> {
        const other = key.includes('lock:') ? this.beforeLock : undefined;
        this.beforeLock = undefined;
        await other?.();
        return super.setIfAbsent(key, value, ttlMs);
      }
    }
    const store = new Interleaving({ clock: w.clock });
    // No catch-all question, whose turn would keep the other engine waiting until this one probes.
    const first = w.engine({ callout: { randomProbe: false } }, store);
    const second = w.engine({ callout: { randomProbe: false } }, store);
    store.beforeLock = async () => assert.equal((await first.verify('alice@real.test')).source, 'probe');
    const late = await second.verify('alice@real.test');
    assert.equal(late.verdict, 'deliverable');
    assert.equal(late.source, 'address-cache');
    assert.equal(w.connections('127.0.0.2'), 1, 'one callout for both engines');
  });

  it('verifyMany starts its other callouts at once while one of its addresses is already being probed', async () => {
    const w = await make(mxZone({ 'hold.test': '127.0.0.61', 'real.test': '127.0.0.2' }), {
      '127.0.0.61': { rcpt: () => ({ reply: '250 2.1.5 Ok', delayMs: 60_000 }) },
      '127.0.0.2': usersOnly(['alice']),
    });
    const timeouts = { connect: '2s', greeting: '2s', command: '2s', rcpt: '3s', tls: '2s', overall: '10s' };
    const engine = w.engine({ callout: { randomProbe: false, timeouts } });
    let heldEnded = false;
    const held = engine.verify('alice@hold.test').finally(() => (heldEnded = true));
    assert.ok(await until(() => w.connections('127.0.0.61') === 1), 'the first callout is under way');
    const many = engine.verifyMany(['alice@hold.test', 'alice@real.test']);
    assert.ok(await until(() => w.connections('127.0.0.2') === 1), 'real.test is probed');
    assert.equal(heldEnded, false, 'real.test was probed without waiting for the callout to hold.test');
    const [first, second] = await many;
    assert.equal(first!.reason, 'timeout');
    assert.equal(second!.verdict, 'deliverable');
    assert.equal((await held).reason, 'timeout');
    assert.equal(w.connections('127.0.0.61'), 1, 'hold.test was asked once for both');
  });

  it('several addresses of one domain go over one connection', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'carol']) });
    const results = await w.engine().verifyMany(['alice@real.test', 'bob@real.test', 'carol@real.test']);
    assert.deepEqual(results.map((r) => r.verdict), ['deliverable', 'undeliverable', 'deliverable']);
    assert.equal(w.connections('127.0.0.2'), 1);
  });

  it('the SQLite store keeps answers across restarts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'callout-engine-'));
    try {
      const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
      const path = join(dir, 'cache.sqlite');
      const first = await SqliteStore.open(path, { clock: w.clock });
      await w.engine({}, first).verify('alice@real.test');
      await first.close();
      const second = await SqliteStore.open(path, { clock: w.clock });
      const r = await w.engine({}, second).verify('alice@real.test');
      assert.equal(r.source, 'address-cache');
      assert.equal(r.verdict, 'deliverable');
      await second.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('politeness', () => {
  it('refuses loopback and private targets unless allowed, without connecting', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const r = await w.engine({ callout: { allowTargets: [] } }).verify('alice@real.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'target-refused');
    assert.equal(w.connections('127.0.0.2'), 0);
  });

  it('refuses a loopback server however its address is written: IPv4-mapped, NAT64, 6to4, in an MX record or a literal', async () => {
    const zone = mxZone({ 'mapped.test': '::ffff:127.0.0.2', 'nat64.test': '64:ff9b::7f00:2', '6to4.test': '2002:7f00:2::1', 'unspec.test': '0.0.0.0', 'cgnat.test': '100.64.0.1' });
    const w = await make(zone, { '127.0.0.2': usersOnly(['alice']) });
    const engine = w.engine({ callout: { allowTargets: [] } });
    for (const address of ['alice@mapped.test', 'alice@nat64.test', 'alice@6to4.test', 'alice@unspec.test', 'alice@cgnat.test', 'alice@[IPv6:::ffff:127.0.0.2]']) {
      const r = await engine.verify(address);
      assert.equal(r.reason, 'target-refused', `${address}: ${r.description}`);
    }
    assert.equal(w.connections('127.0.0.2'), 0);
  });

  it('limits callouts per domain per minute', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob']) });
    const engine = w.engine({ limits: { perDomainPerMinute: 1 } });
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    const limited = await engine.verify('bob@real.test');
    assert.equal(limited.verdict, 'unknown');
    assert.equal(limited.reason, 'rate-limited');
    w.clock.advance(30_000);
    assert.equal((await engine.verify('bob@real.test')).reason, 'rate-limited', 'half a minute later, still');
    w.clock.advance(31_000);
    assert.equal((await engine.verify('bob@real.test')).verdict, 'deliverable');
  });

  it('limits new connections per exchanger address per minute, over every domain it serves; a reused connection does not count', async () => {
    const w = await make(mxZone({ 'one.test': '127.0.0.2', 'two.test': '127.0.0.2', 'three.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    const engine = w.engine({ limits: { perHostConnectionsPerMinute: 1 }, callout: { connectionCache: { enabled: false } } });
    assert.equal((await engine.verify('alice@one.test')).verdict, 'deliverable');
    const limited = await engine.verify('alice@two.test');
    assert.deepEqual([limited.verdict, limited.reason], ['unknown', 'rate-limited']);
    assert.match(limited.description, /more than 1 new connections to mx1\.two\.test \[127\.0\.0\.2\] in the last minute/);
    assert.equal(w.connections('127.0.0.2'), 1);
    w.clock.advance(61_000);
    assert.equal((await engine.verify('alice@two.test')).verdict, 'deliverable');
    // With reuse, the next domain's callout takes the parked connection: no new one, no limit.
    const reusing = w.engine({ limits: { perHostConnectionsPerMinute: 1 } });
    assert.equal((await reusing.verify('alice@one.test')).verdict, 'deliverable');
    assert.equal((await reusing.verify('alice@three.test')).verdict, 'deliverable');
  });

  it('shares the per-domain budget with every engine on the same store, and never overshoots it at once', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice', 'bob', 'carol', 'dave']) });
    const store = new MemoryStore({ clock: w.clock });
    const first = w.engine({ limits: { perDomainPerMinute: 2 } }, store);
    const second = w.engine({ limits: { perDomainPerMinute: 2 } }, store);
    assert.equal((await first.verify('alice@real.test')).verdict, 'deliverable');
    // Three at once on the other engine: one slot is left, so two are refused.
    const results = await Promise.all(['bob', 'carol', 'dave'].map((user) => second.verify(`${user}@real.test`)));
    assert.deepEqual(results.map((r) => r.reason).sort(), ['accepted', 'rate-limited', 'rate-limited']);
  });

  it('limits callouts in flight; over the limit the answer is rate-limited at once', async () => {
    // The slow greeting holds the one slot for seconds, so that the second callout comes while
    // it is held however slow the machine.
    const w = await make(mxZone({ 'slow.test': '127.0.0.2', 'real.test': '127.0.0.3' }), {
      '127.0.0.2': { greeting: () => ({ reply: '220 slow', delayMs: 2000 }) },
      '127.0.0.3': usersOnly(['alice']),
    });
    const engine = w.engine({ limits: { concurrency: 1 } });
    const slow = engine.verify('x@slow.test');
    // Its connection is open: the slow callout holds its slot.
    assert.ok(await until(() => w.connections('127.0.0.2') === 1), 'the slow callout connected');
    const limited = await engine.verify('alice@real.test');
    assert.equal(limited.reason, 'rate-limited');
    await slow;
  });

  it('refuses to start without a fully qualified HELO name', async () => {
    const w = await make({}, {});
    assert.throws(() => w.engine({ callout: { helo: undefined } }), /callout\.helo/);
  });
});

describe('TLS', () => {
  it('uses STARTTLS when offered (opportunistic)', async () => {
    const { readFileSync } = await import('node:fs');
    const fixtures = new URL('../support/fixtures/', import.meta.url);
    const key = readFileSync(new URL('test-key.pem', fixtures), 'utf8');
    const cert = readFileSync(new URL('test-cert.pem', fixtures), 'utf8');
    const { startSmtpServer } = await import('../support/smtp-server.js');
    const server = await startSmtpServer({ host: '127.0.0.4', script: usersOnly(['alice']), tls: { key, cert } });
    const w = await make(mxZone({ 'tls.test': '127.0.0.4' }), {});
    try {
      const r = await w.engine({ callout: { port: server.port } }).verify('alice@tls.test');
      assert.equal(r.verdict, 'deliverable');
      assert.equal(r.attempts[0]!.tls, true);
    } finally {
      await server.close();
    }
  });

  it('a failed opportunistic TLS handshake is retried in clear at the same address (Postfix RETRY_AS_PLAINTEXT, Exim tls_tempfail_tryclear)', async () => {
    const brokenTls = {
      ...usersOnly(['alice']),
      ehlo: () => '250-mx.callout.test\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES',
      // The handshake fails: the server hangs up after its 220, as one without a shared cipher does.
      starttls: () => ({ reply: '220 2.0.0 Ready to start TLS', drop: true }),
    };
    const w = await make(mxZone({ 'oldtls.test': '127.0.0.4' }), { '127.0.0.4': brokenTls });
    const r = await w.engine().verify('alice@oldtls.test');
    assert.equal(r.verdict, 'deliverable', r.description);
    assert.deepEqual(r.attempts.map((a) => [a.address, a.tls]), [['127.0.0.4', false], ['127.0.0.4', false]]);
    assert.match(r.attempts[0]!.outcome, /TLS/);
    assert.ok(!r.attempts[1]!.transcript.some((e) => e.dir === 'sent' && e.line === 'STARTTLS'), 'no STARTTLS on the retry');
    const required = await w.engine({ callout: { tls: 'required' } }).verify('alice@oldtls.test');
    assert.deepEqual([required.verdict, required.reason], ['unknown', 'tls-unavailable'], 'never in clear when TLS is required');
  });
});

describe('stage timeouts of the dialogue', () => {
  // Only the timer of the stage under test is short; every other wait is far longer. Short, but
  // not so short that a loaded machine misses it on the way (the EHLO before a silent MAIL).
  const SHORT = 500;
  const timeouts = (stage: 'command' | 'rcpt') => ({ connect: '5s', greeting: '5s', command: '5s', rcpt: '5s', tls: '5s', overall: '20s', [stage]: `${SHORT}ms` });

  for (const [step, stage] of [['ehlo', 'command'], ['mail', 'command']] as const) {
    it(`a server silent after ${step.toUpperCase()} ends the callout at ${step} after callout.timeouts.${stage}: unknown timeout, connection closed`, async (t) => {
      const w = await make(mxZone({ 'stall.test': '127.0.0.56' }), { '127.0.0.56': { ...usersOnly(['alice']), [step]: () => ({ silent: true }) } });
      const { engine, sockets } = engineKeepingSockets(t, w, { callout: { timeouts: timeouts(stage) } });
      const started = Date.now();
      const r = await engine.verify('alice@stall.test');
      const elapsed = Date.now() - started;
      assert.equal(r.verdict, 'unknown');
      assert.equal(r.reason, 'timeout');
      assert.match(r.description, new RegExp(`timed out at ${step} after ${SHORT} ms`));
      assert.equal(r.attempts.length, 1);
      assert.ok(r.attempts[0]!.transcript.some((e) => e.dir === 'event' && e.line === `timeout at ${step} after ${SHORT} ms`), 'r.attempts[0]!.transcript.some((e) => e.dir === \'event\' && e.line === `timeout at ${step} after $...');
      // Well before the other timers (5 s) end anything, with room for a loaded machine.
      assert.ok(elapsed >= SHORT - 5 && elapsed < SHORT + 3000, `ended after ${elapsed} ms`);
      assert.equal(sockets.length, 1);
      assert.ok(sockets.every((s) => s.destroyed), 'the timed-out connection is closed');
      assert.equal(engine.connections.stats.parked, 0, 'and never kept for the next callout');
    });
  }

  it('a server silent after RCPT ends each attempt at rcpt after callout.timeouts.rcpt; never undeliverable; every connection closed', async (t) => {
    const w = await make(mxZone({ 'stall.test': '127.0.0.57' }), { '127.0.0.57': { rcpt: () => ({ silent: true }) } });
    const { engine, sockets } = engineKeepingSockets(t, w, { callout: { randomProbe: false, timeouts: timeouts('rcpt') } });
    const started = Date.now();
    const r = await engine.verify('alice@stall.test');
    const elapsed = Date.now() - started;
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'timeout');
    assert.match(r.description, new RegExp(`timed out at rcpt after ${SHORT} ms`));
    assert.ok(r.attempts.length >= 1, 'r.attempts.length >= 1');
    for (const attempt of r.attempts) {
      assert.match(attempt.outcome, new RegExp(`timed out at rcpt after ${SHORT} ms`));
      assert.ok(attempt.durationMs >= SHORT - 5 && attempt.durationMs < SHORT + 3000, `attempt took ${attempt.durationMs} ms`);
    }
    // Each attempt ended by its own short timer, well before the other timers (5 s) would.
    assert.ok(elapsed < r.attempts.length * SHORT + 3000, `ended after ${elapsed} ms`);
    assert.equal(sockets.length, r.attempts.length);
    assert.ok(sockets.every((s) => s.destroyed), 'every timed-out connection is closed');
    assert.equal(engine.connections.stats.parked, 0);
    const again = await engine.verify('alice@stall.test');
    assert.notEqual(again.verdict, 'undeliverable', 'nor remembered as undeliverable');
  });

  it('a tarpit at RCPT is asked once: neither it again nor a backup MX that would accept anything', async () => {
    const w = await make(mxZone({ 'two.test': ['127.0.0.68', '127.0.0.69'] }), {
      '127.0.0.68': { rcpt: () => ({ silent: true }) },
      // A backup MX accepts for the domain and queues: its 250 says nothing about the user.
      '127.0.0.69': acceptAll(),
    });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { ...timeouts('rcpt'), overall: `${4 * SHORT}ms` } } });
    const r = await engine.verify('nobody@two.test');
    assert.deepEqual(r.attempts.map((a) => a.address), ['127.0.0.68'], r.attempts.map((a) => `${a.address}: ${a.outcome}`).join('; '));
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'timeout']);
    assert.equal(w.commands('127.0.0.69').length, 0, 'the backup MX is not contacted');
    assert.equal((await engine.verify('nobody@two.test')).verdict, 'unknown', 'and nothing deliverable is cached');
  });

  it('a store that fails during the callout (disk full at a counter) is a fault for the caller, not an unknown verdict', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.2' }), { '127.0.0.2': usersOnly(['alice']) });
    class FullDisk extends MemoryStore {
      override increment(): Promise<number> {
        return Promise.reject(new StoreError('increment failed: database or disk is full'));
      }
    }
    const engine = w.engine({}, new FullDisk({ clock: w.clock }));
    await assert.rejects(engine.verify('alice@real.test'), (err: unknown) => err instanceof StoreError && /disk is full/.test(err.message));
    assert.equal(w.connections('127.0.0.2'), 0);
  });

  it('abandon() gives up the probes still running at shutdown and lets go of their locks', async () => {
    const w = await make(mxZone({ 'hold.test': '127.0.0.61' }), { '127.0.0.61': { rcpt: () => ({ reply: '250 2.1.5 Ok', delayMs: 60_000 }) } });
    const store = new MemoryStore({ clock: w.clock });
    const engine = w.engine({ callout: { randomProbe: false } }, store);
    void engine.verify('alice@hold.test');
    const lockKeys = async () => (await store.scan('', 100)).map((row) => row.key).filter((key) => key.includes('lock:'));
    await until(async () => (await lockKeys()).length > 0);
    assert.equal((await lockKeys()).length, 1, 'the probe holds its lock');
    assert.match((await lockKeys())[0]!, /lock:alice@hold\.test$/);
    assert.equal(await engine.abandon(), 1);
    assert.deepEqual(await lockKeys(), [], 'a daemon started at once probes instead of waiting out the lock');
  });

  it('abandon() logs a lock the store does not let go at warn, naming its key', async () => {
    const w = await make(mxZone({ 'hold.test': '127.0.0.61' }), { '127.0.0.61': { rcpt: () => ({ reply: '250 2.1.5 Ok', delayMs: 60_000 }) } });
    let failing = false;
    const store = storeFailingDeletes(w.clock, () => failing);
    const { lines, log } = warnLog();
    const engine = w.engine({ callout: { randomProbe: false } }, store, log);
    void engine.verify('alice@hold.test');
    await until(async () => (await store.get('lock:alice@hold.test')) !== undefined);
    failing = true;
    assert.equal(await engine.abandon(), 1);
    assert.deepEqual(lines.map((l) => [l.level, l.msg, l.key, l.error]), [[40, 'lock not released at shutdown', 'lock:alice@hold.test', 'STORE_UNAVAILABLE: deleteIf failed: connection lost']]);
  });

  it('a lock is let go once: abandon() after a finished probe, and the end of a probe abandon() let go of, ask the store nothing more', async () => {
    const w = await make(mxZone({ 'hold.test': '127.0.0.61', 'real.test': '127.0.0.2' }), {
      '127.0.0.61': { rcpt: () => ({ reply: '250 2.1.5 Ok', delayMs: 300 }) },
      '127.0.0.2': usersOnly(['alice']),
    });
    const releases: string[] = [];
    class CountedRelease extends MemoryStore {
      override deleteIf(key: string, expected: string): Promise<boolean> {
        releases.push(key);
        return super.deleteIf(key, expected);
      }
    }
    const store = new CountedRelease({ clock: w.clock });
    // Not kept by the engine once let go: abandon() at shutdown does not let it go again.
    const done = w.engine({ callout: { randomProbe: false } }, store);
    assert.equal((await done.verify('alice@real.test')).source, 'probe');
    assert.deepEqual(releases, ['lock:alice@real.test']);
    await done.abandon();
    assert.deepEqual(releases, ['lock:alice@real.test'], 'abandon() after the probe');
    // Let go by abandon(): the probe that ends later leaves the lock, another process's by then, alone.
    releases.length = 0;
    const engine = w.engine({ callout: { randomProbe: false } }, store);
    const running = engine.verify('alice@hold.test');
    await until(async () => (await store.get('lock:alice@hold.test')) !== undefined);
    await engine.abandon();
    assert.deepEqual(releases, ['lock:alice@hold.test']);
    await running;
    assert.deepEqual(releases, ['lock:alice@hold.test'], 'the end of the abandoned probe');
  });

  it('abandon() closes the idle connections with QUIT although a probe is still running', async () => {
    const w = await make(mxZone({ 'hold.test': '127.0.0.61', 'real.test': '127.0.0.2' }), {
      '127.0.0.61': { rcpt: () => ({ reply: '250 2.1.5 Ok', delayMs: 60_000 }) },
      '127.0.0.2': usersOnly(['alice']),
    });
    const engine = w.engine({ callout: { randomProbe: false } });
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    assert.equal(engine.connections.size, 1);
    void engine.verify('alice@hold.test');
    assert.ok(await until(() => w.connections('127.0.0.61') === 1), 'await until(() => w.connections(\'127.0.0.61\') === 1)');
    assert.equal(await engine.abandon(), 1);
    assert.equal(engine.connections.size, 0);
    assert.ok(await until(() => w.commands('127.0.0.2').at(-1) === 'QUIT'), 'the idle connection is left with QUIT');
  });

  it('abandon() lets go of the catch-all lock too, so that a daemon started at once does not wait for the domain', async () => {
    const w = await make(mxZone({ 'hold.test': '127.0.0.61' }), { '127.0.0.61': { rcpt: () => ({ reply: '250 2.1.5 Ok', delayMs: 60_000 }) } });
    const store = new MemoryStore({ clock: w.clock });
    const engine = w.engine({}, store);
    void engine.verify('alice@hold.test');
    const lockKeys = async () => (await store.scan('', 100)).map((row) => row.key).filter((key) => /lock(-catchall)?:/.test(key)).sort();
    await until(async () => (await lockKeys()).length >= 2);
    assert.equal((await lockKeys()).length, 2, 'the probe holds the address lock and the catch-all lock');
    assert.ok((await lockKeys()).some((key) => key.endsWith('lock-catchall:hold.test')), JSON.stringify(await lockKeys()));
    assert.equal(await engine.abandon(), 1);
    assert.deepEqual(await lockKeys(), []);
  });

  it('a pipelined RCPT that is never answered times out after callout.timeouts.rcpt too', async (t) => {
    // A stalled server answers nothing after the RCPT either: its reply to the RSET queued
    // behind must not arrive, or it would be read as the RCPT's (replies come in order).
    const stalled = { reply: '250 2.1.5 Ok', delayMs: 60_000 };
    const w = await make(mxZone({ 'stall.test': '127.0.0.58' }), { '127.0.0.58': { ...pipelining(), rcpt: () => stalled } });
    const { engine, sockets } = engineKeepingSockets(t, w, { callout: { randomProbe: false, timeouts: timeouts('rcpt') } });
    const r = await engine.verify('alice@stall.test');
    assert.equal(r.verdict, 'unknown');
    assert.equal(r.reason, 'timeout');
    assert.match(r.attempts[0]!.outcome, new RegExp(`timed out at rcpt after ${SHORT} ms`));
    assert.ok(w.commands('127.0.0.58').includes('RCPT TO:<alice@stall.test>'), 'w.commands(\'127.0.0.58\').includes(\'RCPT TO:<alice@stall.test>\')');
    assert.ok(sockets.every((s) => s.destroyed), 'sockets.every((s) => s.destroyed)');
  });

  it('callout.timeouts.command does not bound RCPT, nor callout.timeouts.rcpt MAIL: slow replies within their own timer answer', async () => {
    const slow = { delayMs: 2 * SHORT };
    const w = await make(mxZone({ 'slowrcpt.test': '127.0.0.59', 'slowmail.test': '127.0.0.60' }), {
      '127.0.0.59': { rcpt: (arg) => ({ ...slow, reply: /alice@/.test(arg) ? '250 2.1.5 Ok' : '550 5.1.1 User unknown' }) },
      '127.0.0.60': { ...usersOnly(['alice']), mail: () => ({ ...slow, reply: '250 2.1.0 Ok' }) },
    });
    const rcptSlow = await w.engine({ callout: { timeouts: timeouts('command') } }).verify('alice@slowrcpt.test');
    assert.equal(rcptSlow.verdict, 'deliverable', rcptSlow.description);
    const mailSlow = await w.engine({ callout: { timeouts: timeouts('rcpt') } }).verify('alice@slowmail.test');
    assert.equal(mailSlow.verdict, 'deliverable', mailSlow.description);
  });
});

describe('catch-all probe inconclusive', () => {
  const temporary = '450 4.3.0 Temporary lookup failure, try again later';

  it('a 4xx to the random local part leaves catch-all inconclusive: a 550 for the address still counts, and the next callout asks the address alone', async () => {
    const users = usersOnly(['alice']).rcpt!;
    const w = await make(mxZone({ 'shaky.test': '127.0.0.61' }), {
      '127.0.0.61': { rcpt: (arg, session) => (pathOf(arg).startsWith('callout-') ? temporary : users(arg, session)) },
    });
    const engine = w.engine();
    const r = await engine.verify('nobody@shaky.test');
    assert.equal(r.catchAll, 'inconclusive');
    assert.equal(r.verdict, 'undeliverable', 'a 5xx about the address is evidence whatever the catch-all state');
    assert.equal(r.reason, 'rejected-at-rcpt');
    assert.ok(w.commands('127.0.0.61').includes('RCPT TO:<nobody@shaky.test>'), 'the real address is still asked');
    assert.equal(randomProbes(w, '127.0.0.61').length, 1);
    const next = await engine.verify('bob@shaky.test');
    assert.equal(next.source, 'probe', 'an inconclusive probe answers no address of the domain');
    assert.equal(next.catchAll, 'inconclusive', next.description);
    assert.ok(w.commands('127.0.0.61').includes('RCPT TO:<bob@shaky.test>'), 'the next address is asked');
    assert.equal(randomProbes(w, '127.0.0.61').length, 1, 'but not the random local part again: its 4xx is remembered for cache.greylistRetry');
  });

  it('a 4xx to the random local part: a 250 for the address is not "deliverable", since the domain may be a catch-all', async () => {
    const users = usersOnly(['alice']).rcpt!;
    const w = await make(mxZone({ 'shaky.test': '127.0.0.62' }), {
      '127.0.0.62': { rcpt: (arg, session) => (pathOf(arg).startsWith('callout-') ? temporary : users(arg, session)) },
    });
    const r = await w.engine().verify('alice@shaky.test');
    assert.equal(r.catchAll, 'inconclusive');
    // README and verify/types: deliverable means accepted "and the domain is not a catch-all".
    assert.notEqual(r.verdict, 'deliverable', `${r.verdict} (${r.reason}) with catch-all ${r.catchAll}`);
    assert.notEqual(r.verdict, 'undeliverable');
  });

  it('a random probe that times out is inconclusive too, and the tarpit is not asked again', async () => {
    const users = usersOnly(['alice']).rcpt!;
    const w = await make(mxZone({ 'tarpit.test': '127.0.0.63' }), {
      '127.0.0.63': { rcpt: (arg, session) => (pathOf(arg).startsWith('callout-') ? { silent: true } : users(arg, session)) },
    });
    const r = await w.engine({ callout: { timeouts: { connect: '2s', greeting: '2s', command: '2s', rcpt: '300ms', tls: '2s', overall: '10s' } } }).verify('nobody@tarpit.test');
    assert.equal(r.catchAll, 'inconclusive');
    assert.match(r.attempts[0]!.outcome, /random probe: .*timed out at rcpt after 300 ms/);
    // A server that lets an RCPT time out is left for the next exchanger; there is none.
    assert.equal(r.attempts.length, 1);
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'timeout']);
  });

  it('concurrent callouts wait for one catch-all turn at most: when it ends inconclusive they ask at once, not one after another', async () => {
    const users = usersOnly(['alice', 'bob', 'carol', 'dave']).rcpt!;
    const delayMs = 600;
    const w = await make(mxZone({ 'slow.test': '127.0.0.64' }), {
      '127.0.0.64': { rcpt: (arg, session) => ({ reply: pathOf(arg).startsWith('callout-') ? temporary : (users(arg, session) as string), delayMs }) },
    });
    const engine = w.engine({ callout: { pipelining: false } });
    const results = await Promise.all(['alice', 'bob', 'carol', 'dave'].map((user) => engine.verify(`${user}@slow.test`)));
    assert.deepEqual(results.map((r) => r.catchAll), ['inconclusive', 'inconclusive', 'inconclusive', 'inconclusive']);
    // One callout is two RCPTs of 600 ms: the first asks, the others wait for it, then ask
    // together, two callouts' time; one after another it would be four. The bound of three
    // leaves a callout's time (1.2 s) to a loaded machine.
    const callout = 2 * delayMs;
    const slowest = Math.max(...results.map((r) => r.durationMs));
    assert.ok(slowest < 3 * callout, `the slowest callout took ${slowest} ms: each waited for the one before it`);
  });
});

describe('backup exchangers', () => {
  it('a backup MX that accepts anything never makes an address deliverable on the primary\'s catch-all record', async () => {
    const w = await make(mxZone({ 'backup.test': ['127.0.0.110', '127.0.0.111'] }), {
      '127.0.0.110': usersOnly(['alice']),
      '127.0.0.111': acceptAll(),
    });
    const engine = w.engine();
    assert.equal((await engine.verify('alice@backup.test')).verdict, 'deliverable', 'the primary refused the random local part: catchall refused is cached');
    await w.smtp.get('127.0.0.110')!.close();
    const forged = await engine.verify('nobody@backup.test');
    assert.equal(forged.attempts.at(-1)?.address, '127.0.0.111');
    assert.deepEqual([forged.verdict, forged.reason], ['unknown', 'catch-all-unknown']);
    assert.match(forged.description, /backup MX/);
    assert.equal((await engine.verify('nobody@backup.test')).verdict, 'unknown', 'never kept as deliverable');
  });

  it('a backup MX asked after the primary refused the random local part in the same callout is not believed either: the refusal was the primary\'s', async () => {
    const w = await make(mxZone({ 'backup4.test': ['127.0.0.117', '127.0.0.118'] }), {
      // The primary refuses the random local part, then hangs up at the address, every time.
      '127.0.0.117': { rcpt: (arg) => (/^TO:<callout-/i.test(arg) ? '550 5.1.1 User unknown' : { drop: true }) },
      '127.0.0.118': acceptAll(),
    });
    const r = await w.engine().verify('nobody@backup4.test');
    assert.equal(r.attempts.at(-1)?.address, '127.0.0.118');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'catch-all-unknown'], r.description);
  });

  it('a backup MX that refuses the random local part itself is believed', async () => {
    const w = await make(mxZone({ 'backup2.test': ['127.0.0.112', '127.0.0.113'] }), {
      '127.0.0.113': usersOnly(['alice']),
    });
    // Nothing listens on the primary: the backup is asked, runs the catch-all probe, and refuses it.
    const r = await w.engine().verify('alice@backup2.test');
    assert.deepEqual([r.verdict, r.reason, r.catchAll], ['deliverable', 'accepted', 'refused']);
  });

  it('a backup MX accepting the random local part while the primary is down does not make the domain a catch-all for a week', async () => {
    const w = await make(mxZone({ 'backup3.test': ['127.0.0.115', '127.0.0.116'] }), {
      '127.0.0.115': usersOnly(['alice']),
      '127.0.0.116': acceptAll(),
    });
    const primary = w.smtp.get('127.0.0.115')!;
    const port = primary.port;
    await primary.close();
    const engine = w.engine();
    const during = await engine.verify('nobody@backup3.test');
    assert.equal(during.attempts.at(-1)?.address, '127.0.0.116');
    assert.deepEqual([during.verdict, during.reason, during.catchAll], ['unknown', 'catch-all-unknown', 'inconclusive'], during.description);
    // The primary is back an hour later: its answers count, not the backup's.
    const { startSmtpServer } = await import('../support/smtp-server.js');
    const back = await startSmtpServer({ host: '127.0.0.115', port, script: usersOnly(['alice']) });
    try {
      w.clock.advance(HOUR);
      const after = await engine.verify('nobody@backup3.test');
      assert.deepEqual([after.verdict, after.source], ['undeliverable', 'probe']);
    } finally {
      await engine.idle();
      await back.close();
    }
  });
});

describe('cache lifetimes', () => {
  it('a positive address answer is served from the cache for cache.addressPositive, then probed again', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.64' }), { '127.0.0.64': usersOnly(['alice']) });
    // Refresh at the lifetime: no background refresh renews the record before it expires.
    const engine = w.engine({ cache: { addressPositive: '5h', addressPositiveRefresh: '5h' } });
    const asked = () => w.commands('127.0.0.64').filter((c) => c === 'RCPT TO:<alice@real.test>').length;
    const first = await engine.verify('alice@real.test');
    assert.equal(first.verdict, 'deliverable');
    assert.equal(asked(), 1);
    w.clock.advance(2 * HOUR + 1);
    const pastNegative = await engine.verify('alice@real.test');
    assert.equal(pastNegative.source, 'address-cache', 'past the negative lifetime, a positive answer is still cached');
    w.clock.advance(3 * HOUR - 2);
    const last = await engine.verify('alice@real.test');
    assert.equal(last.source, 'address-cache', 'one millisecond before its lifetime');
    assert.equal(last.verdict, 'deliverable');
    assert.equal(last.stale, false);
    assert.equal(last.checkedAt, first.checkedAt);
    await engine.idle();
    assert.equal(asked(), 1, 'no callout while the record lasts');
    w.clock.advance(1);
    const expired = await engine.verify('alice@real.test');
    assert.equal(expired.source, 'probe', 'at its lifetime the record is gone');
    assert.equal(expired.verdict, 'deliverable');
    assert.equal(asked(), 2);
  });

  it('the default positive lifetime: answered from the cache until 24 h, probed at 24 h', async () => {
    let down = false;
    const w = await make(mxZone({ 'real.test': '127.0.0.65' }), {
      '127.0.0.65': { ...usersOnly(['alice']), greeting: () => (down ? '421 4.3.2 Going down' : '220 mx ESMTP') },
    });
    const engine = w.engine();
    assert.equal((await engine.verify('alice@real.test')).verdict, 'deliverable');
    // The background refreshes past 12 h fail, so nothing renews the record.
    down = true;
    w.clock.advance(24 * HOUR - 1);
    const last = await engine.verify('alice@real.test');
    assert.equal(last.source, 'address-cache');
    assert.equal(last.verdict, 'deliverable');
    await engine.idle();
    w.clock.advance(1);
    // The refresh's 421 at the greeting is kept on the domain for cache.tempfail: not asked again at once.
    const refused = await engine.verify('alice@real.test');
    assert.deepEqual([refused.source, refused.verdict], ['domain-cache', 'unknown']);
    w.clock.advance(60_000);
    const expired = await engine.verify('alice@real.test');
    assert.equal(expired.source, 'probe');
    assert.equal(expired.verdict, 'unknown', 'a failed probe answers for itself once the record is gone');
  });

  it('a catch-all domain record answers for cache.domainPositive, then the domain is probed again', async () => {
    const w = await make(mxZone({ 'any.test': '127.0.0.66' }), { '127.0.0.66': acceptAll() });
    const engine = w.engine({ cache: { domainPositive: '2d' } });
    const first = await engine.verify('a1@any.test');
    assert.equal(first.reason, 'catch-all');
    assert.equal(randomProbes(w, '127.0.0.66').length, 1);
    w.clock.advance(2 * DAY - 1);
    const last = await engine.verify('a2@any.test');
    assert.equal(last.source, 'domain-cache', 'one millisecond before its lifetime');
    assert.equal(last.verdict, 'risky');
    assert.equal(last.catchAll, 'accepted');
    await engine.idle();
    assert.equal(randomProbes(w, '127.0.0.66').length, 1);
    w.clock.advance(1);
    const expired = await engine.verify('a3@any.test');
    assert.equal(expired.source, 'probe', 'at its lifetime the domain record is gone');
    assert.equal(expired.reason, 'catch-all');
    assert.equal(randomProbes(w, '127.0.0.66').length, 2);
  });

  it('a risky answer (accepted with the fallback sender) is kept as long as the null-sender record, not re-probed every minute', async () => {
    const w = await make(mxZone({ 'nobounce.test': '127.0.0.68' }), { '127.0.0.68': { ...usersOnly(['alice']), ...refuseNullSender() } });
    const engine = w.engine({ callout: { fallbackSender: 'verify@callout.test' } });
    const asked = () => w.commands('127.0.0.68').filter((c) => c === 'RCPT TO:<alice@nobounce.test>').length;
    assert.equal((await engine.verify('alice@nobounce.test')).reason, 'null-sender-refused');
    assert.equal(asked(), 1);
    w.clock.advance(3 * HOUR - 1);
    const last = await engine.verify('alice@nobounce.test');
    assert.equal(last.source, 'address-cache', 'past cache.tempfail, within cache.domainNegative');
    assert.equal(last.verdict, 'risky');
    await engine.idle();
    assert.equal(asked(), 1);
    w.clock.advance(1);
    const expired = await engine.verify('alice@nobounce.test');
    assert.equal(expired.source, 'probe', 'at cache.domainNegative the record is gone with the domain fact');
    assert.equal(asked(), 2);
  });

  it('a refused catch-all record spares the random probe for cache.domainPositive, then it runs again', async () => {
    const w = await make(mxZone({ 'real.test': '127.0.0.67' }), { '127.0.0.67': usersOnly(['alice']) });
    const engine = w.engine({ cache: { domainPositive: '2d' } });
    assert.equal((await engine.verify('u1@real.test')).catchAll, 'refused');
    assert.equal(randomProbes(w, '127.0.0.67').length, 1);
    w.clock.advance(2 * DAY - 1);
    const last = await engine.verify('u2@real.test');
    assert.equal(last.source, 'probe');
    assert.equal(last.catchAll, 'refused', 'known from the domain record');
    assert.equal(randomProbes(w, '127.0.0.67').length, 1, 'no random probe while the record lasts');
    w.clock.advance(1);
    const expired = await engine.verify('u3@real.test');
    assert.equal(expired.catchAll, 'refused');
    assert.equal(randomProbes(w, '127.0.0.67').length, 2, 'at its lifetime the random probe runs again');
  });
});

describe('locks shared through the store', () => {
  /** Far beyond any test: a lock written by hand or by another program, without an expiry. */
  const NO_EXPIRY = 100 * 365 * DAY;

  /** A store that counts the refusals of setIfAbsent at key and records every write there. */
  function watchedLock(memory: Store, key: string): { store: Store; refusals: () => number; writes: Array<{ value: unknown; written: unknown }> } {
    let refusals = 0;
    const writes: Array<{ value: unknown; written: unknown }> = [];
    const store = onStoreWrite(memory, async (written, write) => {
      const result = await write();
      if (written === key) {
        if (result === false) refusals++;
        writes.push({ value: (await memory.get(key))?.value, written: result });
      }
      return result;
    });
    return { store, refusals: () => refusals, writes };
  }

  it('a waiter that gives up never deletes the lock a new holder took at the last instant', async (t) => {
    const w = await make(mxZone({ 'held.test': '127.0.0.74' }), { '127.0.0.74': usersOnly(['alice']) });
    const memory = new MemoryStore({ clock: w.clock });
    const key = 'lock:alice@held.test';
    // A daemon that died while probing the address.
    assert.ok(await memory.setIfAbsent(key, 'dead', 60_000), 'await memory.setIfAbsent(key, \'dead\', 60_000)');
    const { store: waiterStore, refusals } = watchedLock(memory, key);
    // The new holder is held between its probe and the record it writes, so that its lock is live
    // while the waiter gives up.
    let letWrite!: () => void;
    const writeGate = new Promise<void>((resolve) => (letWrite = resolve));
    t.after(() => letWrite());
    const holderStore = onStoreWrite(memory, async (written, write) => {
      if (written === 'addr:alice@held.test') await writeGate;
      return write();
    });
    const timers = new ManualTimers({ wall: w.clock });
    const config = { callout: { randomProbe: false, timeouts: { overall: '2s' } } };
    const waiter = w.engine(config, waiterStore, undefined, timers);
    const holder = w.engine(config, holderStore);
    const waited = watch(waiter.verify('alice@held.test'));
    await turnsUntil(() => refusals() === 1 && timers.waiting === 1, 'the wait for the lock');
    await timers.advance(6_999);
    // At the last instant the dead lock lapses and another engine takes it and probes.
    await memory.delete(key);
    const held = holder.verify('alice@held.test');
    await turnsUntil(() => w.commands('127.0.0.74').includes('RCPT TO:<alice@held.test>'), 'the new holder\'s probe');
    const holderToken = (await memory.get(key))?.value;
    assert.ok(holderToken !== undefined && holderToken !== 'dead', 'holderToken !== undefined && holderToken !== \'dead\'');
    await timers.advance(1);
    const r = waited();
    assert.ok(r, 'still waiting at overall + 5 s');
    assert.deepEqual([r.verdict, r.reason], ['unknown', 'timeout'], r.description);
    assert.equal((await memory.get(key))?.value, holderToken, 'the new holder\'s lock stays');
    letWrite();
    assert.equal((await held).verdict, 'deliverable');
    assert.equal(await memory.get(key), undefined, 'its holder lets it go');
  });

  /** A lock written without an expiry: by hand into a Redis (SET without PX), or as far beyond any test into memory. */
  const foreignLock: Record<'memory' | 'Redis', (t: TestContext, w: World, key: string, value: string) => Promise<Store>> = {
    async memory(_t, w, key, value) {
      const store = new MemoryStore({ clock: w.clock });
      await store.set(key, value, NO_EXPIRY);
      return store;
    },
    async Redis(t, w, key, value) {
      const redis = await startRedis();
      const admin = new Redis(redis.url);
      // Under the store's default key prefix.
      await admin.set(`callout:${key}`, value);
      await admin.quit();
      const store = await RedisStore.open(redis.url, { clock: w.clock });
      // After the world's engines: they let go of their locks on it as the test ends.
      t.after(async () => {
        await store.close();
        await redis.stop();
      });
      return store;
    },
  };

  for (const kind of ['memory', 'Redis'] as const) it(`a catch-all lock without expiry is taken over after one wait: the next batch of the domain, in this engine or another, does not wait again (${kind})`, async (t) => {
    const users = usersOnly(['alice', 'bob', 'carol']).rcpt!;
    // The random local part gets a 4xx: the question stays open and each batch asks it again.
    const w = await make(mxZone({ 'stuck.test': '127.0.0.61' }), {
      '127.0.0.61': { rcpt: (arg, session) => (pathOf(arg).startsWith('callout-') ? '450 4.3.0 Temporary lookup failure, try again later' : users(arg, session)) },
    });
    const key = 'lock-catchall:stuck.test';
    const shared = await foreignLock[kind](t, w, key, 'written by hand');
    const { store, refusals, writes } = watchedLock(shared, key);
    const [timers, otherTimers] = [new ManualTimers({ wall: w.clock }), new ManualTimers()];
    // Whatever a failing run leaves waiting on these timers ends with the test.
    t.after(async () => {
      await timers.advance(60_000);
      await otherTimers.advance(60_000);
    });
    // Retried at once (the 4xx is not left alone for a while): each batch takes its turn and asks.
    const config = { callout: { timeouts: { overall: '2s' } }, cache: { greylistRetry: '0s' } };
    const [engine, other] = [w.engine(config, store, undefined, timers), w.engine(config, store, undefined, otherTimers)];
    const first = watch(engine.verify('alice@stuck.test'));
    await turnsUntil(() => refusals() === 1 && timers.waiting === 1, 'the wait for the catch-all lock');
    // One poll (100 ms) at a time, each let finish first: a poll is several store round trips,
    // real I/O over Redis, which one advance(6_999) overtook, firing later polls' timers before
    // the earlier polls had set them. The last step, 99 ms, ends 1 ms before the wait's end.
    for (let at = 0; at < 6_999; at += 100) {
      await turnsUntil(() => timers.waiting === 1, `the poll after ${at} ms`);
      await timers.advance(Math.min(100, 6_999 - at));
    }
    await turnsUntil(() => timers.waiting === 1, 'the last poll before overall + 5 s');
    assert.equal(first(), undefined, 'gave up before overall + 5 s');
    assert.equal(refusals(), 70, 'refused at the start and at each poll until 6,900 ms');
    await timers.advance(1);
    await turnsUntil(() => first() !== undefined, 'the probe after the wait');
    assert.deepEqual([first()!.verdict, first()!.catchAll], ['unknown', 'inconclusive'], first()!.description);
    assert.ok(writes.some((write) => write.written === true && write.value !== 'written by hand'), 'the lock was taken over');
    assert.equal(await shared.get(key), undefined, 'and let go after the batch');
    const refusedInWait = refusals();
    for (const [verifier, address] of [[engine, 'bob@stuck.test'], [other, 'carol@stuck.test']] as const) {
      const next = watch(verifier.verify(address));
      await turnsUntil(() => next() !== undefined || refusals() > refusedInWait, `the next batch (${address})`);
      assert.equal(refusals(), refusedInWait, `${address}: no lock to wait for`);
      assert.equal(next()!.catchAll, 'inconclusive', `${address}: asked the question itself`);
    }
    assert.equal(randomProbes(w, '127.0.0.61').length, 3);
  });

  it('a catch-all lock another process took anew during the wait is not taken over: it stays that holder\'s', async (t) => {
    const users = usersOnly(['alice']).rcpt!;
    const w = await make(mxZone({ 'moved.test': '127.0.0.61' }), {
      '127.0.0.61': { rcpt: (arg, session) => (pathOf(arg).startsWith('callout-') ? '450 4.3.0 Temporary lookup failure, try again later' : users(arg, session)) },
    });
    const key = 'lock-catchall:moved.test';
    const memory = new MemoryStore({ clock: w.clock });
    await memory.set(key, 'first holder', NO_EXPIRY);
    const { store, refusals } = watchedLock(memory, key);
    const timers = new ManualTimers({ wall: w.clock });
    t.after(() => timers.advance(60_000));
    const engine = w.engine({ callout: { timeouts: { overall: '2s' } } }, store, undefined, timers);
    const first = watch(engine.verify('alice@moved.test'));
    await turnsUntil(() => refusals() === 1 && timers.waiting === 1, 'the wait for the catch-all lock');
    // The first holder let go and another process took the lock: the wait's end must not take it over.
    await memory.set(key, 'second holder', NO_EXPIRY);
    for (let at = 0; at < 7_000; at += 100) {
      await turnsUntil(() => timers.waiting === 1, `the poll after ${at} ms`);
      await timers.advance(100);
    }
    await turnsUntil(() => first() !== undefined, 'the probe after the wait');
    assert.equal((await memory.get(key))?.value, 'second holder', 'the new holder\'s lock stays');
  });

  it('a probe lock without expiry costs one wait, and is then deleted: the next callout of the address probes at once', async () => {
    const w = await make(mxZone({ 'held.test': '127.0.0.74' }), { '127.0.0.74': usersOnly(['alice']) });
    const memory = new MemoryStore({ clock: w.clock });
    const key = 'lock:alice@held.test';
    await memory.set(key, 'written by hand', NO_EXPIRY);
    const { store, refusals, writes } = watchedLock(memory, key);
    const timers = new ManualTimers({ wall: w.clock });
    const engine = w.engine({ callout: { randomProbe: false, timeouts: { overall: '2s' } } }, store, undefined, timers);
    const first = watch(engine.verify('alice@held.test'));
    await turnsUntil(() => refusals() === 1 && timers.waiting === 1, 'the wait for the lock');
    await timers.advance(7_000);
    // The wait spent the deadline: answered without asking the exchanger.
    assert.deepEqual([first()?.verdict, first()?.reason, w.connections('127.0.0.74')], ['unknown', 'timeout', 0]);
    // Refused at every try and never written: deleted by the value the wait first saw, where a
    // take-over replaced it by compare-and-set only to delete it at once.
    assert.equal(writes.length, refusals());
    assert.ok(writes.every((write) => write.written === false && write.value === 'written by hand'), 'writes.every((write) => write.written === false && write.value === \'written by hand\')');
    assert.equal(await memory.get(key), undefined, 'the lock is gone');
    const refusedInWait = refusals();
    const again = await engine.verify('alice@held.test');
    assert.deepEqual([again.verdict, again.source], ['deliverable', 'probe'], 'probed at once, without a wait');
    assert.equal(refusals(), refusedInWait);
  });
});
